"""Headless Arc2Face generation on diffusers building blocks, faithful to the reference code.

The reference builds ``StableDiffusionPipeline.from_pretrained("stable-diffusion-v1-5/...")`` with Arc2Face's UNet and
encoder and switches to ``DPMSolverMultistepScheduler.from_config(pipeline.scheduler.config)``. Of SD1.5 it then uses
only the VAE and the scheduler config, so here the config is a constant and the VAE a local file: nothing comes from
the hub. The loop is diffusers' SD1.5 loop (epsilon prediction, classifier-free guidance with the negative first).

Noise, exactly: ``torch.randn((N*k, C, H/f, W/f), generator=torch.Generator("cpu").manual_seed(seed),
dtype=torch.float32)``, one draw per call, on the CPU whatever the device (so a seed gives the same start everywhere);
row ``i*k + j`` starts image j of identity i. C and f (pixels per latent cell, 2 ** (VAE blocks - 1): 8 for SD1.5)
come from the VAE's config. It is the tensor ComfyUI's KSampler draws for a latent batch of that shape and seed.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np
import torch

from ..errors import InvalidInputError, WrongModelError
from ..identity.embeddings import validate_embeds
from ..identity.encoder import Arc2FaceIDEncoder, find_id_encoder, load_id_encoder
from ..validation import MAX_BATCH, MAX_PIXELS_SIDE, MAX_STEPS, positive_int
from ..weights import ModelRoots
from .controlnet import (
    check_control_range,
    check_controlnet_fits,
    control_active,
    control_image,
    find_controlnet,
    load_controlnet,
)
from .lcm import adds_noise, check_lcm_steps, draw_step_noise, lcm_step, make_lcm_scheduler
from .model_files import VAE_SCALING_FACTOR, find_unet, load_unet, load_vae, wait_for_weight_check

if TYPE_CHECKING:
    from ..reference.diffusers_unet import ReferencePhotos

# stable-diffusion-v1-5/scheduler/scheduler_config.json (written for PNDM). DPMSolverMultistepScheduler.from_config
# takes the beta schedule and steps_offset from it and its own defaults for the rest (DPM-Solver++ order 2, epsilon,
# "linspace" timesteps: 999, 959, ... 40 for 25 steps), as in the reference.
SD15_SCHEDULER_CONFIG = {
    "_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
    "clip_sample": False, "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True,
    "steps_offset": 1, "trained_betas": None,
}
DEFAULT_STEPS, DEFAULT_GUIDANCE, DEFAULT_SIZE = 25, 3.0, 512
SIZE_MULTIPLE = 8

Progress = Callable[[int, int], None]   # (steps done, total steps)


def make_scheduler(name: str = "dpmpp_2m"):
    """The reference's sampler: ``DPMSolverMultistepScheduler.from_config`` of SD1.5's scheduler config; ``"lcm"``:
    the LCM-LoRA demo's ``LCMScheduler.from_config`` of the same config (see ``lcm``)."""
    from diffusers import DPMSolverMultistepScheduler

    if name == "lcm":
        return make_lcm_scheduler(SD15_SCHEDULER_CONFIG)
    return DPMSolverMultistepScheduler.from_config(SD15_SCHEDULER_CONFIG)


def initial_noise(count: int, channels: int, latent_height: int, latent_width: int, seed: int,
                  steps: Optional[int] = None) -> torch.Tensor:
    """Standard normal noise [count, C, h, w], float32, CPU: one draw from a CPU generator seeded with ``seed``.
    With ``steps`` (a sampler that adds noise between steps, see ``lcm``): [count, steps, C, h, w], the later
    draws of the same generator after the first."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 64:
        raise InvalidInputError(f"seed must be an integer from 0 to 2**64-1, got {seed!r}")
    count = positive_int(count, "count", upper=MAX_BATCH)
    channels = positive_int(channels, "channels", upper=64)
    latent_height = positive_int(latent_height, "latent_height", upper=MAX_PIXELS_SIDE)
    latent_width = positive_int(latent_width, "latent_width", upper=MAX_PIXELS_SIDE)
    generator = torch.Generator("cpu").manual_seed(seed)
    first = torch.randn((count, channels, latent_height, latent_width), generator=generator, dtype=torch.float32)
    if steps is None:
        return first
    _check_count("steps", steps)
    return draw_step_noise(generator, first, steps)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """VAE output [B,3,H,W] in -1..1 → uint8 [B,H,W,3], rounded as diffusers' image processor does."""
    unit = (images.float() / 2 + 0.5).clamp(0, 1)
    return (unit.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)


