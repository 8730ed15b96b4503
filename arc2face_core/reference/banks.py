"""The reference side of the Reference Adapter: the reference latent, which reference and identity make each bank,
and the tokens the write pass stores (one bank per identity, every transformer block).

The reference code encodes the aligned photo (``vae.encode(x).latent_dist.sample() * 0.18215``), runs a clean copy of
the UNet on it once at timestep 0 with the identity conditioning, and keeps each transformer block's ``norm1`` output.
Images of one identity share that identity's bank.
"""

from __future__ import annotations

from typing import Any, Hashable, Iterable

import torch

from ..batching import LATENT_CHANNELS, plural
from ..errors import InvalidInputError

MIN_LATENT_SIZE = 8   # latent cells (64 pixels): the UNet halves the size three times


def check_reference_latent(samples: Any, what: str = "reference") -> torch.Tensor:
    """A reference latent batch [R, 4, h, w]: floating point, finite, SD1.5's 4 channels, at least 8x8 cells."""
    if not isinstance(samples, torch.Tensor):
        raise InvalidInputError(f"the {what} must be a LATENT (from VAE Encode), got {type(samples).__name__}")
    if samples.ndim != 4 or samples.shape[0] == 0:
        raise InvalidInputError(f"the {what} latent must have shape [batch, {LATENT_CHANNELS}, height/8, width/8], "
                                f"got {list(samples.shape)}: encode the aligned photo with VAE Encode")
    if samples.shape[1] != LATENT_CHANNELS:
        raise InvalidInputError(f"the {what} latent has {samples.shape[1]} channels; Arc2Face's SD1.5 UNet takes "
                                f"{LATENT_CHANNELS}: encode the photo with SD1.5's VAE")
    if min(samples.shape[2:]) < MIN_LATENT_SIZE:
        raise InvalidInputError(f"the {what} latent is {samples.shape[3]}x{samples.shape[2]} cells "
                                f"({samples.shape[3] * 8}x{samples.shape[2] * 8} pixels); it must be at least "
                                f"{MIN_LATENT_SIZE}x{MIN_LATENT_SIZE} (64x64 pixels). Face Align makes 512x512")
    if not samples.is_floating_point():
        raise InvalidInputError(f"the {what} latent must be floating point, got {samples.dtype}")
    bad = (~torch.isfinite(samples)).flatten(1).any(1).nonzero().flatten().tolist()
    if bad:
        raise InvalidInputError(f"the {what} latent rows {[i + 1 for i in bad]} contain NaN or infinite values")
    return samples


def bank_sources(references: int, identities: int) -> list[tuple[int, int]]:
    """(reference row, conditioning row) of each bank: one reference for every identity, or one per identity."""
    count = max(references, identities)
    if references not in (1, count) or identities not in (1, count):
        raise InvalidInputError(
            f"{plural(references, 'reference')} for {plural(identities, 'identity', 'identities')}: give 1 reference "
            f"(for every identity) or {identities} (one per identity, in the order of the positive conditioning)")
    return [(i if references > 1 else 0, i if identities > 1 else 0) for i in range(count)]


class ReferenceBanks(torch.nn.Module):
    """The stored self-attention inputs: {block key: [banks, tokens, channels]}, as parameters so that a memory
    manager moves them with the model (they never train)."""

    def __init__(self, stored: dict[Hashable, torch.Tensor], latent_size: tuple[int, int]) -> None:
        super().__init__()
        if not stored:
            raise InvalidInputError("the write pass stored nothing: the model has no transformer blocks that the "
                                    "reference can reach")
        counts = {t.shape[0] for t in stored.values()}
        if len(counts) != 1:
            raise InvalidInputError(f"the blocks stored different numbers of banks {sorted(counts)}")
        self.index = {key: i for i, key in enumerate(stored)}
        self.tokens = torch.nn.ParameterList(torch.nn.Parameter(t.detach(), requires_grad=False)
                                             for t in stored.values())
        self.count = counts.pop()
        self.latent_size = tuple(latent_size)   # (h, w) of the reference latent, for messages

    def __contains__(self, key: Hashable) -> bool:
        return key in self.index

    def __getitem__(self, key: Hashable) -> torch.Tensor:
        return self.tokens[self.index[key]]

    def keys(self) -> Iterable[Hashable]:
        return self.index.keys()


class BankRecorder:
    """Collects each transformer block's ``norm1`` output during the write pass, keyed by block."""

    def __init__(self) -> None:
        self.stored: dict[Hashable, torch.Tensor] = {}

    def record(self, key: Hashable, tokens: torch.Tensor) -> None:
        if key in self.stored:
            raise InvalidInputError(f"the write pass reached block {key!r} twice; one forward pass per reference")
        self.stored[key] = tokens.detach()

    def banks(self, latent_size: tuple[int, int], device: torch.device | str | None = None) -> ReferenceBanks:
        stored = {k: (v.to(device) if device is not None else v) for k, v in self.stored.items()}
        return ReferenceBanks(stored, latent_size)
