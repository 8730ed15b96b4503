"""UNet LoRAs for the headless pipeline (e.g. SD1.5's LCM-LoRA), merged into the weights as ComfyUI's loader does.

Two key layouts are read:
* kohya (``lora_unet_<module path, dots as underscores>.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha``): the
  layout of ``latent-consistency/lcm-lora-sdv1-5`` and of most LoRAs in ComfyUI's ``models/loras``;
* diffusers/peft (``unet.<module path>.lora_A.weight`` / ``.lora_B.weight``, optional ``.alpha``), what diffusers'
  ``save_lora_weights`` writes.
Each pair changes one Linear or Conv2d weight by ``strength * alpha / rank * up @ down`` (alpha defaults to the rank).
Every tensor of the file must find its layer: a LoRA for another architecture, or one that also changes a text
encoder (Arc2Face's ID encoder is not SD1.5's CLIP), is refused rather than half applied.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from ..checkpoints import check_finite, load_state_dict
from ..errors import InvalidInputError, WeightsNotFoundError, WrongModelError

KOHYA_UNET = "lora_unet_"
PEFT_UNET = "unet."
_TEXT_ENCODER_PREFIXES = ("lora_te_", "lora_te1_", "lora_te2_", "text_encoder.", "text_encoder_2.")


def _pairs(sd: dict[str, torch.Tensor], path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """{layer key: {"down", "up", optional "alpha"}}; the layer key is the module path with dots or underscores."""
    text = sorted(k for k in sd if k.startswith(_TEXT_ENCODER_PREFIXES))
    if text:
        raise WrongModelError(f"{path} also changes a text encoder ({text[0]}, ...): Arc2Face's ID encoder is not "
                              "SD1.5's CLIP, so only UNet LoRAs (like SD1.5's LCM-LoRA) apply")
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    suffixes = {".lora_down.weight": "down", ".lora_up.weight": "up", ".lora_A.weight": "down",
                ".lora_B.weight": "up", ".alpha": "alpha"}
    for key, value in sd.items():
        for suffix, part in suffixes.items():
            if key.endswith(suffix):
                pairs.setdefault(key[: -len(suffix)], {})[part] = value
                break
        else:
            raise WrongModelError(f"{path}: {key!r} is not a LoRA tensor (expected kohya's lora_down/lora_up/alpha "
                                  "or peft's lora_A/lora_B names)")
    broken = sorted(name for name, parts in pairs.items() if not {"down", "up"} <= parts.keys())
    if broken:
        raise WrongModelError(f"{path}: {broken[0]} has no matching down/up pair; the file is damaged")
    return pairs


def _layers(unet: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The UNet's Linear/Conv2d layers by both spellings a LoRA file may use (kohya's and peft's)."""
    layers = {}
    for name, module in unet.named_modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            layers[KOHYA_UNET + name.replace(".", "_")] = module
            layers[PEFT_UNET + name] = module
    return layers


def lora_delta(down: torch.Tensor, up: torch.Tensor, alpha: torch.Tensor | None, shape: torch.Size) -> torch.Tensor:
    """``alpha / rank * up @ down`` in the shape of the layer's weight (Linear [out, in], Conv2d [out, in, kh, kw])."""
    rank = down.shape[0]
    scale = (float(alpha) if alpha is not None else rank) / rank
    delta = up.flatten(1).double() @ down.flatten(1).double()
    return (delta * scale).reshape(shape)


def apply_lora(unet: torch.nn.Module, path: str | os.PathLike, strength: float = 1.0) -> int:
    """Merge the LoRA file ``path`` into ``unet``'s weights in place, times ``strength``; returns the layers changed."""
    path = Path(path)
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not math.isfinite(strength):
        raise InvalidInputError(f"--lora-strength must be a finite number, got {strength!r}")
    if not path.is_file():
        raise WeightsNotFoundError(f"LoRA file not found: {path}. Pass the .safetensors file itself, e.g. "
                                "models/loras/lcm-lora-sdv1-5.safetensors (latent-consistency/lcm-lora-sdv1-5's "
                                "pytorch_lora_weights.safetensors)")
    sd = load_state_dict(path)
    check_finite(sd, path)
    pairs = _pairs(sd, path)
    layers = _layers(unet)
    unknown = sorted(name for name in pairs if name not in layers)
    if unknown:
        raise WrongModelError(f"{path} does not fit this UNet: {len(unknown)} of its {len(pairs)} layers are not in "
                              f"it ({unknown[:3]}); use an SD1.5 LoRA")
    deltas = {}
    for name, parts in pairs.items():   # every shape first: a bad file changes nothing
        weight = layers[name].weight
        down, up = parts["down"], parts["up"]
        if down.shape[0] != up.shape[1] or up.shape[0] != weight.shape[0] or \
                math.prod(down.shape[1:]) != math.prod(weight.shape[1:]):
            raise WrongModelError(f"{path}: {name} has down {list(down.shape)} / up {list(up.shape)}, which does not "
                                  f"fit the layer's weight {list(weight.shape)}; use an SD1.5 LoRA")
        deltas[name] = lora_delta(down, up, parts.get("alpha"), weight.shape)
    with torch.no_grad():
        for name, delta in deltas.items():
            weight = layers[name].weight
            weight.copy_((weight.double() + strength * delta).to(weight.dtype))
    return len(deltas)
