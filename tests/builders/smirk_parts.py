"""Random-weight SMIRK encoders (pose, shape, expression) in ``SMIRK_em1.pt``'s key layout, as timm names it.

The layout (every key, shape and dtype of SMIRK's three encoders) is read from ``tests/data/smirk_encoder_layout.json``,
which ``tests/smirk_heads_timm_check.py --write-layout`` writes from timm's own models (the check also fails when the
file no longer equals timm's layout). So these checkpoints never take their names from the pack's model code: a name
the pack spells differently from timm fails the pack's strict load.

``write_full_smirk_checkpoint`` writes all three encoders plus decoys standing for SMIRK's generator; ``add_smirk_parts``
replaces chosen parts of an existing checkpoint (e.g. the one ``builders/smirk.py`` writes with the expression encoder
only) with random ones in the real layout.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch

from builders.smirk import random_encoder_weights

LAYOUT_FILE = Path(__file__).resolve().parents[1] / "data" / "smirk_encoder_layout.json"
PARTS = ("pose", "shape", "expression")
GENERATOR_DECOYS = {"smirk_generator.encoder.0.conv.weight": (32, 6, 3, 3),
                    "smirk_generator.decoder.5.weight": (3, 32, 1, 1)}


@functools.lru_cache(maxsize=1)
def timm_layout() -> dict[str, dict[str, tuple[tuple[int, ...], str]]]:
    """{part: {key under smirk_encoder.<part>_encoder.: (shape, dtype name)}} as timm lays the encoders out."""
    raw = json.loads(LAYOUT_FILE.read_text())
    return {part: {k: (tuple(shape), dtype) for k, (shape, dtype) in keys.items()} for part, keys in raw.items()}


def random_part_state_dict(part: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors for every key of one part (no prefix).

    He-scale conv/linear weights, BatchNorm weights near 1 (0.1..0.3 where a residual branch closes, so activations
    stay O(1) through the stacks), small biases and means, variances 0.5..1.5, counts for ``num_batches_tracked``:
    a swapped, skipped or mis-scaled tensor changes the output.
    """
    shapes = {name: shape for name, (shape, _) in timm_layout()[part].items()}
    return random_encoder_weights(shapes, torch.Generator().manual_seed(seed * 10 + PARTS.index(part)))


def prefix(part: str) -> str:
    return f"smirk_encoder.{part}_encoder."


def full_state_dict(seed: int = 0, parts: tuple[str, ...] = PARTS) -> dict[str, torch.Tensor]:
    """The chosen parts under their checkpoint prefixes, plus the generator decoys."""
    g = torch.Generator().manual_seed(seed + 999)
    out = {k: torch.randn(shape, generator=g) for k, shape in GENERATOR_DECOYS.items()}
    for part in parts:
        out.update({prefix(part) + k: v for k, v in random_part_state_dict(part, seed).items()})
    return out


def write_full_smirk_checkpoint(path: str | Path, seed: int = 0, parts: tuple[str, ...] = PARTS) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(full_state_dict(seed, parts), path)
    return path


def add_smirk_parts(path: str | Path, parts: tuple[str, ...] = ("pose", "shape"), seed: int = 0) -> Path:
    """Replace every key of ``parts`` in the checkpoint at ``path`` by random ones in the real layout."""
    path = Path(path)
    sd = torch.load(path, weights_only=True)
    sd = {k: v for k, v in sd.items() if not k.startswith(tuple(prefix(p) for p in parts))}
    for part in parts:
        sd.update({prefix(part) + k: v for k, v in random_part_state_dict(part, seed).items()})
    torch.save(sd, path)
    return path
