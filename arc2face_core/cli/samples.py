"""Built-in example photos for ``--image``: a first run needs no photo of one's own."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# name -> (scikit-image loader, what it is); scikit-image ships these files in its wheel (no download).
SAMPLES = {"astronaut": ("astronaut", "scikit-image's sample photo (Eileen Collins, NASA, public domain)")}


def sample_photo(path: Path) -> np.ndarray | None:
    """uint8 RGB of a built-in sample when ``path`` is its bare name and no such file exists; else None."""
    name = str(path)
    if name not in SAMPLES or Path(path).exists():
        return None
    from skimage import data

    return np.ascontiguousarray(getattr(data, SAMPLES[name][0])()[..., :3])
