"""Low-rank random LoRAs for a diffusers UNet, in the key layouts real SD1.5 LoRAs use.

``lcm-lora-sdv1-5`` (latent-consistency) was trained with peft on these UNet layers (the LCM distillation script's
target modules): the attention projections ``to_q/to_k/to_v/to_out.0``, ``proj_in/proj_out``, ``ff.net.0.proj`` and
``ff.net.2``, the resnets' ``conv1/conv2/conv_shortcut/time_emb_proj`` and the ``downsamplers/upsamplers`` convolutions,
and released in kohya's layout: ``lora_unet_<module path with underscores>.{lora_down.weight, lora_up.weight, alpha}``.
The peft layout (``unet.<module path>.lora_A.weight / lora_B.weight``) is what diffusers' save_lora_weights writes.
Module names and shapes come from diffusers' own UNet class, never hand-listed. Conv layers get a conv ``down``
[r, in, kh, kw] and a 1x1 ``up`` [out, r, 1, 1], as kohya stores them.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

LCM_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1",
               "conv2", "conv_shortcut", "time_emb_proj", "downsamplers.0.conv", "upsamplers.0.conv")


def lora_targets(unet: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """{module path: weight shape} of the UNet's layers an LCM-LoRA changes."""
    out = {}
    for name, module in unet.named_modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) and name.endswith(LCM_TARGETS):
            out[name] = tuple(module.weight.shape)
    return out


def random_lora(targets: dict[str, tuple[int, ...]], *, rank: int = 4, alpha: float = 8.0, seed: int = 0,
                layout: str = "kohya", gain: float = 1.0, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """A random LoRA for ``targets``; ``gain`` scales the change (1.0: the delta is about as large as the weight)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, shape in sorted(targets.items()):
        out_dim, in_dims = shape[0], shape[1:]
        down = torch.randn((rank, *in_dims), generator=g) / math.sqrt(math.prod(in_dims))
        up = torch.randn((out_dim, rank) + (1, 1) * (len(shape) == 4), generator=g) * gain / math.sqrt(rank)
        up = up * (rank / alpha)   # cancels the alpha/rank scale, so gain alone sets the size of the change
        if layout == "kohya":
            key = "lora_unet_" + name.replace(".", "_")
            sd[f"{key}.lora_down.weight"], sd[f"{key}.lora_up.weight"] = down.to(dtype), up.to(dtype)
            sd[f"{key}.alpha"] = torch.tensor(alpha, dtype=dtype)
        elif layout == "peft":
            sd[f"unet.{name}.lora_A.weight"], sd[f"unet.{name}.lora_B.weight"] = down.to(dtype), up.to(dtype)
        else:
            raise ValueError(layout)
    return sd


def write_lora(path: Path, targets: dict[str, tuple[int, ...]], **kwargs) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(random_lora(targets, **kwargs), str(path))
    return path


def write_sd15_lcm_lora(path: Path, *, rank: int = 4, seed: int = 0, gain: float = 0.3) -> Path:
    """A kohya-layout random LoRA over every LCM target of the full-size SD1.5 UNet (fp16, a few MB)."""
    from diffusers import UNet2DConditionModel

    from builders.sd15_random import SD15_UNET_CONFIG, _init_args

    with torch.device("meta"):
        unet = UNet2DConditionModel(**_init_args(SD15_UNET_CONFIG))
    return write_lora(path, lora_targets(unet), rank=rank, seed=seed, gain=gain, dtype=torch.float16)