class Arc2FacePipeline:
    """Arc2Face UNet + ID encoder + SD1.5 VAE + DPM-Solver++: ArcFace embeddings in, images out; optionally the
    pose ControlNet (``controlnet``), steered by a normal-map hint."""

    SCHEDULER_CONFIG = SD15_SCHEDULER_CONFIG   # what make_scheduler builds every scheduler from

    def __init__(self, unet, vae, encoder: Arc2FaceIDEncoder, *, controlnet=None,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> None:
        if unet.config.cross_attention_dim != encoder.hidden_size:
            raise WrongModelError(f"the UNet attends to {unet.config.cross_attention_dim}-d tokens but the encoder "
                                  f"makes {encoder.hidden_size}-d ones: they are not Arc2Face's pair")
        if unet.config.in_channels != vae.config.latent_channels:
            raise WrongModelError(f"the UNet takes {unet.config.in_channels} latent channels, the VAE makes "
                                  f"{vae.config.latent_channels}: use SD1.5's VAE")
        self.device, self.dtype = torch.device(device), dtype
        # torch's own .to: diffusers' override warns on every dtype cast, even with no module to keep in fp32.
        self.unet = torch.nn.Module.to(unet, self.device, dtype)
        self.vae = torch.nn.Module.to(vae, self.device, dtype)
        self.encoder = encoder.to(self.device, dtype)
        if controlnet is not None:
            check_controlnet_fits(controlnet, unet, self.vae_scale_factor)
            controlnet = torch.nn.Module.to(controlnet, self.device, dtype)
        self.controlnet = controlnet
        self.scheduler_name = "dpmpp_2m"   # or "lcm" (with an LCM LoRA: lcm.apply_lcm_arguments)
        self.files: dict[str, str] = {}   # where each part came from, filled in by load()
        self._negative: Optional[torch.Tensor] = None   # encoder(""), the same for every call: computed once
        self.channels_last = False        # see optimize()

    @classmethod
    def load(cls, roots: ModelRoots, vae_path: str | os.PathLike, device: str | torch.device = "cpu",
             dtype: torch.dtype = torch.float32, download: bool = False,
             vae_config: Optional[dict] = None, controlnet: bool = False,
             vae_encoder: bool = True) -> "Arc2FacePipeline":
        """Find every file first and load the small VAE (and the ControlNet) before the big UNet, so a missing or
        wrong file is reported before anything heavy loads.

        ``download`` fetches missing Arc2Face files from Hugging Face; the VAE is never downloaded. ``controlnet``
        loads the pose ControlNet (``<arc2face root>/controlnet/``) too. ``vae_encoder=False`` loads the VAE's
        decoder only (generation never encodes; only a reference photo does): its encoder's weights are never read.
        """
        unet_files = find_unet(roots.arc2face, download=download)
        encoder_files = find_id_encoder(roots.arc2face, download=download)
        control_files = find_controlnet(roots.arc2face, download=download) if controlnet else None
        vae = load_vae(vae_path, vae_config, encoder=vae_encoder)   # first: a missing or wrong VAE is reported before the big UNet loads
        control = load_controlnet(*control_files) if control_files else None
        pipeline = cls(load_unet(*unet_files), vae, load_id_encoder(*encoder_files), controlnet=control,
                       device=device, dtype=dtype)
        pipeline.files = {"unet": str(unet_files[0]), "encoder": str(encoder_files[0]), "vae": str(vae_path)}
        if control_files:
            pipeline.files["controlnet"] = str(control_files[0])
        return pipeline

    def optimize(self, *, channels_last: bool = False, compile: bool = False) -> "Arc2FacePipeline":
        """Opt-in speed-ups; the images stay those of the default path within float rounding (tests state by how
        much). ``channels_last`` stores the convolution weights and inputs NHWC, which GPU convolution kernels (and
        oneDNN on CPUs) prefer; ``compile`` wraps the UNet, where nearly all the time goes, in ``torch.compile``
        (the first call of each batch shape compiles: worth it for datasets, not for one image)."""
        if channels_last:
            for name in ("unet", "vae", "controlnet"):
                module = getattr(self, name)
                if module is not None:
                    setattr(self, name, torch.nn.Module.to(module, memory_format=torch.channels_last))
            self.channels_last = True
        if compile:
            wait_for_weight_check(self.unet)   # settled before compiling, so the graph has no pending-check hook
            self.unet = torch.compile(self.unet)
        return self

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell: 2 ** (VAE blocks - 1), 8 for SD1.5's VAE (a tiny test VAE differs)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def latent_size(self, width: int, height: int) -> tuple[int, int]:
        """(h, w) of the latents for an image of ``width`` x ``height`` pixels, which must be multiples of 8."""
        step = max(SIZE_MULTIPLE, self.vae_scale_factor)
        for name, value in (("width", width), ("height", height)):
            if isinstance(value, bool) or not isinstance(value, int) or value < step or value % step:
                raise InvalidInputError(f"{name} must be a positive multiple of {step} pixels, got {value!r}")
        return height // self.vae_scale_factor, width // self.vae_scale_factor

    def noise(self, count: int, width: int, height: int, seed: int, steps: int = 1) -> torch.Tensor:
        """The initial noise of ``count`` images (see the module docstring), float32 on the CPU; for LCM, which adds
        noise between steps, [count, steps, C, h, w] with the later draws of the same generator (see ``lcm``)."""
        h, w = self.latent_size(width, height)
        return initial_noise(count, self.vae.config.latent_channels, h, w, seed,
                             steps if adds_noise(self.scheduler_name) else None)

    @torch.inference_mode()
    def conditioning(self, embeds: torch.Tensor, images_per_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(positive, negative), each [N*k, 77, 768]: identity i in rows i*k..i*k+k-1; negative = encoder("")."""
        positive, _ = self.encoder.encode(embeds)
        if self._negative is None:
            self._negative = self.encoder.encode_empty()[0]
        positive = positive.repeat_interleave(images_per_id, dim=0)
        return positive, self._negative.expand(positive.shape[0], -1, -1)

    @torch.inference_mode()
    def denoise(self, positive: torch.Tensor, negative: torch.Tensor, noise: torch.Tensor, steps: int = DEFAULT_STEPS,
                guidance_scale: float = DEFAULT_GUIDANCE, progress: Optional[Progress] = None,
                control: Optional[torch.Tensor] = None, control_scale: float = 1.0, control_start: float = 0.0,
                control_end: float = 1.0) -> torch.Tensor:
        """diffusers' SD1.5 loop: epsilon prediction, CFG on cat([negative, positive]); returns the final latents.

        As in diffusers (hence the reference), guidance_scale <= 1 runs the positive alone, without CFG.
        ``control`` ([B, 3, H, W] in 0..1, see ``controlnet.control_image``) runs the ControlNet on the UNet's input
        and context in the steps of [control_start, control_end] (diffusers' ControlNet pipeline, guess mode off):
        both CFG halves get the control, and its residuals, times ``control_scale``, go into the UNet.
        """
        scheduler = make_scheduler(self.scheduler_name)  # a fresh one per call: DPM-Solver keeps past outputs
        scheduler.set_timesteps(steps, device=self.device)
        cfg = guidance_scale > 1.0
        context = torch.cat([negative, positive]) if cfg else positive
        step_noise = noise if adds_noise(self.scheduler_name) else None   # [B, steps, C, h, w]
        latents = (noise[:, 0] if step_noise is not None else noise).to(self.device, self.dtype)
        latents = latents * scheduler.init_noise_sigma
        if control is not None:
            if self.controlnet is None:
                raise InvalidInputError("a control image needs the pose ControlNet: load with controlnet=True")
            control = control.to(self.device, self.dtype)
            control = torch.cat([control] * 2) if cfg else control
        timesteps = scheduler.timesteps
        for index, t in enumerate(timesteps):
            x = self._layout(scheduler.scale_model_input(torch.cat([latents] * 2) if cfg else latents, t))
            residuals = {}
            if control is not None and control_scale and control_active(index, len(timesteps), control_start,
                                                                        control_end):
                down, mid = self.controlnet(x, t, encoder_hidden_states=context, controlnet_cond=control,
                                            conditioning_scale=control_scale, return_dict=False)
                residuals = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
            eps = self.unet(x, t, encoder_hidden_states=context, **residuals).sample
            if cfg:
                uncond, cond = eps.chunk(2)
                eps = uncond + guidance_scale * (cond - uncond)
            if step_noise is not None:
                latents = lcm_step(scheduler, eps, t, index, latents, step_noise[:, min(index + 1, steps - 1)])
            else:
                latents = scheduler.step(eps, t, latents, return_dict=False)[0]
            if progress is not None:
                progress(index + 1, steps)
        return latents

    @torch.inference_mode()
    def encode_images(self, images: np.ndarray) -> torch.Tensor:
        """uint8 RGB [B, H, W, 3] → scaled latents, the VAE posterior's mean × 0.18215 (what ComfyUI's VAE Encode
        gives; the reference samples the posterior, whose spread is tiny)."""
        if self.vae.encoder is None:
            raise InvalidInputError("this pipeline was loaded without the VAE's encoder (vae_encoder=False): load it "
                                    "with vae_encoder=True to encode photos (the Reference Adapter needs it)")
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).to(self.device, self.dtype)
        return self.vae.encode(x / 127.5 - 1.0).latent_dist.mean * VAE_SCALING_FACTOR

    def reference_attention(self, reference: Optional["ReferencePhotos"], identity: torch.Tensor, images_per_id: int,
                            guidance_scale: float, latent_size: tuple[int, int]):
        """A context in which the UNet samples with the Reference Adapter (nothing without a reference): the write
        pass on the clean UNet with the identity conditioning [N, 77, 768] now, the LoRA and reference attention
        inside, all undone on exit."""
        from ..batching import IdentityLayout
        from ..reference.banks import bank_sources, check_reference_latent
        from ..reference.diffusers_unet import reference_adapter, write_pass

        if reference is None:
            return contextlib.nullcontext()
        count = identity.shape[0]
        if reference.images.shape[0] not in (1, count):
            raise InvalidInputError(f"{reference.images.shape[0]} reference photos for {count} identities: give 1 "
                                    f"(for every identity) or {count} (one per identity)")
        latents = check_reference_latent(self.encode_images(reference.images))
        sources = bank_sources(latents.shape[0], count)
        banks = write_pass(self.unet, latents[[r for r, _ in sources]], identity[[c for _, c in sources]])
        cond_or_uncond = [1, 0] if guidance_scale > 1.0 else [0]   # denoise's batch: cat([negative, positive])
        return reference_adapter(self.unet, reference.lora, reference.strength, banks, cond_or_uncond,
                                 IdentityLayout(count, images_per_id), generated_size=latent_size)

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents → VAE images [B, 3, H, W] in about -1..1 (not clamped)."""
        return self.vae.decode(self._layout(latents / VAE_SCALING_FACTOR), return_dict=False)[0]

    def generate(self, embeds: torch.Tensor, images_per_id: int = 4, steps: int = DEFAULT_STEPS,
                 guidance_scale: float = DEFAULT_GUIDANCE, width: int = DEFAULT_SIZE, height: int = DEFAULT_SIZE,
                 seed: int = 0, noise: Optional[torch.Tensor] = None, progress: Optional[Progress] = None,
                 hint: Optional[torch.Tensor] = None, control_scale: float = 1.0, control_start: float = 0.0,
                 control_end: float = 1.0, reference: Optional["ReferencePhotos"] = None) -> np.ndarray:
        """ArcFace embeddings [N, 512] → uint8 images [N*k, H, W, 3] RGB, image j of identity i at row i*k + j.

        ``noise`` replaces the seeded draw (a float tensor of the shape ``self.noise`` returns), e.g. a slice of a
        bigger draw so a dataset made in several batches equals one made in one.
        ``hint`` (``pose.hint.prepare_normal_map``'s [1 or N, 512, 512, 3]) poses the faces with the ControlNet:
        one hint for every image or one per identity; ``control_*`` as diffusers' controlnet_conditioning_scale and
        control_guidance_start/end. ``reference`` (aligned photos, one for all or one per identity) keeps their look
        with the Reference Adapter.
        """
        embeds = validate_embeds(embeds, "embeds")
        _check_count("images_per_id", images_per_id)
        _check_count("steps", steps)
        if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)) \
                or not np.isfinite(guidance_scale) or guidance_scale < 0:
            raise InvalidInputError(f"guidance_scale must be a finite number >= 0, got {guidance_scale!r}")
        count = embeds.shape[0] * images_per_id
        expected = (count, self.vae.config.latent_channels, *self.latent_size(width, height))
        if adds_noise(self.scheduler_name):
            check_lcm_steps(steps)
            expected = (count, steps, *expected[1:])
        if noise is None:
            noise = self.noise(count, width, height, seed, steps)
        elif (not isinstance(noise, torch.Tensor) or tuple(noise.shape) != expected or not noise.is_floating_point()
              or not torch.isfinite(noise).all()):
            got = f"{noise.dtype} {list(noise.shape)}" if isinstance(noise, torch.Tensor) else type(noise).__name__
            raise InvalidInputError(f"noise must be a finite float tensor of shape {list(expected)}, got {got}")
        control = None
        if hint is not None:
            if self.controlnet is None:
                raise InvalidInputError("a pose hint needs the pose ControlNet: load the pipeline with controlnet=True")
            check_control_range(control_scale, control_start, control_end)
            control = control_image(hint, embeds.shape[0], images_per_id, height, width)
        positive, negative = self.conditioning(embeds, images_per_id)
        with self.reference_attention(reference, positive[::images_per_id], images_per_id, guidance_scale,
                                      expected[2:]):
            latents = self.denoise(positive, negative, noise, steps, guidance_scale, progress, control,
                                   control_scale, control_start, control_end)
        return to_uint8(self.decode(latents))


def _check_count(name: str, value: int) -> None:
    positive_int(value, name, upper=MAX_STEPS if name == "steps" else MAX_BATCH)


def to_pil(images: np.ndarray) -> list:
    """uint8 [B, H, W, 3] → PIL images."""
    from PIL import Image

    return [Image.fromarray(image) for image in images]
