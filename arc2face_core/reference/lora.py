"""The Reference Adapter's LoRA file (``ref_adapter/pytorch_lora_weights.safetensors``), in any of the key styles
diffusers and peft write, normalised to diffusers UNet module names.

Styles (each with or without the ``unet.`` prefix):

* attention processor (diffusers < 0.19 ``save_attn_procs``):
  ``<block>.attn1.processor.to_q_lora.down.weight`` / ``.up.weight`` (``to_out_lora`` is ``to_out.0``);
* diffusers (``convert_state_dict_to_diffusers`` of a peft model, what diffusers' training scripts save):
  ``<module>.lora.down.weight`` / ``.lora.up.weight``, optionally ``<module>.alpha``;
* peft: ``<module>.lora_A.weight`` / ``.lora_B.weight`` (also under ``base_model.model.``), optionally ``.alpha``.

The scale of a module is ``alpha / rank`` as in peft (``lora_alpha / r``; ``lora_alpha / sqrt(r)`` with rsLoRA).
alpha comes from an ``.alpha`` tensor, else from the peft config diffusers >= 0.34 stores in the file's
``lora_adapter_metadata``, else it equals the rank (scale 1: diffusers' convention for files without it). Every tensor
of the file must be used; anything else is an error that names the keys, so no weight is ever silently dropped.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from ..checkpoints import check_finite, load_state_dict
from ..errors import CorruptWeightsError, InvalidInputError, WrongModelError

METADATA_KEY = "lora_adapter_metadata"   # diffusers' safetensors header entry holding the peft LoraConfig

_PREFIX = r"(?:unet\.)?(?:base_model\.model\.)?"
_PROCESSOR = re.compile(rf"{_PREFIX}(?P<block>.+)\.processor\.(?P<proj>to_q|to_k|to_v|to_out)_lora\."
                        r"(?P<part>down|up)\.weight")
_DIFFUSERS = re.compile(rf"{_PREFIX}(?P<module>.+)\.lora\.(?P<part>down|up)\.weight")
_PEFT = re.compile(rf"{_PREFIX}(?P<module>.+)\.lora_(?P<part>A|B)\.weight")
_ALPHA = re.compile(rf"{_PREFIX}(?P<module>.+)\.alpha")
_PARTS = {"down": "down", "up": "up", "A": "down", "B": "up"}
STYLES = {_PROCESSOR: "attention-processor (…processor.to_q_lora.down.weight)",
          _DIFFUSERS: "diffusers (…to_q.lora.down.weight)", _PEFT: "peft (…to_q.lora_A.weight)"}
_NOT_UNET = ("text_encoder", "te_", "lora_te", "transformer.")


@dataclass(frozen=True)
class LoraModule:
    """One low-rank update: ``weight += strength * alpha / rank * up @ down``."""

    down: torch.Tensor   # [rank, in] (Linear) or [rank, in, kh, kw] (Conv2d)
    up: torch.Tensor     # [out, rank] or [out, rank, 1, 1]
    alpha: float

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    @property
    def flat_shape(self) -> tuple[int, int]:
        """(out, in·kh·kw): the shape of the update with the weight flattened after its first axis."""
        return self.up.shape[0], self.down[0].numel()

    def delta(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``alpha / rank * up @ down`` flattened to [out, in·kh·kw] (reshape it to the weight's shape)."""
        return (self.up.flatten(1).to(dtype) @ self.down.flatten(1).to(dtype)) * self.scale


@dataclass(frozen=True)
class ReferenceLora:
    """The LoRA of the Reference Adapter: {diffusers UNet module name: update}, e.g.
    ``down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q``."""

    modules: dict[str, LoraModule]
    styles: tuple[str, ...] = ()
    source: str = ""
    alpha_from: str = "rank (no alpha in the file: scale 1)"

    def check_fits(self, weight_shapes: Mapping[str, tuple[int, ...]], what: str = "the model") -> None:
        """Check every module exists in ``weight_shapes`` ({diffusers module name: weight shape}) with that shape."""
        where = f"{self.source}: " if self.source else ""
        missing = sorted(name for name in self.modules if name not in weight_shapes)
        if missing:
            raise WrongModelError(
                f"{where}{len(missing)} of the LoRA's {len(self.modules)} modules have no counterpart in {what}, "
                f"e.g. {missing[:3]}. The Reference Adapter fits Arc2Face's SD1.5 UNet.")
        wrong = []
        for name, module in self.modules.items():
            shape = tuple(weight_shapes[name])
            if len(shape) < 2 or module.flat_shape != (shape[0], math.prod(shape[1:])):
                wrong.append(f"{name}: LoRA {module.flat_shape[0]}x{module.flat_shape[1]}, weight {list(shape)}")
        if wrong:
            raise WrongModelError(f"{where}the LoRA does not fit {what}: {len(wrong)} modules have other shapes, "
                                  f"e.g. {wrong[:3]}. The Reference Adapter fits Arc2Face's SD1.5 UNet.")


