"""The Arc2Face pose ControlNet for the headless pipeline: finding and loading it, its control image and its range.

The reference (``gradio_demo/app_controlnet.py``) runs diffusers' ``StableDiffusionControlNetPipeline`` with
``ControlNetModel.from_pretrained(..., subfolder="controlnet")`` and the 512x512 normal map as ``image``. That pipeline
turns the hint into a float tensor in [0, 1] (not normalised to [-1, 1]) at the output size, pairs it with the prompts
(a batch of 1 goes to every image, a batch of N to the N prompts' images, ``repeat_interleave``) and gives it to both
halves of classifier-free guidance; the ControlNet sees the UNet's own input, timestep and context, and its residuals,
times the conditioning scale, are added to the UNet's skip connections and mid block. Guess mode is off.

Control range, as in diffusers: of ``n`` steps, step ``i`` (0-based) is controlled when neither
``i / n < start`` nor ``(i + 1) / n > end`` holds; diffusers then runs the ControlNet at scale 0, which adds exact
zeros, so here an uncontrolled step skips it.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from ..checkpoints import BackgroundRead
from ..errors import InvalidInputError, WrongModelError
from ..pose.hint import check_hint_batch
from ..validation import MAX_BATCH, MAX_PIXELS_SIDE, MAX_STEPS, finite_number, positive_int, whole_number
from ..weights import CONTROLNET, HF_URL, find_with_config
from .model_files import load_model, read_json

CONDITIONING_CHANNELS = 3    # the hint is an RGB normal map
ARC2FACE_CONTEXT_DIM = 768   # the ID encoder's tokens (CLIP ViT-L/14's hidden size), as the UNet's
_HINT = ("Download controlnet/config.json and controlnet/diffusion_pytorch_model.safetensors from "
         f"{HF_URL} (keep the repo's folder layout).")


def find_controlnet(arc2face_roots, *, download: bool = False) -> tuple[Path, Path]:
    """(weights, config.json) of the pose ControlNet: ``<root>/controlnet/{diffusion_pytorch_model.safetensors,
    config.json}``. With ``download`` a missing config.json beside present weights is fetched too."""
    return find_with_config(CONTROLNET, arc2face_roots, download=download)


def _setting(cls, config: dict, name: str):
    """A config value, or the class's default for it when the config leaves it out (as ``from_config`` does)."""
    return config[name] if name in config else inspect.signature(cls.__init__).parameters[name].default


def load_controlnet(weights: str | os.PathLike, config_path: str | os.PathLike | None = None):
    """The pose ControlNet (diffusers ``ControlNetModel``) from its folder files, loaded strictly, fp32 as stored.

    The config is checked before the weights are read: an RGB hint (3 conditioning channels), 768-d context tokens,
    no pooled-condition ("guess mode") variant.
    """
    from diffusers import ControlNetModel

    weights = Path(weights)
    config_path = Path(config_path) if config_path is not None else weights.with_name("config.json")
    config = read_json(config_path, "Arc2Face ControlNet config", _HINT)
    channels = _setting(ControlNetModel, config, "conditioning_channels")
    context = _setting(ControlNetModel, config, "cross_attention_dim")
    if channels != CONDITIONING_CHANNELS or context != ARC2FACE_CONTEXT_DIM:
        raise WrongModelError(f"{config_path} describes a ControlNet for {channels}-channel hints and {context}-d "
                              f"context tokens; Arc2Face's pose ControlNet takes an RGB normal map "
                              f"({CONDITIONING_CHANNELS} channels) and the ID encoder's {ARC2FACE_CONTEXT_DIM}-d "
                              f"tokens. {_HINT}")
    if _setting(ControlNetModel, config, "global_pool_conditions"):
        raise WrongModelError(f"{config_path} describes a pooled-condition (guess mode) ControlNet, not Arc2Face's "
                              f"pose ControlNet. {_HINT}")
    return load_model(ControlNetModel, config, BackgroundRead(weights), str(config_path), _HINT)


