"""Random Expression Adapter files in the real format: ``torch.save`` of ``{"image_proj": {...}, "ip_adapter": {...}}``.

The per-layer widths are not hand-listed: they are read from diffusers' own SD1.5 UNet (built on the meta device) the
way diffusers' IP-Adapter loader numbers them (``key_id`` 1, 3, ... over the attn2 processors in ``attn_processors``
order), so a file written here is one that diffusers' ``load_ip_adapter`` would accept for SD1.5. Full SD1.5 widths
(cross-attention 768) are kept so that ComfyUI can use the file; only the projection's hidden layer is small.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import torch

from builders.sd15_random import SD15_UNET_CONFIG, _init_args

EXPRESSION_DIM = 55     # FLAME expression 50 + eyelid 2 + jaw 3


@functools.lru_cache(maxsize=1)
def sd15_ip_layer_widths() -> dict[int, int]:
    """{diffusers IP-Adapter layer id: inner width} of SD1.5's cross-attention layers, read from diffusers."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**_init_args(SD15_UNET_CONFIG))
    widths, key_id = {}, 1
    for name in unet.attn_processors:
        if name.endswith("attn2.processor"):
            widths[key_id] = unet.get_submodule(name[: -len(".processor")]).to_q.out_features
            key_id += 2
    return widths


def _randn(g: torch.Generator, *shape: int, fan_in: int | None = None) -> torch.Tensor:
    return torch.randn(*shape, generator=g) / math.sqrt(fan_in or shape[-1])


def _layer_norm(g: torch.Generator, dim: int) -> dict[str, torch.Tensor]:
    return {"weight": 1.0 + 0.1 * torch.randn(dim, generator=g), "bias": 0.05 * torch.randn(dim, generator=g)}


def image_proj_state(projection: str = "faceid_mlp", *, expression_dim: int = EXPRESSION_DIM, hidden: int = 110,
                     num_tokens: int = 4, cross_dim: int = 768, seed: int = 0) -> dict[str, torch.Tensor]:
    """The ``image_proj`` dict of one projection family, with the original IP-Adapter key names.

    ``faceid_mlp``: proj.0 Linear → GELU → proj.2 Linear → T tokens → LayerNorm ``norm`` (IP-Adapter FaceID);
    ``linear``: Linear ``proj`` → T tokens → LayerNorm ``norm`` (IP-Adapter's ImageProjection);
    ``full_mlp``: proj.0 → GELU → proj.2 → LayerNorm proj.3, one token (IP-Adapter "full");
    ``resampler``: a Perceiver-resampler fragment (IP-Adapter Plus), which needs an image encoder: unsupported.
    """
    g = torch.Generator().manual_seed(seed)
    out = num_tokens * cross_dim
    if projection == "linear":
        sd = {"proj.weight": _randn(g, out, expression_dim), "proj.bias": 0.1 * torch.randn(out, generator=g)}
    elif projection in ("faceid_mlp", "full_mlp"):
        if projection == "full_mlp":   # diffusers' FeedForward(mult=1): the hidden layer is as wide as the input
            out, hidden = cross_dim, expression_dim
        sd = {"proj.0.weight": _randn(g, hidden, expression_dim), "proj.0.bias": 0.1 * torch.randn(hidden, generator=g),
              "proj.2.weight": _randn(g, out, hidden), "proj.2.bias": 0.1 * torch.randn(out, generator=g)}
    elif projection == "resampler":
        return {"latents": torch.randn(1, num_tokens, cross_dim, generator=g),
                "proj_in.weight": _randn(g, cross_dim, expression_dim), "proj_out.weight": _randn(g, cross_dim, cross_dim)}
    else:
        raise ValueError(projection)
    norm = "proj.3" if projection == "full_mlp" else "norm"
    sd.update({f"{norm}.{k}": v for k, v in _layer_norm(g, cross_dim).items()})
    return sd


def ip_adapter_state(widths: dict[int, int] | None = None, *, cross_dim: int = 768, seed: int = 1,
                     dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """``{"{id}.to_k_ip.weight": [inner, cross], "{id}.to_v_ip.weight": ...}`` for every layer in ``widths``."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for layer_id, inner in (sd15_ip_layer_widths() if widths is None else widths).items():
        for name in ("to_k_ip", "to_v_ip"):
            sd[f"{layer_id}.{name}.weight"] = _randn(g, inner, cross_dim).to(dtype)
    return sd


def adapter_state(projection: str = "faceid_mlp", widths: dict[int, int] | None = None, **proj_kwargs) -> dict:
    """The whole nested dict, as exp_adapter.bin holds it."""
    return {"image_proj": image_proj_state(projection, **proj_kwargs), "ip_adapter": ip_adapter_state(widths)}


def write_exp_adapter(path: Path, state: object | None = None) -> Path:
    """``torch.save`` (zip format) of ``state`` (default: the FaceID-MLP adapter with SD1.5's 16 layers)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(adapter_state() if state is None else state, path)
    return path
