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

import json
import os
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from .checkpoints import check_finite, load_state_dict
from .controlnet import check_control_range, check_controlnet_fits, control_active, control_image, find_controlnet, \
    load_controlnet
from .embeddings import validate_embeds
from .encoder import Arc2FaceIDEncoder, find_id_encoder, load_id_encoder
from .errors import CorruptWeightsError, InvalidInputError, WeightsNotFoundError, WrongModelError
from .weights import HF_URL, UNET, ModelRoots, find_with_config

# stable-diffusion-v1-5/vae/config.json. scaling_factor is not in that file; AutoencoderKL's default is SD1.5's.
SD15_VAE_CONFIG = {
    "_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4, "in_channels": 3, "latent_channels": 4, "layers_per_block": 2,
    "norm_num_groups": 32, "out_channels": 3, "sample_size": 512, "up_block_types": ["UpDecoderBlock2D"] * 4,
}
# stable-diffusion-v1-5/scheduler/scheduler_config.json (written for PNDM). DPMSolverMultistepScheduler.from_config
# takes the beta schedule and steps_offset from it and its own defaults for the rest (DPM-Solver++ order 2, epsilon,
# "linspace" timesteps: 999, 959, ... 40 for 25 steps), as in the reference.
SD15_SCHEDULER_CONFIG = {
    "_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
    "clip_sample": False, "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True,
    "steps_offset": 1, "trained_betas": None,
}
VAE_SCALING_FACTOR = 0.18215
DEFAULT_STEPS, DEFAULT_GUIDANCE, DEFAULT_SIZE = 25, 3.0, 512
SIZE_MULTIPLE = 8
SD15_VAE_URL = ("https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5/resolve/main/vae/"
                "diffusion_pytorch_model.safetensors")
VAE_WEIGHTS = "diffusion_pytorch_model.safetensors"
# diffusers < 0.14 named the VAE mid-block attention like this; such files are still around (SD1.5's vae/ dates then).
_LEGACY_ATTENTION = {".query.": ".to_q.", ".key.": ".to_k.", ".value.": ".to_v.", ".proj_attn.": ".to_out.0."}

Progress = Callable[[int, int], None]   # (steps done, total steps)


