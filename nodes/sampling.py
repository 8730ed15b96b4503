"""Arc2Face Sampler: ComfyUI's own sampling with the paper's defaults and several images per identity."""

from __future__ import annotations

from .comfy_internals import get, key, require
from .comfy_internals import model_management as mm

CATEGORY = "Arc2Face"
MAX_RESOLUTION = 8192


class Arc2FaceSampler:
    DESCRIPTION = ("Samples with ComfyUI's KSampler engine (same noise, progress bar, preview and cancel) using the "
                   "Arc2Face defaults of the paper: DPM++ 2M on the reference's schedule (sgm_uniform), 25 steps, "
                   "CFG 3.0, 512x512. Makes images_per_id images for each identity of the positive conditioning, "
                   "grouped by identity; image j of identity i gets the noise a KSampler with the same seed gives "
                   "batch index i*images_per_id+j. Connect a latent for img2img (then width/height are ignored).")
    CATEGORY = CATEGORY
    FUNCTION = "sample"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("N x images_per_id latents, grouped by identity; decode with an SD1.5 VAE.",)

    @classmethod
    def INPUT_TYPES(cls):
        ksampler = get("comfy.samplers:KSampler")
        return sampler_inputs(ksampler.SAMPLERS, ksampler.SCHEDULERS)

    def sample(self, model, positive, negative, seed, steps, cfg, sampler_name, scheduler, width, height,
               images_per_id, latent_image=None, denoise=1.0):
        from ..arc2face_core.batching import (
            LAYOUT_KEY,
            IdentityLayout,
            empty_latent,
            expand_batch_index,
            expand_conditioning,
            expand_latent,
            identity_count,
        )

        identities = identity_count([cond.shape[0] for cond, _ in positive], "positive")
        # Model patches (Expression, Reference Adapter) read which rows belong to which identity from here.
        require("comfy.model_patcher:ModelPatcher.clone")
        model = model.clone()
        model.model_options[key("transformer_options")][LAYOUT_KEY] = IdentityLayout(identities, images_per_id)
        positive = expand_conditioning(positive, identities, images_per_id, "positive")
        negative = expand_conditioning(negative, identities, images_per_id, "negative")
        if images_per_id > 1 and identities > 1:
            require("comfy.controlnet:ControlNet.copy", "comfy.controlnet:ControlBase.set_previous_controlnet")
            copies = {}   # one expanded chain shared by positive and negative, so they still batch together
            positive = _expand_control_hints(positive, identities, images_per_id, copies)
            negative = _expand_control_hints(negative, identities, images_per_id, copies)
        total = identities * images_per_id
        if latent_image is None:
            latent = {"samples": empty_latent(total, width, height, mm.intermediate_device())}
        else:
            latent = dict(latent_image)
            latent["samples"] = expand_latent(latent_image["samples"], identities, images_per_id)
            mask, index = key("noise_mask"), key("batch_index")
            if mask in latent:
                latent[mask] = expand_latent(latent[mask], identities, images_per_id)
            if index in latent:   # a slice of a bigger batch (Latent From Batch): keep its noise
                latent[index] = expand_batch_index(latent[index], latent_image["samples"].shape[0], total)
        # ComfyUI's nodes.py: the stock KSampler's own code
        return get("nodes:common_ksampler")(model, seed, steps, cfg, sampler_name, scheduler, positive, negative,
                                            latent, denoise=denoise)


def _expanded_control(control, identities: int, images_per_id: int, copies: dict):
    """A ControlNet chain whose per-identity hints (batch N) are laid out like the N·k batch.

    ComfyUI tiles a shorter hint batch (h0, h1, h0, h1), which would pair identity 0's image 2 with identity 1's pose.
    A control whose hint and predecessors need no change is kept as it is. ``copies`` maps id(original) → result,
    so a chain shared by positive and negative stays shared.
    """
    if control is None:
        return None
    if id(control) not in copies:
        from ..arc2face_core.batching import expand_per_identity

        previous = _expanded_control(control.previous_controlnet, identities, images_per_id, copies)
        hint = getattr(control, "cond_hint_original", None)
        per_identity = hint is not None and hint.ndim >= 1 and hint.shape[0] == identities
        result = control
        if per_identity or previous is not control.previous_controlnet:
            result = control.copy()
            if per_identity:
                result.cond_hint_original = expand_per_identity(hint, identities, images_per_id, "a ControlNet hint")
            result.set_previous_controlnet(previous)
        copies[id(control)] = result
    return copies[id(control)]


def _expand_control_hints(conditioning: list, identities: int, images_per_id: int, copies: dict) -> list:
    out = []
    for cond, options in conditioning:
        control = options.get(key("control"))
        if control is not None:
            options = dict(options, **{key("control"): _expanded_control(control, identities, images_per_id, copies)})
        out.append([cond, options])
    return out


def sampler_inputs(samplers: list, schedulers: list) -> dict:
    """The Sampler's inputs around ComfyUI's own sampler and scheduler lists (kept apart so the defaults can be read
    without ComfyUI)."""
    return {
        "required": {
            "model": ("MODEL", {"tooltip": "The Arc2Face UNet from Arc2Face Model Loader (optionally patched)."}),
            "positive": ("CONDITIONING", {"tooltip": "Identity conditioning from Arc2Face Encoder."}),
            "negative": ("CONDITIONING", {"tooltip": "The negative from Arc2Face Encoder (encoder on \"\")."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                             "tooltip": "Seed of the noise, drawn exactly as the stock KSampler draws it."}),
            "steps": ("INT", {"default": 25, "min": 1, "max": 10000,
                              "tooltip": ("Denoising steps (paper: 25 with DPM++ 2M). LCM-LoRA: 3, with "
                                          "ModelSamplingDiscrete = lcm, sampler lcm, scheduler simple, CFG 1.0.")}),
            "cfg": ("FLOAT", {"default": 3.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                              "tooltip": "Classifier-free guidance scale (paper: 3.0; 1.0 with an LCM LoRA)."}),
            "sampler_name": (samplers, {
                "default": "dpmpp_2m", "tooltip": ("Sampling algorithm (paper: DPM-Solver++ 2M = dpmpp_2m; "
                                                   "lcm with an LCM LoRA, scheduler simple).")}),
            "scheduler": (schedulers, {
                "default": "sgm_uniform", "tooltip": (
                    "Noise schedule. sgm_uniform gives the reference's DPMSolverMultistepScheduler timesteps "
                    "(999, 959, ... 40; sigmas within 0.2%). normal stops early (last sigma 0.029 instead of "
                    "0.199). simple for an LCM LoRA.")}),
            "width": ("INT", {"default": 512, "min": 64, "max": MAX_RESOLUTION, "step": 8,
                              "tooltip": "Image width in pixels (Arc2Face was trained at 512)."}),
            "height": ("INT", {"default": 512, "min": 64, "max": MAX_RESOLUTION, "step": 8,
                               "tooltip": "Image height in pixels (Arc2Face was trained at 512)."}),
            "images_per_id": ("INT", {"default": 1, "min": 1, "max": 64,
                                      "tooltip": "How many images to make for each identity."}),
        },
        "optional": {
            "latent_image": ("LATENT", {"tooltip": ("A starting latent for img2img: batch 1 (shared), N (one per "
                                                    "identity) or N x images_per_id.")}),
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                  "tooltip": "How much of latent_image to replace (1.0 = start from noise)."}),
        },
    }


NODE_CLASS_MAPPINGS = {"Arc2FaceSampler": Arc2FaceSampler}
NODE_DISPLAY_NAME_MAPPINGS = {"Arc2FaceSampler": "Arc2Face Sampler"}
