"""Expression vectors for the Expression Adapter, made by hand instead of by SMIRK.

A vector has 55 numbers, in SMIRK's order:
  - ``[0:50]``  FLAME expression coefficients (PCA weights of FLAME's expression basis; SMIRK's outputs are mostly
    within about ±3, 0 = neutral);
  - ``[50:52]`` eyelids, ``(left, right)`` in FLAME's naming (``l_eyelid``, ``r_eyelid``: the person's own left and
    right eye), 0..1: 0 leaves the eye as the expression shapes it, 1 closes it;
  - ``[52:55]`` jaw pose, axis-angle in radians: ``[52]`` opens the mouth (>= 0, SMIRK passes it through a ReLU),
    ``[53:55]`` move the jaw sideways/forwards (SMIRK clamps them to ±0.2; always 0 here).

Every vector made here is what SMIRK's output activations would leave unchanged (eyelids in 0..1, mouth opening >= 0,
sideways jaw 0), so a hand-made expression never leaves the range the adapter was trained on. FLAME's expression
coefficients are PCA weights in units of each component's standard deviation: SMIRK reads real faces within about ±3;
above ``COEFFICIENT_WARN`` a face is exaggerated (a warning), above ``COEFFICIENT_LIMIT`` it is no face the adapter
was trained on (an error; 1e30 used to give black images, 1e39 overflowed float32 to inf).
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any, Sequence, Union

import numpy as np
import torch

from ..errors import InvalidInputError
from ..validation import MAX_BATCH, finite_number, positive_int

log = logging.getLogger(__name__)

N_EXPRESSION = 50
N_EYELID = 2
N_JAW = 3
EXPRESSION_DIM = N_EXPRESSION + N_EYELID + N_JAW   # 55
EYELID_SLICE = slice(N_EXPRESSION, N_EXPRESSION + N_EYELID)
JAW_SLICE = slice(N_EXPRESSION + N_EYELID, EXPRESSION_DIM)
JAW_OPEN_INDEX = N_EXPRESSION + N_EYELID          # 52

COEFFICIENT_WARN = 4.0     # |coefficient| in PCA standard deviations above which a face is exaggerated
COEFFICIENT_LIMIT = 10.0   # ... above which it is refused
JAW_SIDE_LIMIT = 0.2       # SMIRK clamps the sideways/forward jaw rotations to ±0.2 rad
_RANGE_SLACK = 1e-6        # float rounding of values SMIRK clamped exactly to a bound

# FLAME's jaw opening in radians: ~0.05-0.1 lips parted, ~0.2 talking / a smile showing teeth, ~0.3-0.4 a wide-open
# mouth (surprise, laughing), above ~0.5 a yawn or scream; a human jaw rarely opens past ~0.6 rad (35 degrees).
JAW_OPEN_TYPICAL = 0.3

Coefficients = Union[str, Sequence[float], None]


def neutral(n: int = 1) -> torch.Tensor:
    """``n`` neutral expressions: zeros, ``[n, 55]`` float32 (also the adapter's negative branch)."""
    return torch.zeros(positive_int(n, "n", upper=MAX_BATCH), EXPRESSION_DIM, dtype=torch.float32)


def _number(value: Any, position: int, text: str | None = None) -> float:
    shown = text if text is not None else repr(value)
    if isinstance(value, bool):
        raise InvalidInputError(f"Expression coefficient {position} is {shown}, not a number.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"Expression coefficient {position} is {shown}, not a number.") from None
    if not math.isfinite(number):
        raise InvalidInputError(f"Expression coefficient {position} is {shown}; it must be a finite number.")
    if abs(number) > COEFFICIENT_LIMIT:
        raise InvalidInputError(
            f"Expression coefficient {position} is {shown}. FLAME expression coefficients are in units of the PCA "
            f"standard deviation (real faces stay within about ±3): use values from -{COEFFICIENT_LIMIT:g} to "
            f"{COEFFICIENT_LIMIT:g}, better within ±{COEFFICIENT_WARN:g}.")
    return number


def _warn_if_exaggerated(values: torch.Tensor, name: str) -> None:
    largest = float(values.abs().max()) if values.numel() else 0.0
    if largest > COEFFICIENT_WARN:
        log.warning("Arc2Face: %s has an expression coefficient of magnitude %.3g: more than %g PCA standard "
                    "deviations, an exaggerated face (real faces stay within about ±3).", name, largest,
                    COEFFICIENT_WARN)


def _coefficient_tokens(text: str) -> list[str]:
    """The numbers of a coefficients string, separated by commas/semicolons and/or spaces. An empty field between
    two separators is refused: read as nothing, it would move every later coefficient one place forward."""
    if not text.strip():
        return []
    tokens: list[str] = []
    for field in re.split(r"[,;]", text):
        if not field.strip():
            raise InvalidInputError(
                f"Expression coefficient {len(tokens) + 1} is empty in {text!r} (two separators in a row, or one at "
                "the start or end): write 0 for a coefficient you want to leave at neutral, so the later ones keep "
                "their places.")
        tokens.extend(field.split())
    return tokens


def parse_coefficients(coefficients: Coefficients) -> list[float]:
    """Up to 50 FLAME expression coefficients → a list of exactly 50 floats (missing ones are 0).

    ``coefficients`` is a sequence of numbers, or a string of numbers separated by commas and/or spaces
    (``"1.5, -0.3 0 2"``); an empty string or ``None`` means all zeros. Positions in errors count from 1.
    """
    if coefficients is None:
        values: list[float] = []
    elif isinstance(coefficients, str):
        tokens = _coefficient_tokens(coefficients)
        values = [_number(token, i + 1, repr(token)) for i, token in enumerate(tokens)]
    else:
        if isinstance(coefficients, torch.Tensor):
            coefficients = coefficients.detach().cpu().reshape(-1).tolist()
        elif isinstance(coefficients, np.ndarray):
            coefficients = coefficients.reshape(-1).tolist()
        try:
            items = list(coefficients)
        except TypeError:
            raise InvalidInputError(
                f"Expression coefficients must be a list of numbers or a comma/space-separated string, got "
                f"{type(coefficients).__name__}.") from None
        values = [_number(v, i + 1) for i, v in enumerate(items)]
    if len(values) > N_EXPRESSION:
        raise InvalidInputError(
            f"{len(values)} expression coefficients given; FLAME's expression space used by the adapter has "
            f"{N_EXPRESSION}. Remove the ones from position {N_EXPRESSION + 1} on.")
    _warn_if_exaggerated(torch.tensor(values, dtype=torch.float64), "the expression")
    return values + [0.0] * (N_EXPRESSION - len(values))


def _eyelid_pair(eyelids: Any) -> tuple[float, float]:
    if isinstance(eyelids, (int, float, np.integer, np.floating)) and not isinstance(eyelids, bool):
        pair: tuple[Any, Any] = (eyelids, eyelids)
    elif isinstance(eyelids, (tuple, list)) and len(eyelids) == 2:
        pair = (eyelids[0], eyelids[1])
    else:
        raise InvalidInputError(f"eyelids must be one number or a pair (left, right), got {eyelids!r}.")
    out = []
    for side, value in zip(("left", "right"), pair):
        value = finite_number(value, f"The {side} eyelid value")
        out.append(min(max(value, 0.0), 1.0))   # SMIRK's clamp
    return out[0], out[1]


def make_expression(jaw_open: float = 0.0, eyelids: float | tuple[float, float] = 0.0,
                    coefficients: Coefficients = None) -> torch.Tensor:
    """One hand-made expression, ``[1, 55]`` float32.

    ``jaw_open``: FLAME jaw opening in radians (negative values become 0, as SMIRK's ReLU does; about
    ``JAW_OPEN_TYPICAL`` = 0.3 is a clearly open mouth). ``eyelids``: one value for both eyes or ``(left, right)``,
    clamped to 0..1 (1 = closed). ``coefficients``: up to 50 FLAME expression coefficients (see
    ``parse_coefficients``). The sideways jaw components are 0.
    """
    jaw_open = finite_number(jaw_open, "jaw_open (radians)")
    left, right = _eyelid_pair(eyelids)
    vector = parse_coefficients(coefficients) + [left, right, max(float(jaw_open), 0.0), 0.0, 0.0]
    return torch.tensor([vector], dtype=torch.float32)


def validate_expression(x: Any, name: str = "expression") -> torch.Tensor:
    """Check an expression batch: ``[N, 55]`` (or one ``[55]``), floats, finite, N >= 1 → float32 ``[N, 55]``."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise InvalidInputError(f"{name} must be a tensor of shape [N, {EXPRESSION_DIM}], got a {type(x).__name__}.")
    if x.ndim == 1:
        x = x.unsqueeze(0)
    if x.ndim != 2 or x.shape[1] != EXPRESSION_DIM:
        raise InvalidInputError(
            f"{name} must have shape [N, {EXPRESSION_DIM}] (50 FLAME expression coefficients, 2 eyelids, 3 jaw), "
            f"got {tuple(x.shape)}.")
    if x.shape[0] == 0:
        raise InvalidInputError(f"{name} is an empty batch.")
    if not x.is_floating_point():
        raise InvalidInputError(f"{name} must hold floats, got dtype {x.dtype}.")
    if not torch.isfinite(x).all():
        rows = sorted({int(i) for i in torch.nonzero(~torch.isfinite(x))[:, 0]})
        raise InvalidInputError(f"{name} contains NaN or infinite values (rows {[r + 1 for r in rows[:5]]}).")
    return x.detach().to(dtype=torch.float32)


def _first_outside(values: torch.Tensor, low: float, high: float) -> tuple[int, int, float] | None:
    """(row, column, value) of the first value outside [low, high] (with float slack), or None."""
    outside = ((values < low - _RANGE_SLACK) | (values > high + _RANGE_SLACK)).nonzero()
    if not len(outside):
        return None
    row, column = (int(i) for i in outside[0])
    return row, column, float(values[row, column])


def check_expression_ranges(x: torch.Tensor, name: str = "expression") -> None:
    """Refuse finite [N, 55] expressions outside what the adapter was trained on (SMIRK's outputs): coefficients
    beyond ±COEFFICIENT_LIMIT standard deviations, eyelids outside 0..1, a negative mouth opening, sideways jaw beyond
    ±0.2 rad. Warns for coefficients beyond ±COEFFICIENT_WARN."""
    where = f"{name} (row {{row}} of {x.shape[0]})"
    found = _first_outside(x[:, :N_EXPRESSION].double(), -COEFFICIENT_LIMIT, COEFFICIENT_LIMIT)
    if found:
        row, column, value = found
        raise InvalidInputError(
            f"{where.format(row=row + 1)} has expression coefficient {column + 1} = {value:.6g}. FLAME expression "
            f"coefficients are in units of the PCA standard deviation (real faces stay within about ±3); the "
            f"adapter takes values from -{COEFFICIENT_LIMIT:g} to {COEFFICIENT_LIMIT:g}.")
    checks = ((EYELID_SLICE, 0.0, 1.0, "eyelid value", "0 (open) to 1 (closed), as SMIRK clamps them"),
              (slice(JAW_OPEN_INDEX, JAW_OPEN_INDEX + 1), 0.0, math.inf, "jaw opening value",
               "at least 0 rad (SMIRK passes it through a ReLU)"),
              (slice(JAW_OPEN_INDEX + 1, EXPRESSION_DIM), -JAW_SIDE_LIMIT, JAW_SIDE_LIMIT, "sideways jaw value",
               f"from -{JAW_SIDE_LIMIT:g} to {JAW_SIDE_LIMIT:g} rad, as SMIRK clamps them"))
    for columns, low, high, what, allowed in checks:
        found = _first_outside(x[:, columns].double(), low, high)
        if found:
            row, _, value = found
            article = "an" if what[0] in "aeiou" else "a"
            raise InvalidInputError(f"{where.format(row=row + 1)} has {article} {what} of {value:.6g}; it must be "
                                    f"{allowed}.")
    _warn_if_exaggerated(x[:, :N_EXPRESSION], name)


def blend_expressions(a: Any, b: Any, weight: float) -> torch.Tensor:
    """``(1 - weight) * a + weight * b``: weight 0 gives ``a``, 1 gives ``b``.

    ``a`` and ``b`` are ``[N, 55]`` batches; a batch of 1 is paired with every row of the other (numpy broadcasting),
    otherwise both must have the same N.
    """
    weight = finite_number(weight, "The blend weight", lower=0.0, upper=1.0)
    a = validate_expression(a, "the first expression")
    b = validate_expression(b, "the second expression")
    if a.shape[0] != b.shape[0] and 1 not in (a.shape[0], b.shape[0]):
        raise InvalidInputError(
            f"Cannot blend a batch of {a.shape[0]} expressions with a batch of {b.shape[0]}: give batches of the "
            "same size, or a single expression on one side.")
    w = float(weight)
    return ((1.0 - w) * a + w * b).to(torch.float32)