def check_strength(strength: float) -> float:
    """The LoRA scale of the Reference Adapter: a finite number in the official slider's range 0..1."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not math.isfinite(strength) \
            or not 0.0 <= strength <= 1.0:
        raise InvalidInputError(f"the Reference Adapter strength must be a number from 0 to 1 (the official "
                                f"range), got {strength!r}")
    return float(strength)


def load_reference_lora(path: str | os.PathLike) -> ReferenceLora:
    """Read a LoRA file (``.safetensors`` with its header metadata, or a ``.bin`` through ``weights_only``)."""
    path = Path(path)
    state_dict = load_state_dict(path)
    return parse_lora(state_dict, _safetensors_metadata(path), source=str(path))


def _safetensors_metadata(path: Path) -> dict[str, str]:
    if path.suffix != ".safetensors":
        return {}
    from safetensors import safe_open

    with safe_open(os.fspath(path), "pt") as handle:   # readable: load_state_dict just read the same file
        return dict(handle.metadata() or {})


def parse_lora(state_dict: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None, *,
               source: str = "") -> ReferenceLora:
    """Normalise a LoRA state dict of any supported style; every key must be used."""
    where = f"{source}: " if source else ""
    if not state_dict:
        raise CorruptWeightsError(f"{where}the file holds no tensors: it is not a LoRA")
    halves: dict[str, dict[str, torch.Tensor]] = {}
    alphas: dict[str, torch.Tensor] = {}
    styles, unknown = set(), []
    for key, tensor in state_dict.items():
        found = _match(key)
        if found is None:
            unknown.append(key)
            continue
        style, module, part = found
        if part == "alpha":
            alphas[module] = tensor
            continue
        styles.add(style)
        if part in halves.setdefault(module, {}):
            raise CorruptWeightsError(f"{where}module {module} has its LoRA {part} weight twice (key {key!r}); the "
                                      "file mixes two styles of the same LoRA")
        halves[module][part] = tensor
    _refuse_unknown(unknown, state_dict, where)
    orphans = sorted(set(alphas) - set(halves))
    if orphans:
        raise CorruptWeightsError(f"{where}alpha values without LoRA weights for {orphans[:3]}: the file is "
                                  "incomplete or not a LoRA")
    check_finite(state_dict, source or "the LoRA")
    config = _peft_config(metadata or {}, where)
    if alphas and config:
        raise CorruptWeightsError(f"{where}the file has both .alpha tensors and a peft config ({METADATA_KEY}) "
                                  "saying what alpha is: it is ambiguous which one to use")
    modules = {name: _module(name, parts, alphas.get(name), config, where) for name, parts in sorted(halves.items())}
    alpha_from = ("the file's .alpha tensors" if alphas else f"the peft config in {METADATA_KEY}" if config
                  else "rank (no alpha in the file: scale 1, as diffusers)")
    return ReferenceLora(modules, tuple(sorted(STYLES[s] for s in styles)), source, alpha_from)


def _match(key: str) -> tuple[Any, str, str] | None:
    """(style, diffusers module name, "down" | "up" | "alpha") of a key, None if it is no LoRA key."""
    if any(key.startswith(p) for p in _NOT_UNET):
        return None
    found = _PROCESSOR.fullmatch(key)
    if found:
        proj = "to_out.0" if found["proj"] == "to_out" else found["proj"]
        return _PROCESSOR, f"{found['block']}.{proj}", found["part"]
    for pattern in (_DIFFUSERS, _PEFT):
        found = pattern.fullmatch(key)
        if found and ".processor." not in found["module"]:
            return pattern, found["module"], _PARTS[found["part"]]
    found = _ALPHA.fullmatch(key)
    if found and ".processor." not in found["module"] and not found["module"].endswith(".lora"):
        return _ALPHA, found["module"], "alpha"
    return None


def _refuse_unknown(unknown: list[str], state_dict: Mapping[str, torch.Tensor], where: str) -> None:
    if not unknown:
        return
    text_encoder = [k for k in unknown if k.startswith(_NOT_UNET)]
    if text_encoder and len(text_encoder) == len(unknown) and len(unknown) < len(state_dict):
        raise WrongModelError(f"{where}{len(text_encoder)} keys are LoRA weights for a text encoder, e.g. "
                              f"{text_encoder[:3]}; the Reference Adapter is a LoRA of the UNet only")
    kohya = sorted((k for k in unknown if k.startswith(("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_"))),
                   key=lambda k: (not k.startswith("lora_unet_"), k))
    if kohya:
        raise WrongModelError(
            f"{where}this is a kohya-style LoRA ({len(kohya)} keys like {kohya[0]!r}, as kohya's sd-scripts and "
            "most LoRA trainers write them). The Reference Adapter is published only in diffusers' layout "
            "(ref_adapter/pytorch_lora_weights.safetensors in huggingface.co/FoivosPar/Arc2Face), never as a kohya "
            "file, so this is another LoRA (a style, a character, LCM...): load it with the stock Load LoRA "
            "(LoraLoaderModelOnly) instead, and give this node the Arc2Face file.")
    if len(unknown) == len(state_dict):
        raise WrongModelError(
            f"{where}this is not a LoRA in a diffusers/peft key style (…processor.to_q_lora.down.weight, "
            f"…to_q.lora.down.weight or …to_q.lora_A.weight). Keys found: {sorted(state_dict)[:5]} "
            f"({len(state_dict)} in all). Use ref_adapter/pytorch_lora_weights.safetensors from the Arc2Face repo.")
    raise WrongModelError(
        f"{where}{len(unknown)} of its {len(state_dict)} keys are not LoRA weights the pack can apply, e.g. "
        f"{sorted(unknown)[:5]} (DoRA magnitudes, LoRA biases and other LoKr/LoHa parts are not supported); none "
        "is dropped silently, so the file is refused")


def _peft_config(metadata: Mapping[str, str], where: str) -> dict:
    """The UNet's peft LoraConfig stored by diffusers (keys ``unet.<field>``, or unprefixed from a model-level save)."""
    raw = metadata.get(METADATA_KEY)
    if not raw:
        return {}
    try:
        config = json.loads(raw)
    except ValueError as exc:
        raise CorruptWeightsError(f"{where}its {METADATA_KEY} header is not valid JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise CorruptWeightsError(f"{where}its {METADATA_KEY} header is not a JSON object")
    if any(k.startswith("unet.") for k in config):
        config = {k[len("unet."):]: v for k, v in config.items() if k.startswith("unet.")}
    if config.get("use_dora"):
        raise WrongModelError(f"{where}the peft config says this is a DoRA adapter (use_dora), not a plain LoRA")
    if "lora_alpha" not in config:
        return {}
    return config


def _pattern_value(patterns: Mapping[str, Any], module: str):
    """peft's rank/alpha pattern lookup: a key matches a module name ending in it (keys are regular expressions)."""
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key.lstrip('^')})$", module) or re.fullmatch(key.lstrip("^"), module):
            return value
    return None


