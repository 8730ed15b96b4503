"""The Arc2Face Reference Adapter in ComfyUI: its LoRA on the model and reference attention in every self-attention.

ComfyUI bakes LoRA patches into the weights, so the write pass runs in the node, on the model it is given (without
this LoRA), before the clone is patched. The stored tokens ride along as a small model ComfyUI loads and offloads
with the UNet; an ``attn1_patch`` adds them to the conditional rows' keys and values at every step.
"""

from __future__ import annotations

from .comfy_internals import get, key, require
from .comfy_internals import model_management as mm
from .comfy_paths import download_switch

CATEGORY = "Arc2Face"
ADDITIONAL_MODELS_KEY = "arc2face_reference_banks"
VAE_NOTE = ("The reference code samples the VAE posterior of the reference; the stock VAE Encode gives its mean, which "
            "differs by the posterior's tiny noise only.")


class Arc2FaceReferenceAdapterLoader:
    DESCRIPTION = ("Loads the Arc2Face Reference Adapter (models/arc2face/ref_adapter/pytorch_lora_weights.safetensors):"
                   " a LoRA for the UNet, in any diffusers/peft key style. Every tensor of the file is mapped; a file "
                   "that is not such a LoRA is an error naming its keys. For Arc2Face Reference Adapter.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = ("ARC2FACE_REF_ADAPTER",)
    RETURN_NAMES = ("ref_adapter",)
    OUTPUT_TOOLTIPS = ("The Reference Adapter's LoRA, for Arc2Face Reference Adapter.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}, "optional": download_switch("ref_adapter/pytorch_lora_weights.safetensors")}

    @classmethod
    def IS_CHANGED(cls, **inputs):   # a replaced file is loaded again (ComfyUI caches a loader by its inputs only)
        from ..arc2face_core.weights import REFERENCE_ADAPTER
        from .comfy_paths import model_roots
        from .model_cache import files_state

        return files_state(REFERENCE_ADAPTER, roots=model_roots().arc2face)

    def load(self, download_missing: bool = False):
        from ..arc2face_core.reference.lora import load_reference_lora
        from ..arc2face_core.weights import REFERENCE_ADAPTER, find_weight
        from .comfy_paths import model_roots

        return (load_reference_lora(find_weight(REFERENCE_ADAPTER, model_roots().arc2face,
                                                download=download_missing)),)


class _ReferenceState:
    """What every block's patch shares: the stored tokens. ComfyUI deep-copies model options on every clone."""

    def __init__(self, banks) -> None:
        self.banks = banks

    def __deepcopy__(self, memo):
        return self


def _block_key(extra_options) -> tuple:
    block = extra_options.get(key("block"))
    return (block[0], block[1], extra_options.get(key("block_index"), 0)) if block else ("?", 0, 0)


class _WriteTokens:
    """attn1_patch of the write pass: keeps each block's ``norm1`` output."""

    def __init__(self, recorder) -> None:
        self.recorder = recorder

    def __call__(self, n, context, value, extra_options):
        self.recorder.record(_block_key(extra_options), n)
        return n, context, value


class _ReferenceAttention:
    """attn1_patch while sampling: conditional rows' keys/values get the stored tokens of their identity."""

    def __init__(self, state: _ReferenceState) -> None:
        self.state = state

    def __call__(self, n, context, value, extra_options):
        from ..arc2face_core.batching import LAYOUT_KEY
        from ..arc2face_core.errors import InvalidInputError
        from ..arc2face_core.reference.attention import extend_self_attention

        banks, block = self.state.banks, _block_key(extra_options)
        if block not in banks:
            raise InvalidInputError(f"the Reference Adapter has no stored tokens for block {block}: the model sampled "
                                    "is not the one it was applied to")
        shape = extra_options.get(key("original_shape"))
        context, value = extend_self_attention(
            context, value, banks[block], extra_options.get(key("cond_or_uncond")), extra_options.get(LAYOUT_KEY),
            reference_size=banks.latent_size, generated_size=tuple(shape[2:]) if shape else None)
        return n, context, value


def _conditioning_tensor(positive):
    """The identity conditioning [N, 77, 768] of a CONDITIONING (entries sharing one tensor, e.g. after ControlNet)."""
    import torch

    from ..arc2face_core.errors import InvalidInputError

    if not isinstance(positive, list) or not positive or not all(
            isinstance(e, (list, tuple)) and len(e) == 2 and isinstance(e[0], torch.Tensor) for e in positive):
        raise InvalidInputError("positive must be a CONDITIONING: connect the positive output of Arc2Face Encoder")
    cond = positive[0][0]
    if any(e[0].shape != cond.shape or not torch.equal(e[0], cond) for e in positive[1:]):
        raise InvalidInputError("positive holds several different conditionings; connect the identity conditioning "
                                "of Arc2Face Encoder (the one the sampler gets)")
    if cond.ndim != 3 or not cond.is_floating_point() or not torch.isfinite(cond).all():
        raise InvalidInputError(f"positive must be finite float tokens [N, 77, 768], got {list(cond.shape)}")
    return cond


def _lora_patches(model, lora) -> dict:
    """The LoRA as ComfyUI patches on the model's keys (its diffusers names mapped through ComfyUI's own table)."""
    import torch

    require("comfy.model_patcher:ModelPatcher.model_state_dict")
    to_ldm = get("comfy.utils:unet_to_diffusers")(model.model.model_config.unet_config)
    weights = model.model_state_dict()
    shapes, keys = {}, {}
    for name in lora.modules:
        ldm = to_ldm.get(f"{name}.weight")
        if ldm is not None and f"diffusion_model.{ldm}" in weights:
            keys[name] = f"diffusion_model.{ldm}"
            shapes[name] = tuple(weights[keys[name]].shape)
    lora.check_fits(shapes, "this model")
    flat = {}
    for name, module in lora.modules.items():
        flat.update({f"{name}.lora_up.weight": module.up, f"{name}.lora_down.weight": module.down,
                     f"{name}.alpha": torch.tensor(module.alpha)})
    return get("comfy.lora:load_lora")(flat, keys)


def _write_pass(model, samples, conditioning, sources):
    """The reference latents through the model as given (no Reference LoRA, no attention patches) at timestep 0."""
    import torch

    from ..arc2face_core.reference.banks import BankRecorder

    require("comfy.model_base:BaseModel.process_latent_in", "comfy.model_base:BaseModel.get_dtype")

    mm.load_models_gpu([model])
    base = model.model
    dtype = base.manual_cast_dtype or base.get_dtype()
    device = model.load_device
    refs, conds = zip(*sources)
    x = base.process_latent_in(samples[list(refs)]).to(device, dtype)
    context = conditioning[list(conds)].to(device, dtype)
    recorder = BankRecorder()
    options = {key("patches"): {key("attn1_patch"): [_WriteTokens(recorder)]}}
    with torch.no_grad():
        base.diffusion_model(x, torch.zeros(x.shape[0], device=device), context=context, transformer_options=options)
    return recorder.banks(tuple(samples.shape[2:]), device=mm.unet_offload_device())


class Arc2FaceReferenceAdapter:
    DESCRIPTION = ("Keeps the look of a photo (hair, skin, lighting, background) in new images of the person: the "
                   "Reference Adapter's LoRA at `strength`, and reference attention in all 16 transformer blocks. The "
                   "reference (the photo through Face Align, then VAE Encode) passes once through the model as given, "
                   "at timestep 0 with the identity conditioning; while sampling, conditional rows also attend to what "
                   "each block stored, unconditional rows are untouched. One reference for all identities or one per "
                   "identity. Encode the reference at the size you generate. " + VAE_NOTE)
    CATEGORY = CATEGORY
    FUNCTION = "apply"
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The patched model, for Arc2Face Sampler or any sampler.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The Arc2Face UNet (possibly with the Expression Adapter)."}),
                "ref_adapter": ("ARC2FACE_REF_ADAPTER", {"tooltip": "From Arc2Face Reference Adapter Loader."}),
                "reference": ("LATENT", {"tooltip": (
                    "The aligned photo (Face Align) through VAE Encode, at the size you generate: 1 for every "
                    "identity, or one per identity.")}),
                "positive": ("CONDITIONING", {"tooltip": (
                    "The identity conditioning (Arc2Face Encoder's positive) the reference pass uses.")}),
                "strength": ("FLOAT", {"default": 0.8, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": (
                    "LoRA scale, the official slider (0.8 balances likeness to the photo against new pose and "
                    "expression). The reference attention is on at any strength.")}),
            }
        }

    def apply(self, model, ref_adapter, reference, positive, strength: float):
        from ..arc2face_core.errors import InvalidInputError
        from ..arc2face_core.reference.banks import bank_sources, check_reference_latent
        from ..arc2face_core.reference.lora import check_strength

        strength = check_strength(strength)
        if not isinstance(reference, dict) or "samples" not in reference:
            raise InvalidInputError("reference must be a LATENT: the aligned photo through VAE Encode")
        samples = check_reference_latent(reference["samples"])
        cond = _conditioning_tensor(positive)
        require("comfy.model_patcher:ModelPatcher.clone", "comfy.model_patcher:ModelPatcher.add_patches",
                "comfy.model_patcher:ModelPatcher.set_model_attn1_patch",
                "comfy.model_patcher:ModelPatcher.set_additional_models",
                "comfy.model_patcher:ModelPatcher.get_additional_models_with_key")
        context_dim = model.model.model_config.unet_config.get(key("context_dim"))
        if cond.shape[-1] != context_dim:
            raise InvalidInputError(f"positive has {cond.shape[-1]}-wide tokens, the model attends to {context_dim}: "
                                    "use the Arc2Face model and encoder together")
        options = model.model_options[key("transformer_options")]
        existing = options.get(key("patches"), {}).get(key("attn1_patch"), [])
        if any(isinstance(p, _ReferenceAttention) for p in existing):
            raise InvalidInputError("the model already has a Reference Adapter; apply it once (a batch of "
                                    "references gives one per identity)")
        sources = bank_sources(samples.shape[0], cond.shape[0])
        patches = _lora_patches(model, ref_adapter)
        banks = _write_pass(model, samples, cond, sources)
        patched = model.clone()
        applied = patched.add_patches(patches, strength)
        if len(applied) != len(ref_adapter.modules):
            raise InvalidInputError(f"only {len(applied)} of the LoRA's {len(ref_adapter.modules)} modules could be "
                                    "patched into this model")
        patched.set_model_attn1_patch(_ReferenceAttention(_ReferenceState(banks)))
        holder = get("comfy.model_patcher:ModelPatcher")(banks, load_device=mm.get_torch_device(),
                                                         offload_device=mm.unet_offload_device())
        patched.set_additional_models(ADDITIONAL_MODELS_KEY,
                                      patched.get_additional_models_with_key(ADDITIONAL_MODELS_KEY) + [holder])
        return (patched,)


NODE_CLASS_MAPPINGS = {
    "Arc2FaceReferenceAdapterLoader": Arc2FaceReferenceAdapterLoader,
    "Arc2FaceReferenceAdapter": Arc2FaceReferenceAdapter,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "Arc2FaceReferenceAdapterLoader": "Arc2Face Reference Adapter Loader",
    "Arc2FaceReferenceAdapter": "Arc2Face Reference Adapter",
}
