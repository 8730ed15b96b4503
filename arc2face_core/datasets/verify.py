"""``dataset --verify``: every image of the recorded batches read back, and the batches with a damaged one made again.

A plain run trusts a batch once its record exists (``store``); a file damaged afterwards (a copy cut short, a disk
error, an edit) would stay. ``--verify`` reads each kept image of the batches in this run's scope: the file must be
there, match the SHA-256 its manifest row keeps (rows written before the hash was recorded have none), decode as a
whole PNG, and have the dataset's size and RGB pixels; with ``--crop arcface`` the same for each 112x112 crop. A batch with any damaged image loses its record and is made
again, which rewrites its files exactly as they were made the first time.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Iterable, Optional

from .config import CROP_SIZE
from .records import FILE_HASHES
from .store import DatasetStore


def image_problem(path: Path, digest: Optional[str], width: int, height: int) -> Optional[str]:
    """What is wrong with one kept PNG file, expected of ``width`` x ``height`` with SHA-256 ``digest`` (None: not
    recorded); None when nothing is."""
    from PIL import Image

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return "the file is missing"
    except OSError as exc:
        return f"the file cannot be read ({exc.strerror or exc})"
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()                # decodes every row: a file cut short fails here
            kind, size, mode = image.format, image.size, image.mode
    except (OSError, SyntaxError, ValueError) as exc:
        return f"not a whole PNG ({exc})"
    if kind != "PNG" or mode != "RGB" or size != (width, height):
        return f"a {kind} of {size[0]}x{size[1]} {mode} pixels where the dataset has {width}x{height} RGB PNGs"
    if digest is not None and hashlib.sha256(data).hexdigest() != digest:
        return "a whole PNG, but not the image recorded (its SHA-256 differs)"
    return None


def damaged_batches(store: DatasetStore, batches: Iterable[int], width: int,
                    height: int) -> tuple[int, dict[int, str]]:
    """How many of ``batches`` are recorded, and those with a damaged image: {batch: 'file: what is wrong'} (its
    first damaged file)."""
    found = {}
    recorded = store.recorded_rows(batches)
    for batch, rows in recorded.items():
        for row in rows:
            problem = _row_problem(store.root, row, width, height)
            if problem is not None:
                found[batch] = problem
                break
    return len(recorded), found


def _row_problem(root: Path, row: dict, width: int, height: int) -> Optional[str]:
    """'file: what is wrong' for the first damaged file of one row (its image, then its crop), else None."""
    sizes = {"file": (width, height), "crop": (CROP_SIZE, CROP_SIZE)}
    for name, digest in FILE_HASHES:
        size = sizes[name]
        if row.get(name) is None:
            continue
        problem = image_problem(root / row[name], row.get(digest), *size)
        if problem is not None:
            return f"{root / row[name]}: {problem}"
    return None