def _module(name: str, parts: dict[str, torch.Tensor], alpha: torch.Tensor | None, config: dict,
            where: str) -> LoraModule:
    if set(parts) != {"down", "up"}:
        missing = ({"down", "up"} - set(parts)).pop()
        raise CorruptWeightsError(f"{where}module {name} has no LoRA {missing} weight: the file is incomplete")
    down, up = parts["down"], parts["up"]
    if not (down.is_floating_point() and up.is_floating_point()):
        raise CorruptWeightsError(f"{where}module {name}: LoRA weights must be floating point, got {down.dtype}")
    if down.ndim not in (2, 4) or up.ndim != down.ndim or down.shape[0] != up.shape[1] \
            or (up.ndim == 4 and tuple(up.shape[2:]) != (1, 1)):
        raise CorruptWeightsError(f"{where}module {name}: LoRA down {list(down.shape)} and up {list(up.shape)} do not "
                                  "form a low-rank pair ([rank, in] and [out, rank])")
    rank = down.shape[0]
    if alpha is not None:
        if alpha.numel() != 1:
            raise CorruptWeightsError(f"{where}module {name}: alpha must be one number, got shape {list(alpha.shape)}")
        value = float(alpha.float())
    elif config:
        value = _pattern_value(config.get("alpha_pattern"), name)
        value = float(config["lora_alpha"] if value is None else value)
        if config.get("use_rslora"):
            value *= math.sqrt(rank)   # rsLoRA scales by alpha / sqrt(rank): as an alpha over rank, alpha·sqrt(rank)
    else:
        value = float(rank)
    return LoraModule(down.detach(), up.detach(), value)
