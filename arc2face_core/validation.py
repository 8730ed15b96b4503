"""Argument checks shared by the core's public functions: one clear InvalidInputError instead of a raw TypeError,
IndexError, ZeroDivisionError or OverflowError when the core is called directly (the command line, scripts).

Whole numbers are Python or numpy integers (never bool, float, str, None or a tensor); upper bounds keep a typo such
as 10**30 from reaching torch as an OverflowError or an allocation of petabytes.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch

from .errors import InvalidInputError

MAX_BATCH = 65_536          # rows in one batch (identities × images per identity)
MAX_PIXELS_SIDE = 16_384    # image width/height (ComfyUI's own MAX_RESOLUTION)
MAX_STEPS = 10_000


def _bounds(lower: float | None, upper: float | None) -> str:
    if lower is not None and upper is not None:
        return f" in [{lower:g}, {upper:g}]"
    return f" >= {lower:g}" if lower is not None else (f" <= {upper:g}" if upper is not None else "")


def whole_number(value: Any, name: str, *, lower: int | None = None, upper: int | None = None) -> int:
    """``value`` as an int within [lower, upper], or InvalidInputError that names it and says what is allowed."""
    bounds = f" of at least {lower}" if lower is not None else ""
    bounds += (" and" if bounds else "") + (f" at most {upper}" if upper is not None else "")
    wanted = f"{name} must be a whole number{bounds}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidInputError(f"{wanted}, got {value!r} ({type(value).__name__}).")
    number = int(value)
    if (lower is not None and number < lower) or (upper is not None and number > upper):
        raise InvalidInputError(f"{wanted}, got {number}.")
    return number


def positive_int(value: Any, name: str, *, upper: int | None = None) -> int:
    """``value`` as an int >= 1 (and <= ``upper``), or InvalidInputError."""
    return whole_number(value, name, lower=1, upper=upper)


def finite_number(value: Any, name: str, *, lower: float | None = None, upper: float | None = None) -> float:
    """``value`` (a real number, not bool) as a finite float within [lower, upper], or InvalidInputError."""
    wanted = f"{name} must be a finite number{_bounds(lower, upper)}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidInputError(f"{wanted}, got {value!r} ({type(value).__name__}).")
    try:
        number = float(value)
    except OverflowError:   # an int beyond float's range
        raise InvalidInputError(f"{wanted}, got {value!r}.") from None
    if not math.isfinite(number) or (lower is not None and number < lower) or (upper is not None and number > upper):
        raise InvalidInputError(f"{wanted}, got {value!r}.")
    return number


def float_array(value: Any, name: str):
    """``value`` as a float64 numpy array, or InvalidInputError when it is not numbers (text, ragged lists, None)."""
    import numpy as np

    if value is None or isinstance(value, (str, bytes)):
        raise InvalidInputError(f"{name} must be an array of numbers, got {type(value).__name__}.")
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidInputError(f"{name} must be an array of numbers ({exc}).") from None


def batched_tensor(value: Any, name: str) -> torch.Tensor:
    """A tensor with a batch dimension (ndim >= 1), or InvalidInputError (a 0-d tensor has no rows to index)."""
    if not isinstance(value, torch.Tensor):
        raise InvalidInputError(f"{name} must be a torch tensor with a batch dimension, got {type(value).__name__}.")
    if value.ndim == 0:
        raise InvalidInputError(f"{name} must have a batch dimension, got a 0-d tensor (a single number).")
    return value


def nonfinite_places(value: Any, where: str = "") -> list[str]:
    """Where ``value`` holds NaN or infinity, as readable places ("entry 0 rows [1, 3]", "'samples' row 0").

    Looks through tensors, numpy arrays, dicts (string keys), lists, tuples and dataclasses, the containers ComfyUI's
    CONDITIONING, LATENT, IMAGE and MASK values and the pack's own embeddings, expressions and face parameters are
    made of; other objects (a ControlNet inside a conditioning) are not entered. Rows are the first dimension.
    """
    import dataclasses

    import numpy as np

    if isinstance(value, torch.Tensor):
        if not (value.is_floating_point() or value.is_complex()) or bool(torch.isfinite(value).all()):
            return []
        if value.ndim == 0:
            return [where or "the value"]
        rows = (~torch.isfinite(value)).reshape(value.shape[0], -1).any(dim=1).nonzero().flatten().tolist()
        return [_rows_text(where, rows)]
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "fc" or bool(np.isfinite(value).all()):
            return []
        if value.ndim == 0:
            return [where or "the value"]
        rows = np.flatnonzero((~np.isfinite(value)).reshape(value.shape[0], -1).any(axis=1)).tolist()
        return [_rows_text(where, rows)]
    prefix = f"{where}, " if where else ""
    if isinstance(value, dict):
        return [p for key, item in value.items() if isinstance(key, str)
                for p in nonfinite_places(item, f"{prefix}'{key}'")]
    if isinstance(value, (list, tuple)):
        if all(_is_conditioning_entry(item) for item in value):   # ComfyUI's [[tensor, {options}], ...]
            return [p for index, (tensor, options) in enumerate(value)
                    for p in nonfinite_places(tensor, f"{prefix}entry {index}")
                    + nonfinite_places(options, f"{prefix}entry {index}")]
        return [p for index, item in enumerate(value) for p in nonfinite_places(item, f"{prefix}item {index}")]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [p for field in dataclasses.fields(value)
                for p in nonfinite_places(getattr(value, field.name), f"{prefix}{field.name}")]
    return []


def _is_conditioning_entry(item: Any) -> bool:
    return (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], torch.Tensor)
            and isinstance(item[1], dict))


def _rows_text(where: str, rows: list[int]) -> str:
    shown = rows if len(rows) <= 8 else rows[:8] + ["..."]
    label = f"row {rows[0]}" if len(rows) == 1 else f"rows {shown}"
    return f"{where} {label}" if where else label
