"""Identity arithmetic on ArcFace embeddings (paper §4.4, supplement B). Every function returns unit rows.

ARCFACE_EMBEDS is a float32 tensor [N, 512] whose rows are L2-normalised; these helpers accept any finite,
non-zero rows and normalise them first, so a slightly off input is never a silent failure. Norms are taken after
dividing each row by its largest magnitude: a float32 norm overflows to inf for elements above about 1.8e19 (its
square above 3.4e38), and ``x / inf`` would silently turn a large but valid row into a zero vector.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from ..errors import InvalidInputError
from ..validation import finite_number, whole_number

ARCFACE_DIM = 512
AVERAGE_METHODS = ("mean", "median", "trimmed_mean")
BLEND_METHODS = ("slerp", "linear")
TRIM_PROPORTION = 0.2           # trimmed_mean cuts this share of values from each end, per dimension
_PARALLEL_EPS = 1e-6            # below this angle (radians) slerp and linear coincide
MAX_RANDOM_IDENTITIES = 1_000_000   # 2 GB of float32 vectors: beyond any dataset, and a typo's guard
MAX_INTERPOLATION_STEPS = 100_000


def validate_embeds(embeds, name: str = "embeds") -> torch.Tensor:
    """Check shape [N,512] (a single [512] row is accepted), finiteness and non-zero rows; return float32."""
    if not isinstance(embeds, torch.Tensor):
        raise InvalidInputError(f"{name} must be a torch tensor of ArcFace embeddings [N, 512], got {type(embeds).__name__}")
    if embeds.ndim == 1:
        embeds = embeds.unsqueeze(0)
    if embeds.ndim != 2 or embeds.shape[1] != ARCFACE_DIM:
        hint = " (that looks like a CONDITIONING, not ArcFace embeddings)" if embeds.ndim == 3 else ""
        raise InvalidInputError(f"{name} must have shape [N, {ARCFACE_DIM}], got {tuple(embeds.shape)}{hint}")
    if embeds.shape[0] == 0:
        raise InvalidInputError(f"{name} is an empty batch: no embeddings to use")
    if not embeds.is_floating_point():
        raise InvalidInputError(f"{name} must be floating point, got {embeds.dtype}")
    bad = (~torch.isfinite(embeds)).any(dim=1).nonzero().flatten().tolist()   # in the given dtype
    if bad:
        raise InvalidInputError(f"{name} rows {[i + 1 for i in bad]} contain NaN or infinite values")
    peak = embeds.abs().amax(dim=1, keepdim=True)
    zero = (_safe_norms(embeds, peak) < 1e-6).flatten().nonzero().flatten().tolist()
    if zero:
        raise InvalidInputError(f"{name} rows {[i + 1 for i in zero]} are zero vectors: they carry no identity")
    too_big = peak > torch.finfo(torch.float32).max
    if too_big.any():   # e.g. float64 rows beyond float32's range: keep their direction, which is all that is used
        embeds = torch.where(too_big, embeds / peak, embeds)
    return embeds.float()


def _safe_norms(rows: torch.Tensor, peak: torch.Tensor | None = None) -> torch.Tensor:
    """[N, 1] L2 norms that cannot overflow: each row is divided by its largest magnitude first (0 for zero rows)."""
    peak = rows.abs().amax(dim=1, keepdim=True) if peak is None else peak
    safe_peak = torch.where(peak > 0, peak, torch.ones_like(peak))
    return (rows / safe_peak).norm(dim=1, keepdim=True) * peak


# Below this norm the squares inside a float32 norm lose precision (their sum nears the smallest normal float).
_SMALLEST_SAFE_NORM = 1e-18


def unit_rows(rows: torch.Tensor) -> torch.Tensor:
    """Each finite, non-zero row divided by its L2 norm, overflow-safely.

    A row whose plain norm is finite is divided by it exactly as the reference does (``x / ||x||``, bit for bit);
    only a row whose norm overflows (elements above about 1e19) or underflows has its largest magnitude divided out
    first, so it keeps its direction instead of becoming a zero row.
    """
    norms = rows.norm(dim=1, keepdim=True)
    plain = torch.isfinite(norms) & (norms > _SMALLEST_SAFE_NORM)
    if bool(plain.all()):
        return rows / norms
    scaled = rows / rows.abs().amax(dim=1, keepdim=True)
    return torch.where(plain, rows / norms, scaled / scaled.norm(dim=1, keepdim=True))


def normalize(embeds: torch.Tensor) -> torch.Tensor:
    """Validated, L2-normalised float32 rows (also for rows too large for a plain float32 norm)."""
    return unit_rows(validate_embeds(embeds))


def _renormalize(rows: torch.Tensor, what: str) -> torch.Tensor:
    norms = rows.norm(dim=1, keepdim=True)
    if (norms < 1e-6).any():
        raise InvalidInputError(f"{what} cancels out to a zero vector (the inputs point in opposite directions); "
                                "use another weight or method")
    return rows / norms


def _as_weights(weight: float | Sequence[float] | torch.Tensor) -> torch.Tensor:
    if isinstance(weight, torch.Tensor):
        w = weight.detach().to("cpu", torch.float32).flatten()
    elif isinstance(weight, (list, tuple)):
        w = torch.tensor([finite_number(v, "a blend weight", lower=0.0, upper=1.0) for v in weight])
    else:
        w = torch.tensor([finite_number(weight, "the blend weight", lower=0.0, upper=1.0)])
    if w.numel() == 0:
        raise InvalidInputError("blend weight list is empty")
    if not torch.isfinite(w).all() or (w < 0).any() or (w > 1).any():
        raise InvalidInputError(f"blend weights must be in [0, 1], got {w.tolist()}")
    return w


def _broadcast(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    sizes = {a.shape[0], b.shape[0], w.shape[0]} - {1}
    if len(sizes) > 1:
        raise InvalidInputError(f"cannot pair batches of {a.shape[0]} and {b.shape[0]} embeddings with "
                                f"{w.shape[0]} weights: each must be 1 or the same size")
    n = sizes.pop() if sizes else 1
    return a.expand(n, -1), b.expand(n, -1), w.expand(n).unsqueeze(1)


def blend(embeds_a: torch.Tensor, embeds_b: torch.Tensor, weight: float | Sequence[float] | torch.Tensor = 0.5,
          method: str = "slerp") -> torch.Tensor:
    """Mix identity a and b; ``weight`` is b's share (0 → a, 1 → b).

    Batches broadcast like numpy: a [Na,512], b [Nb,512] and weights [Nw] pair row by row where each size is 1 or N.
    ``slerp`` walks the great circle between the unit vectors (constant angular speed); ``linear`` mixes the unit
    vectors and re-normalises, the blend of the paper's Fig. 10.
    """
    if method not in BLEND_METHODS:
        raise InvalidInputError(f"unknown blend method {method!r}; choose one of {BLEND_METHODS}")
    a, b, w = _broadcast(normalize(embeds_a), normalize(embeds_b), _as_weights(weight))
    if method == "linear":
        return _renormalize((1 - w) * a + w * b, "the linear blend")
    cos = (a * b).sum(dim=1, keepdim=True).clamp(-1.0, 1.0)
    omega = torch.arccos(cos)
    sin = torch.sin(omega)
    if (math.pi - omega < 1e-4).any():
        raise InvalidInputError("slerp between opposite embeddings is undefined (any great circle joins them)")
    parallel = omega < _PARALLEL_EPS
    safe_sin = torch.where(parallel, torch.ones_like(sin), sin)
    coef_a = torch.where(parallel, 1 - w, torch.sin((1 - w) * omega) / safe_sin)
    coef_b = torch.where(parallel, w, torch.sin(w * omega) / safe_sin)
    return _renormalize(coef_a * a + coef_b * b, "the slerp blend")


def interpolation_weights(steps: int) -> torch.Tensor:
    """``steps`` evenly spaced weights from 0 to 1 inclusive (one weight 0.5 when steps is 1)."""
    steps = whole_number(steps, "steps", lower=1, upper=MAX_INTERPOLATION_STEPS)
    return torch.tensor([0.5]) if steps == 1 else torch.linspace(0.0, 1.0, steps)


def average(embeds: torch.Tensor, method: str = "mean") -> torch.Tensor:
    """One identity from several photos of the same person → [1, 512] (paper Fig. 13: more photos, higher fidelity).

    ``mean``: normalise each row, average, re-normalise (the paper's recipe). ``median``: per-dimension median of the
    normalised rows. ``trimmed_mean``: per dimension, drop the lowest and highest 20% of values, then average (robust
    to one bad photo in five). Results are re-normalised.
    """
    if method not in AVERAGE_METHODS:
        raise InvalidInputError(f"unknown average method {method!r}; choose one of {AVERAGE_METHODS}")
    rows = normalize(embeds)
    if method == "mean":
        centre = rows.mean(dim=0, keepdim=True)
    elif method == "median":
        centre = torch.quantile(rows, 0.5, dim=0, keepdim=True)
    else:
        cut = int(TRIM_PROPORTION * rows.shape[0])
        kept = rows.sort(dim=0).values[cut: rows.shape[0] - cut]
        centre = kept.mean(dim=0, keepdim=True)
    return _renormalize(centre, f"the {method} of these embeddings")


def random_identities(count: int, seed: int) -> torch.Tensor:
    """``count`` seeded random unit vectors: the simple stand-in for the paper's PCA sampler of synthetic identities.

    Drawn on the CPU from ``torch.Generator().manual_seed(seed)``, so a seed gives the same people everywhere.
    """
    count = whole_number(count, "count", lower=1, upper=MAX_RANDOM_IDENTITIES)
    seed = whole_number(seed, "seed", lower=0, upper=2 ** 64 - 1)
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randn(count, ARCFACE_DIM, generator=gen, dtype=torch.float32)
    return rows / rows.norm(dim=1, keepdim=True)


def cosine_similarity(embeds_a: torch.Tensor, embeds_b: torch.Tensor) -> torch.Tensor:
    """[Na, Nb] cosine similarities between identities (1 = same direction)."""
    return normalize(embeds_a) @ normalize(embeds_b).T
