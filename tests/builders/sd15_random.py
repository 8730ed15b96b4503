"""Random-weight SD1.5-shaped models in the diffusers layout, for the real-ComfyUI and benchmark runs.

ComfyUI recognises a diffusion model by its weights' shapes, so a shrunken UNet is not loadable there: these are full
size (the UNet is 860M parameters; written in fp16 it takes 1.7 GB). Tensor names and shapes come from diffusers'
own classes built on the meta device, so nothing is hand-listed. Weights are scaled by 1/sqrt(fan_in) so that the
random network stays finite through every block; norms start at 1, biases small.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

# The fields of SD1.5's unet/config.json (Arc2Face's arc2face/config.json has the same architecture).
SD15_UNET_CONFIG = {
    "_class_name": "UNet2DConditionModel",
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}

# An SD1.5 ControlNet's config.json in diffusers' layout (Arc2Face's controlnet/config.json has this architecture).
SD15_CONTROLNET_CONFIG = {
    "_class_name": "ControlNetModel",
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "conditioning_embedding_out_channels": [16, 32, 96, 256],
    "controlnet_conditioning_channel_order": "rgb",
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
}

# SD1.5's vae/config.json.
SD15_VAE_CONFIG = {
    "_class_name": "AutoencoderKL",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}


def _init_args(config: dict) -> dict:
    return {k: v for k, v in config.items() if not k.startswith("_")}


def random_like_module(module: torch.nn.Module, seed: int, dtype: torch.dtype, gain: float = 1.0) -> dict:
    """A state dict with the module's names and shapes, filled with scaled random values."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, tensor in module.state_dict().items():
        shape = tuple(tensor.shape)
        if name.endswith("bias"):
            value = torch.randn(shape, generator=g) * 0.01
        elif len(shape) == 1:  # norm scales
            value = 1.0 + torch.randn(shape, generator=g) * 0.05
        else:
            fan_in = math.prod(shape[1:])
            value = torch.randn(shape, generator=g) * (gain / math.sqrt(fan_in))
        sd[name] = value.to(dtype)
    return sd


def write_unet(folder: Path, *, config: dict | None = None, seed: int = 0, dtype: torch.dtype = torch.float16,
               filename: str = "diffusion_pytorch_model.safetensors") -> Path:
    """``<folder>/{config.json, diffusion_pytorch_model.safetensors}`` in diffusers' UNet2DConditionModel layout."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    config = config or SD15_UNET_CONFIG
    with torch.device("meta"):
        unet = UNet2DConditionModel(**_init_args(config))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    path = folder / filename
    save_file(random_like_module(unet, seed, dtype, gain=0.5), str(path), metadata={"format": "pt"})
    return path


def write_vae(path: Path, *, config: dict | None = None, seed: int = 1, dtype: torch.dtype = torch.float16) -> Path:
    """A single-file VAE with diffusers' AutoencoderKL key names (ComfyUI's VAELoader converts them)."""
    from diffusers import AutoencoderKL
    from safetensors.torch import save_file

    config = config or SD15_VAE_CONFIG
    with torch.device("meta"):
        vae = AutoencoderKL(**_init_args(config))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(random_like_module(vae, seed, dtype, gain=0.5), str(path), metadata={"format": "pt"})
    return path


def write_controlnet(folder: Path, *, seed: int = 2, dtype: torch.dtype = torch.float16) -> Path:
    """``<folder>/{config.json, diffusion_pytorch_model.safetensors}`` in diffusers' ControlNetModel layout.

    The zero convolutions of a trained ControlNet are not zero any more: every tensor is random here too.
    """
    from diffusers import ControlNetModel
    from safetensors.torch import save_file

    with torch.device("meta"):
        controlnet = ControlNetModel(**_init_args(SD15_CONTROLNET_CONFIG))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(SD15_CONTROLNET_CONFIG, indent=2))
    path = folder / "diffusion_pytorch_model.safetensors"
    save_file(random_like_module(controlnet, seed, dtype, gain=0.5), str(path), metadata={"format": "pt"})
    return path