def check_controlnet_fits(controlnet, unet, vae_scale_factor: int) -> None:
    """The ControlNet's residuals must match the UNet's skip connections and its hint embedding the latent size."""
    c, u = controlnet.config, unet.config
    for name in ("in_channels", "block_out_channels", "layers_per_block", "cross_attention_dim"):
        if list(_as_list(c[name])) != list(_as_list(u[name])):
            raise WrongModelError(f"the ControlNet's {name} is {c[name]} but the UNet's is {u[name]}: it is not a "
                                  f"ControlNet for this UNet. {_HINT}")
    factor = 2 ** (len(c.conditioning_embedding_out_channels) - 1)
    if factor != vae_scale_factor:
        raise WrongModelError(f"the ControlNet embeds hints at 1/{factor} of the image size but the VAE's latents are "
                              f"1/{vae_scale_factor} of it: they do not belong together. {_HINT}")


def _as_list(value):
    return value if isinstance(value, (list, tuple)) else [value]


def control_image(hint: torch.Tensor, identities: int, images_per_id: int, height: int, width: int) -> torch.Tensor:
    """A prepared hint (``pose.hint.prepare_normal_map``: [B, h, w, 3] float in 0..1) → the control image
    [N*k, 3, height, width] float32 in 0..1, on the CPU, row ``i*k + j`` for image j of identity i.

    A batch of 1 controls every image, a batch of N pairs hint i with identity i. A hint of another size is
    stretched to the output size as diffusers resizes it (Arc2Face's own is square 512 for square 512 images), with
    antialiased bilinear filtering.
    """
    if not isinstance(hint, torch.Tensor) or hint.ndim != 4 or hint.shape[-1] != 3 or not hint.is_floating_point() \
            or 0 in hint.shape:
        got = f"{hint.dtype} {list(hint.shape)}" if isinstance(hint, torch.Tensor) else type(hint).__name__
        raise InvalidInputError(f"the pose hint must be a float IMAGE [B, H, W, 3] from prepare_normal_map, got {got}")
    if not torch.isfinite(hint).all() or hint.min() < 0 or hint.max() > 1:
        raise InvalidInputError("the pose hint must hold finite values in [0, 1] (use prepare_normal_map)")
    identities = positive_int(identities, "identities", upper=MAX_BATCH)
    images_per_id = positive_int(images_per_id, "images_per_id", upper=MAX_BATCH // identities)
    height = positive_int(height, "height", upper=MAX_PIXELS_SIDE)
    width = positive_int(width, "width", upper=MAX_PIXELS_SIDE)
    check_hint_batch(hint.shape[0], identities)
    image = hint.detach().to("cpu", torch.float32).movedim(-1, 1)
    if tuple(image.shape[-2:]) != (height, width):
        image = F.interpolate(image, size=(height, width), mode="bilinear", align_corners=False,
                              antialias=True).clamp(0, 1)
    repeat = identities * images_per_id if image.shape[0] == 1 else images_per_id
    return image.repeat_interleave(repeat, dim=0).contiguous()


def check_control_range(scale: float, start: float, end: float) -> None:
    """diffusers' rules (0 <= start < end <= 1), and a finite scale >= 0."""
    scale = finite_number(scale, "control_scale", lower=0.0)
    start = finite_number(start, "control_start", lower=0.0)
    end = finite_number(end, "control_end", lower=0.0)
    if not start < end <= 1:
        raise InvalidInputError(f"the control range must satisfy 0 <= start < end <= 1, got start {start} and end "
                                f"{end}")


def control_active(step: int, steps: int, start: float, end: float) -> bool:
    """Whether step ``step`` (0-based) of ``steps`` is controlled: diffusers' ``controlnet_keep`` rule."""
    steps = positive_int(steps, "steps", upper=MAX_STEPS)
    step = whole_number(step, "step", lower=0, upper=steps - 1)
    start = finite_number(start, "control_start", lower=0.0, upper=1.0)
    end = finite_number(end, "control_end", lower=0.0, upper=1.0)
    return not (step / steps < start or (step + 1) / steps > end)
