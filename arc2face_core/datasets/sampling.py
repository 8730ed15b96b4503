"""Synthetic identities: the paper's uniqueness rule over seeded proposals, and per-image variation around them.

Uniqueness (paper section 4.2: identities kept apart by a pairwise ArcFace similarity below 0.3): candidates come in
blocks of ``CANDIDATE_BLOCK`` rows from a seeded generator and are taken greedily in order; a candidate is kept only
if its cosine similarity to every identity kept before it is below the threshold. Blocks are compared with the kept
identities by matrix products (in chunks, to bound memory) and with each other through the block's Gram matrix, so
100,000 identities take seconds to a minute on a CPU. The block size is fixed, so asking for more identities with the
same seed keeps the first ones: ``unique_identities(n + m, s)[:n] == unique_identities(n, s)``.

Within-identity variation is the pack's own addition, inspired by the paper's call for "sufficient intra-class
variance" (it does not say how it got it): each image may get its own vector near the identity,
``normalize(identity + strength * g)`` with ``g ~ N(0, I / 512)`` (so ``|g|`` is about 1 and the expected cosine to
the identity about ``1 / sqrt(1 + strength**2)``), turned back along the great circle to the identity where its cosine
falls below ``floor``. ``g`` is drawn from the image's ``jitter`` seed (``seeds.image_seed``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ..errors import InvalidInputError
from ..identity.embeddings import ARCFACE_DIM, unit_rows

UNIQUE_THRESHOLD = 0.3          # the paper's pairwise similarity bound between synthetic identities
CANDIDATE_BLOCK = 4096          # candidates drawn (and compared) at a time; fixed, so results do not depend on count
KEPT_CHUNK = 8192               # kept identities compared with a block at a time (4096 x 8192 floats = 128 MiB)
MAX_IDENTITIES = 10_000_000
GIVE_UP_FACTOR = 50             # stop after drawing this many candidates per wanted identity (plus one block)
DEFAULT_JITTER_FLOOR = 0.7

Proposal = Callable[[torch.Generator, int], torch.Tensor]   # (generator, n) -> [n, 512] float32 rows, any norm
Closeness = Callable[[torch.Tensor], torch.Tensor]   # unit rows [B, 512] -> [B]: each one's largest cosine to a set


def random_directions(generator: torch.Generator, count: int) -> torch.Tensor:
    """Uniformly random directions: standard normal rows (normalised by the caller)."""
    return torch.randn(count, ARCFACE_DIM, generator=generator, dtype=torch.float32)


@dataclass(frozen=True)
class SampledIdentities:
    """The kept identities and what it took to find them."""

    embeds: torch.Tensor        # [count, 512] float32 unit rows
    candidates: int             # proposals drawn
    rejected: int               # proposals refused (before the last kept one), the excluded ones included
    max_similarity: float       # the largest cosine between two kept identities (-1.0 for a single one)
    excluded: int = 0           # proposals refused for their closeness to the excluded set (before the last kept one)
    exclude_max_similarity: Optional[float] = None   # the kept identities' largest cosine to the excluded set


def check_threshold(threshold: float, name: str = "the identity threshold") -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold) \
            or not 0 < threshold <= 1:
        raise InvalidInputError(f"{name} must be a cosine similarity in (0, 1], got {threshold!r} (the paper uses "
                                f"{UNIQUE_THRESHOLD})")
    return float(threshold)


def _check_count(count: int) -> None:
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_IDENTITIES:
        raise InvalidInputError(f"the number of identities must be a whole number from 1 to {MAX_IDENTITIES:,}, got "
                                f"{count!r}")


def _proposed_block(propose: Proposal, generator: torch.Generator) -> torch.Tensor:
    block = propose(generator, CANDIDATE_BLOCK)
    if not isinstance(block, torch.Tensor) or tuple(block.shape) != (CANDIDATE_BLOCK, ARCFACE_DIM):
        got = list(block.shape) if isinstance(block, torch.Tensor) else type(block).__name__
        raise InvalidInputError(f"an identity proposal must give [{CANDIDATE_BLOCK}, {ARCFACE_DIM}] rows, got {got}")
    block = block.float()
    if not torch.isfinite(block).all() or (block.abs().amax(dim=1) == 0).any():
        raise InvalidInputError("an identity proposal gave NaN, infinite or zero rows")
    return unit_rows(block)


def _max_against(block: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """[B]: each candidate's largest cosine to the kept identities (-inf when none is kept)."""
    best = torch.full((block.shape[0],), -math.inf, device=block.device)
    for start in range(0, kept.shape[0], KEPT_CHUNK):
        best = torch.maximum(best, (block @ kept[start:start + KEPT_CHUNK].T).max(dim=1).values)
    return best


