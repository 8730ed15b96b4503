"""Per-image seeds of a dataset, and the noise and identity jitter each seed stands for.

Every image of a dataset has its own seed, a hash of (dataset seed, identity, image, attempt)::

    text = f"arc2face-dataset/v1/{purpose}/{dataset_seed}/{identity}/{image}/{attempt}"
    seed = int.from_bytes(hashlib.sha256(text.encode("ascii")).digest()[:8], "big") >> 11

``purpose`` is ``noise`` for the seed stored in the manifest and ``jitter`` for the image's identity jitter (see
``sampling.jitter_identity``); identity and image are 0-based indices, attempt 0 is the first try and every redraw
(``--min-similarity``) takes the next attempt. Shifting the 64-bit prefix right by 11 keeps 53 bits, so a seed is
exact in JSON and in ComfyUI's web UI (JavaScript numbers), where a user may paste it into a KSampler.

The image's initial noise is ``torch.randn((1, C, H/f, W/f), generator=torch.Generator("cpu").manual_seed(seed))``,
float32: the tensor ComfyUI's stock KSampler draws for a latent batch of one with that seed. In the LCM mode, which
adds noise after every step but the last, that noise is the next ``steps - 1`` draws of the same shape from the same
generator: what ``generate --scheduler lcm --seed SEED`` draws for one image (diffusers' LCM pipeline with that
generator). So any image can be made again alone, from its manifest row.
"""

from __future__ import annotations

import hashlib
from typing import Optional

import torch

from ..diffusers_backend.pipeline import initial_noise
from ..errors import InvalidInputError

SEED_SCHEME = "arc2face-dataset/v1"
SEED_BITS = 53
PURPOSES = ("noise", "jitter")


def _check_index(name: str, value: int, top: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or (top is not None and value >= top):
        limit = f" below {top}" if top is not None else ""
        raise InvalidInputError(f"{name} must be a whole number >= 0{limit}, got {value!r}")


def image_seed(dataset_seed: int, identity: int, image: int, attempt: int = 0, purpose: str = "noise") -> int:
    """The seed of image ``image`` of identity ``identity`` at try ``attempt`` (see the module docstring)."""
    _check_index("the dataset seed", dataset_seed, 2 ** 64)
    for name, value in (("identity", identity), ("image", image), ("attempt", attempt)):
        _check_index(name, value)
    if purpose not in PURPOSES:
        raise InvalidInputError(f"unknown seed purpose {purpose!r}; one of {PURPOSES}")
    text = f"{SEED_SCHEME}/{purpose}/{dataset_seed}/{identity}/{image}/{attempt}"
    return int.from_bytes(hashlib.sha256(text.encode("ascii")).digest()[:8], "big") >> (64 - SEED_BITS)


def image_noise(seed: int, channels: int, latent_height: int, latent_width: int,
                steps: Optional[int] = None) -> torch.Tensor:
    """[1, C, h, w] float32 on the CPU: what the stock KSampler draws for a batch of one with ``seed``; with
    ``steps`` (LCM), [1, steps, C, h, w]: that draw, then the noise added between steps (see the module docstring)."""
    return initial_noise(1, channels, latent_height, latent_width, seed, steps)
