"""Random Reference Adapter LoRA files in the real key layouts (``ref_adapter/pytorch_lora_weights.safetensors``).

Module names and shapes come from diffusers' own UNet built on the meta device (SD1.5's config by default, so the
names are the full-size ones ComfyUI must map; the tiny test UNet's for the headless tests): the attention
projections of every transformer block (``to_q``, ``to_k``, ``to_v``, ``to_out.0`` of ``attn1`` and ``attn2``), the
modules diffusers' LoRA training scripts target. The real file (51 MB) is that set at rank 64 in fp32.

Styles: ``processor`` (``<block>.processor.to_q_lora.down.weight``), ``diffusers`` (``<module>.lora.down.weight``,
what ``convert_state_dict_to_diffusers`` writes) and ``peft`` (``<module>.lora_A.weight``); ``prefix`` is ``"unet."``
as ``save_lora_weights`` writes it, or ``""`` as the old ``save_attn_procs`` did.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import torch

from builders.sd15_random import SD15_UNET_CONFIG, _init_args

TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
STYLES = ("processor", "diffusers", "peft")


@functools.lru_cache(maxsize=4)
def _lora_targets(config_json: str) -> tuple[tuple[str, int, int], ...]:
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**_init_args(json.loads(config_json)))
    return tuple((name, m.out_features, m.in_features) for name, m in unet.named_modules()
                 if ".attn" in name and name.endswith(TARGETS))


def lora_targets(config: dict | None = None) -> dict[str, tuple[int, int]]:
    """{diffusers module name: (out, in)} of the attention projections of the UNet described by ``config``."""
    return {name: (out, inp) for name, out, inp in _lora_targets(json.dumps(config or SD15_UNET_CONFIG,
                                                                              sort_keys=True))}


def lora_pairs(config: dict | None = None, *, rank: int = 4, seed: int = 0, gain: float = 0.5,
               dtype: torch.dtype = torch.float32) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{module: (down [rank, in], up [out, rank])}, seeded; up·down has about ``gain`` times a weight's scale."""
    g = torch.Generator().manual_seed(seed)
    pairs = {}
    for name, (out, inp) in lora_targets(config).items():
        down = torch.randn(rank, inp, generator=g) / math.sqrt(inp)
        up = torch.randn(out, rank, generator=g) * gain / math.sqrt(rank)
        pairs[name] = (down.to(dtype), up.to(dtype))
    return pairs


def style_key(style: str, module: str, part: str, prefix: str = "unet.") -> str:
    """The key of ``part`` ("down" or "up") of ``module`` in ``style``."""
    if style == "processor":
        block, proj = module.rsplit(".", 1) if not module.endswith("to_out.0") else (module[:-len(".to_out.0")],
                                                                                     "to_out")
        return f"{prefix}{block}.processor.{proj}_lora.{part}.weight"
    if style == "diffusers":
        return f"{prefix}{module}.lora.{part}.weight"
    if style == "peft":
        return f"{prefix}{module}.lora_{'A' if part == 'down' else 'B'}.weight"
    raise ValueError(style)


def lora_state_dict(style: str = "diffusers", pairs: dict | None = None, *, prefix: str = "unet.",
                    alphas: dict[str, float] | None = None) -> dict[str, torch.Tensor]:
    """The pairs in ``style``; ``alphas`` adds ``<prefix><module>.alpha`` tensors (not in the processor style)."""
    pairs = lora_pairs() if pairs is None else pairs
    sd = {}
    for module, (down, up) in pairs.items():
        sd[style_key(style, module, "down", prefix)] = down
        sd[style_key(style, module, "up", prefix)] = up
        if alphas is not None:
            sd[f"{prefix}{module}.alpha"] = torch.tensor(float(alphas[module]))
    return sd


def peft_metadata(pairs: dict, *, lora_alpha: float, use_rslora: bool = False,
                  alpha_pattern: dict | None = None) -> dict[str, str]:
    """The safetensors header diffusers >= 0.34 writes: the UNet's peft LoraConfig under ``unet.<field>``."""
    rank = next(iter(pairs.values()))[0].shape[0]
    config = {"r": rank, "lora_alpha": lora_alpha, "target_modules": sorted({m.rsplit(".", 1)[-1] if
                                                                            not m.endswith("to_out.0") else "to_out.0"
                                                                            for m in pairs}),
              "use_rslora": use_rslora, "use_dora": False, "alpha_pattern": alpha_pattern or {}, "rank_pattern": {},
              "lora_dropout": 0.0, "bias": "none", "init_lora_weights": True}
    return {"format": "pt", "lora_adapter_metadata": json.dumps({f"unet.{k}": v for k, v in config.items()})}


def write_lora(path: Path, state_dict: dict | None = None, metadata: dict | None = None) -> Path:
    """Save ``state_dict`` (default: the SD1.5 pairs in the diffusers style) as a safetensors file."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    sd = lora_state_dict() if state_dict is None else state_dict
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path), metadata=metadata or {"format": "pt"})
    return path