def _greedy_within(gram: torch.Tensor, ok: torch.Tensor, threshold: float) -> torch.Tensor:
    """Refuse, in order, each candidate too close to an earlier candidate of the block that is still kept."""
    conflict = torch.triu(gram >= threshold, diagonal=1)          # [i, j]: i < j and too close
    ok = ok.clone()
    for j in conflict.any(dim=0).nonzero().flatten().tolist():    # only the columns with a conflict need a loop
        if ok[j] and ok[:j][conflict[:j, j]].any():
            ok[j] = False
    return ok


def unique_identities(count: int, seed: int, threshold: float = UNIQUE_THRESHOLD,
                      propose: Proposal = random_directions, device: str | torch.device = "cpu",
                      exclude: Optional[Closeness] = None, exclude_threshold: float = UNIQUE_THRESHOLD
                      ) -> SampledIdentities:
    """``count`` unit identities, pairwise cosine below ``threshold``, from ``propose`` seeded with ``seed``.

    The proposals are always drawn on the CPU (the same stream everywhere); ``device`` runs the comparisons (a GPU
    makes 100,000 identities a matter of seconds). With ``exclude`` (``exclusion.ExcludedSet.closest``), a proposal
    whose cosine to the excluded set reaches ``exclude_threshold`` is refused before the uniqueness rule, and the next
    proposals take its place."""
    _check_count(count)
    threshold = check_threshold(threshold)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 64:
        raise InvalidInputError(f"the identity seed must be a whole number from 0 to 2**64-1, got {seed!r}")
    generator = torch.Generator("cpu").manual_seed(seed)
    kept = torch.empty(count, ARCFACE_DIM, device=device)
    filled, drawn, rejected, max_similarity = 0, 0, 0, -1.0
    excluded, exclude_max = 0, -math.inf
    limit = count * GIVE_UP_FACTOR + CANDIDATE_BLOCK
    while filled < count:
        if drawn >= limit:
            near = (f" ({excluded:,} of them were too close to the excluded identities: raise --exclude-threshold "
                    "or sample farther from them)") if excluded else ""
            raise InvalidInputError(
                f"only {filled} of {count} identities have pairwise similarity below {threshold} after {drawn:,} "
                f"candidates{near}: the proposals are too close together. Ask for fewer identities, raise the "
                "threshold or use a sampler with more spread (more PCA components).")
        block = _proposed_block(propose, generator).to(device)
        drawn += block.shape[0]
        closest = _max_against(block, kept[:filled])
        allowed = closest < threshold
        if exclude is not None:
            outside = exclude(block)
            allowed &= outside < exclude_threshold
        gram = block @ block.T
        ok = _greedy_within(gram.cpu(), allowed.cpu(), threshold)
        taken = ok.nonzero().flatten()[:count - filled].to(device)
        if taken.numel():
            last = int(taken[-1])
            rejected += int((~ok[:last + 1]).sum())
            if exclude is not None:
                excluded += int((outside[:last + 1] >= exclude_threshold).sum())
                exclude_max = max(exclude_max, outside[taken].max().item())
            inner = gram[taken][:, taken]
            pairs = torch.triu(torch.ones_like(inner, dtype=torch.bool), diagonal=1)
            inner_max = inner[pairs].max().item() if taken.numel() > 1 else -math.inf
            max_similarity = max(max_similarity, closest[taken].max().item(), inner_max)
            kept[filled:filled + taken.numel()] = block[taken]
            filled += taken.numel()
        else:
            rejected += block.shape[0]
            if exclude is not None:
                excluded += int((outside >= exclude_threshold).sum())
    return SampledIdentities(kept.cpu(), drawn, rejected, float(max_similarity), excluded,
                             float(exclude_max) if exclude is not None else None)


def check_jitter(strength: float, floor: float) -> tuple[float, float]:
    for name, value, low, high in (("the identity jitter", strength, 0.0, 10.0),
                                   ("the identity jitter floor", floor, 0.0, 1.0)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not low <= value <= high:
            raise InvalidInputError(f"{name} must be a number from {low} to {high}, got {value!r}")
    return float(strength), float(floor)


def jitter_identity(identity: torch.Tensor, strength: float, floor: float, seed: int) -> torch.Tensor:
    """One image's vector near the unit ``identity`` [512] (see the module docstring); the identity itself when
    ``strength`` is 0."""
    strength, floor = check_jitter(strength, floor)
    identity = identity.float() / identity.float().norm()
    if strength == 0:
        return identity
    g = torch.randn(ARCFACE_DIM, generator=torch.Generator("cpu").manual_seed(seed), dtype=torch.float32)
    g = g / math.sqrt(ARCFACE_DIM)
    vector = identity + strength * g
    vector = vector / vector.norm()
    cosine = float(vector @ identity)
    if cosine < floor:   # back along the great circle through the identity, to exactly the floor
        tangent = vector - cosine * identity
        if tangent.norm() < 1e-6:            # (practically never) straight opposite: any perpendicular will do
            tangent = g - float(g @ identity) * identity
        tangent = tangent / tangent.norm()
        vector = floor * identity + math.sqrt(1.0 - floor * floor) * tangent
    return vector