def _read_json(path: Path, what: str, hint: str) -> dict:
    if not path.is_file():
        raise WeightsNotFoundError(f"{what}: {path} is missing (it must sit beside the weights). {hint}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CorruptWeightsError(f"{path} is not readable JSON ({exc}). {hint}") from exc
    if not isinstance(config, dict):
        raise CorruptWeightsError(f"{path} holds no JSON object. {hint}")
    return config


def _load_model(cls, config: dict, weights: Path, config_name: str, hint: str, *, legacy_names: bool = False):
    """Build ``cls`` from ``config`` without initialising it and load ``weights`` strictly (every key, every shape).

    diffusers' ``from_pretrained`` only warns about missing tensors and leaves them random (the silent-miss pitfall),
    and without ``accelerate`` it first initialises every weight at random: this does neither.
    """
    sd = load_state_dict(weights)
    if legacy_names:
        sd = _rename_legacy_attention(sd)
    check_finite(sd, weights)
    try:
        with torch.device("meta"):
            model = cls.from_config(config)
    except Exception as exc:  # diffusers raises TypeError/ValueError/KeyError/... for bad configs
        raise CorruptWeightsError(f"{config_name} is not a valid {cls.__name__} config ({exc}). {hint}") from exc
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(expected.keys() - sd.keys())
    unexpected = sorted(sd.keys() - expected.keys())
    wrong = sorted(k for k in expected.keys() & sd.keys() if tuple(sd[k].shape) != expected[k])
    if missing or unexpected or wrong:
        raise CorruptWeightsError(
            f"{weights} does not match the {cls.__name__} described by {config_name}: missing {len(missing)} tensors "
            f"{missing[:4]}, unexpected {len(unexpected)} {unexpected[:4]}, wrong shape {len(wrong)} {wrong[:4]}. "
            f"{_ldm_hint(sd)}{hint}")
    model.load_state_dict(sd, strict=True, assign=True)
    return model.eval().requires_grad_(False)


def _ldm_hint(sd: dict) -> str:
    """Files in the original Stable Diffusion layout (ComfyUI/A1111 checkpoints) are not converted here: say so."""
    prefixes = ("first_stage_model.", "encoder.down.", "decoder.up.", "model.diffusion_model.", "input_blocks.")
    if any(key.startswith(prefixes) for key in sd):
        return "It is in the original Stable Diffusion (LDM) layout; this loader reads diffusers' layout. "
    return ""


def _rename_legacy_attention(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    renamed = {}
    for key, value in sd.items():
        if ".mid_block.attentions." in key:
            for old, new in _LEGACY_ATTENTION.items():
                key = key.replace(old, new)
        renamed[key] = value
    return renamed


def find_unet(arc2face_roots, *, download: bool = False) -> tuple[Path, Path]:
    """(weights, config.json) of the Arc2Face UNet: ``<root>/arc2face/{diffusion_pytorch_model.safetensors,
    config.json}``. With ``download`` a missing config.json beside present weights is fetched too."""
    return find_with_config(UNET, arc2face_roots, download=download)


def load_unet(weights: str | os.PathLike, config_path: str | os.PathLike | None = None):
    """The Arc2Face UNet (``UNet2DConditionModel``) from its diffusers folder files, loaded strictly, fp32 as stored."""
    from diffusers import UNet2DConditionModel

    weights = Path(weights)
    config_path = Path(config_path) if config_path is not None else weights.with_name("config.json")
    hint = f"Download arc2face/config.json and arc2face/diffusion_pytorch_model.safetensors from {HF_URL}."
    config = _read_json(config_path, "Arc2Face UNet config", hint)
    return _load_model(UNet2DConditionModel, config, weights, str(config_path), hint)


def load_vae(path: str | os.PathLike, config: Optional[dict] = None):
    """SD1.5's VAE (``AutoencoderKL``) from a diffusers folder (``config.json`` +
    ``diffusion_pytorch_model.safetensors``: stable-diffusion-v1-5's ``vae/``) or one ``.safetensors`` file with
    diffusers' key names.

    ``config`` overrides the architecture; by default a folder's ``config.json``, for a file ``SD15_VAE_CONFIG``.
    The attention names of files saved by diffusers < 0.14 (``query``/``key``/``value``/``proj_attn``, the era of
    SD1.5's own vae/ file) are accepted, as diffusers' ``from_pretrained`` accepts them.
    """
    from diffusers import AutoencoderKL

    path = Path(path)
    hint = f"Use SD1.5's VAE: {SD15_VAE_URL} (or the vae/ folder of stable-diffusion-v1-5)."
    if path.is_dir():
        weights, config_name = path / VAE_WEIGHTS, str(path / "config.json")
        if config is None:
            config = _read_json(path / "config.json", "VAE config", hint)
        if not weights.is_file():
            raise WeightsNotFoundError(f"VAE weights not found: {weights} is missing. {hint}")
    elif path.is_file():
        weights, config_name = path, "the given VAE config" if config is not None else "SD1.5's VAE config"
        config = config if config is not None else SD15_VAE_CONFIG
    else:
        raise WeightsNotFoundError(f"VAE not found: {path} does not exist. {hint}")
    if weights.suffix != ".safetensors":
        raise CorruptWeightsError(f"{weights}: the VAE must be a .safetensors file. {hint}")
    scaling = config.get("scaling_factor", VAE_SCALING_FACTOR)
    if config.get("latent_channels") != 4 or scaling != VAE_SCALING_FACTOR:
        raise WrongModelError(f"{config_name} describes a VAE with {config.get('latent_channels')} latent channels "
                              f"and scaling factor {scaling}: not SD1.5's (4, {VAE_SCALING_FACTOR}). {hint}")
    return _load_model(AutoencoderKL, config, weights, config_name, hint, legacy_names=True)


def make_scheduler():
    """The reference's sampler: ``DPMSolverMultistepScheduler.from_config`` of SD1.5's scheduler config."""
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler.from_config(SD15_SCHEDULER_CONFIG)


def initial_noise(count: int, channels: int, latent_height: int, latent_width: int, seed: int) -> torch.Tensor:
    """Standard normal noise [count, C, h, w], float32, CPU: one draw from a CPU generator seeded with ``seed``."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 64:
        raise InvalidInputError(f"seed must be an integer from 0 to 2**64-1, got {seed!r}")
    generator = torch.Generator("cpu").manual_seed(seed)
    return torch.randn((count, channels, latent_height, latent_width), generator=generator, dtype=torch.float32)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """VAE output [B,3,H,W] in -1..1 → uint8 [B,H,W,3], rounded as diffusers' image processor does."""
    unit = (images.float() / 2 + 0.5).clamp(0, 1)
    return (unit.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)


class Arc2FacePipeline:
    """Arc2Face UNet + ID encoder + SD1.5 VAE + DPM-Solver++: ArcFace embeddings in, images out; optionally the
    pose ControlNet (``controlnet``), steered by a normal-map hint."""

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
        self.files: dict[str, str] = {}   # where each part came from, filled in by load()

    @classmethod
    def load(cls, roots: ModelRoots, vae_path: str | os.PathLike, device: str | torch.device = "cpu",
             dtype: torch.dtype = torch.float32, download: bool = False,
             vae_config: Optional[dict] = None, controlnet: bool = False) -> "Arc2FacePipeline":
        """Find every file first and load the small VAE (and the ControlNet) before the big UNet, so a missing or
        wrong file is reported before anything heavy loads.

        ``download`` fetches missing Arc2Face files from Hugging Face; the VAE is never downloaded. ``controlnet``
        loads the pose ControlNet (``<arc2face root>/controlnet/``) too.
        """
        unet_files = find_unet(roots.arc2face, download=download)
        encoder_files = find_id_encoder(roots.arc2face, download=download)
        control_files = find_controlnet(roots.arc2face, download=download) if controlnet else None
        vae = load_vae(vae_path, vae_config)   # first: a missing or wrong VAE is reported before the big UNet loads
        control = load_controlnet(*control_files) if control_files else None
        pipeline = cls(load_unet(*unet_files), vae, load_id_encoder(*encoder_files), controlnet=control,
                       device=device, dtype=dtype)
        pipeline.files = {"unet": str(unet_files[0]), "encoder": str(encoder_files[0]), "vae": str(vae_path)}
        if control_files:
            pipeline.files["controlnet"] = str(control_files[0])
        return pipeline

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

    def noise(self, count: int, width: int, height: int, seed: int) -> torch.Tensor:
        """The initial noise of ``count`` images (see the module docstring), float32 on the CPU."""
        h, w = self.latent_size(width, height)
        return initial_noise(count, self.vae.config.latent_channels, h, w, seed)

    @torch.no_grad()
    def conditioning(self, embeds: torch.Tensor, images_per_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(positive, negative), each [N*k, 77, 768]: identity i in rows i*k..i*k+k-1; negative = encoder("")."""
        positive, _ = self.encoder.encode(embeds)
        negative, _ = self.encoder.encode_empty()
        positive = positive.repeat_interleave(images_per_id, dim=0)
        return positive, negative.expand(positive.shape[0], -1, -1)

    @torch.no_grad()
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
        scheduler = make_scheduler()  # a fresh one per call: DPM-Solver keeps the previous steps' outputs
        scheduler.set_timesteps(steps, device=self.device)
        cfg = guidance_scale > 1.0
        context = torch.cat([negative, positive]) if cfg else positive
        latents = noise.to(self.device, self.dtype) * scheduler.init_noise_sigma
        if control is not None:
            if self.controlnet is None:
                raise InvalidInputError("a control image needs the pose ControlNet: load with controlnet=True")
            control = control.to(self.device, self.dtype)
            control = torch.cat([control] * 2) if cfg else control
        timesteps = scheduler.timesteps
        for index, t in enumerate(timesteps):
            x = scheduler.scale_model_input(torch.cat([latents] * 2) if cfg else latents, t)
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
            latents = scheduler.step(eps, t, latents, return_dict=False)[0]
            if progress is not None:
                progress(index + 1, steps)
        return latents

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents → VAE images [B, 3, H, W] in about -1..1 (not clamped)."""
        return self.vae.decode(latents / VAE_SCALING_FACTOR, return_dict=False)[0]

    def generate(self, embeds: torch.Tensor, images_per_id: int = 4, steps: int = DEFAULT_STEPS,
                 guidance_scale: float = DEFAULT_GUIDANCE, width: int = DEFAULT_SIZE, height: int = DEFAULT_SIZE,
                 seed: int = 0, noise: Optional[torch.Tensor] = None, progress: Optional[Progress] = None,
                 hint: Optional[torch.Tensor] = None, control_scale: float = 1.0, control_start: float = 0.0,
                 control_end: float = 1.0) -> np.ndarray:
        """ArcFace embeddings [N, 512] → uint8 images [N*k, H, W, 3] RGB, image j of identity i at row i*k + j.

        ``noise`` replaces the seeded draw (a float tensor of the shape ``self.noise`` returns), e.g. a slice of a
        bigger draw so a dataset made in several batches equals one made in one.
        ``hint`` (``pose_hint.prepare_normal_map``'s [1 or N, 512, 512, 3]) poses the faces with the ControlNet:
        one hint for every image or one per identity; ``control_*`` as diffusers' controlnet_conditioning_scale and
        control_guidance_start/end.
        """
        embeds = validate_embeds(embeds, "embeds")
        _check_count("images_per_id", images_per_id)
        _check_count("steps", steps)
        if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)) \
                or not np.isfinite(guidance_scale) or guidance_scale < 0:
            raise InvalidInputError(f"guidance_scale must be a finite number >= 0, got {guidance_scale!r}")
        count = embeds.shape[0] * images_per_id
        expected = (count, self.vae.config.latent_channels, *self.latent_size(width, height))
        if noise is None:
            noise = self.noise(count, width, height, seed)
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
        latents = self.denoise(positive, negative, noise, steps, guidance_scale, progress, control, control_scale,
                               control_start, control_end)
        return to_uint8(self.decode(latents))


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{name} must be an integer >= 1, got {value!r}")


def to_pil(images: np.ndarray) -> list:
    """uint8 [B, H, W, 3] → PIL images."""
    from PIL import Image

    return [Image.fromarray(image) for image in images]
