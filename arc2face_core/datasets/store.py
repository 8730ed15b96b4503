"""A dataset folder on disk: its layout, atomic writes, the per-batch records that make runs resumable, the manifest.

Layout (what face-recognition trainers read, one folder per identity)::

    DIR/dataset.json               the settings every run into DIR must share (config.DatasetConfig.settings)
    DIR/identities.safetensors     the identities, [N, 512] (identity.files)
    DIR/00000/000.png              image 0 of identity 0 (widths: at least 5 and 3 digits, more when needed)
    DIR/arcface112/00000/000.png   with --crop arcface: its aligned 112x112 face, the same layout one folder down
    DIR/manifest.jsonl             one JSON object per image, written when every batch is done
    DIR/.parts/000000.jsonl        while running: the manifest rows of each finished batch

Every file is written to a temporary name in its folder and renamed into place, so a killed run leaves whole files
or none. A batch counts as done only once its record in ``.parts`` exists, which is written after all its images; a
batch without one is made again from the start (same seeds, same files), which is why a restart has no duplicates
and misses nothing. Files meant for everyone (dataset.json, identities.safetensors) are published by hard link:
the first writer wins and later writers read what it wrote, also when shards start at once on shared storage.
When every batch is done, the records are joined in batch order into ``manifest.jsonl`` and ``.parts`` is removed;
two processes doing this at once write the same file.
"""

from __future__ import annotations

import io
import json
import os
import socket
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from ..errors import InvalidInputError

SETTINGS_FILE = "dataset.json"
IDENTITIES_FILE = "identities.safetensors"
PCA_FILE = "identity_pca.safetensors"
MANIFEST_FILE = "manifest.jsonl"
PARTS_DIR = ".parts"
CROP_DIR = "arcface112"
_TMP_MARK = ".tmp-"


def temporary_name(path: Path) -> Path:
    """A name beside ``path`` no other process uses (host and process id), hidden from image readers."""
    return path.with_name(f".{path.name}{_TMP_MARK}{socket.gethostname()}-{os.getpid()}")


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    tmp.write_bytes(data)
    os.replace(tmp, path)


def publish(path: Path, data: bytes) -> bool:
    """Write ``path`` unless it exists; True when this call wrote it. Safe against concurrent writers."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    tmp.write_bytes(data)
    try:
        os.link(tmp, path)          # atomic, and fails when another writer got there first
        return True
    except FileExistsError:
        return False
    except OSError:                 # a filesystem without hard links: a rename, checked just before
        if path.exists():
            return False
        os.replace(tmp, path)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def png_bytes(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


class DatasetStore:
    """The files of one dataset folder (see the module docstring)."""

    def __init__(self, root: Path, identities: int, images_per_id: int, batches: int) -> None:
        self.root = Path(root)
        self.identity_digits = max(5, len(str(identities - 1)))
        self.image_digits = max(3, len(str(images_per_id - 1)))
        self.batch_digits = max(6, len(str(batches - 1)))
        self.batches = batches

    @staticmethod
    def check_root(root: Path) -> None:
        if root.exists() and not root.is_dir():
            raise InvalidInputError(f"--out {root} is a file, not a folder")

    def relative_file(self, identity: int, image: int) -> str:
        return f"{identity:0{self.identity_digits}d}/{image:0{self.image_digits}d}.png"

    def crop_relative_file(self, identity: int, image: int) -> str:
        return f"{CROP_DIR}/{self.relative_file(identity, image)}"

    def image_path(self, identity: int, image: int) -> Path:
        return self.root / self.relative_file(identity, image)

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_FILE

    def part_path(self, batch: int) -> Path:
        return self.root / PARTS_DIR / f"{batch:0{self.batch_digits}d}.jsonl"

    def complete(self) -> bool:
        return self.manifest_path.is_file()

    def batch_done(self, batch: int) -> bool:
        return self.complete() or self.part_path(batch).is_file()

    def begin_batch(self, identities: Iterable[int]) -> None:
        """Remove what a killed run left half-written in these identities' folders (its temporary files)."""
        for identity in identities:
            name = f"{identity:0{self.identity_digits}d}"
            for folder in (self.root / name, self.root / CROP_DIR / name):
                if folder.is_dir():
                    for leftover in folder.glob(f".*{_TMP_MARK}*"):
                        leftover.unlink(missing_ok=True)

    def write_image(self, identity: int, image: int, pixels: np.ndarray) -> str:
        relative = self.relative_file(identity, image)
        write_atomic(self.root / relative, png_bytes(pixels))
        return relative

    def write_crop(self, identity: int, image: int, pixels: np.ndarray) -> str:
        relative = self.crop_relative_file(identity, image)
        write_atomic(self.root / relative, png_bytes(pixels))
        return relative

    def finish_batch(self, batch: int, rows: list[dict]) -> None:
        write_atomic(self.part_path(batch), "".join(json.dumps(row) + "\n" for row in rows).encode())

    def done_batches(self) -> int:
        if self.complete():
            return self.batches
        parts = self.root / PARTS_DIR
        return sum(1 for _ in parts.glob("*.jsonl")) if parts.is_dir() else 0

    def assemble_manifest(self) -> bool:
        """Join the batch records into manifest.jsonl once all exist; True when the manifest is there."""
        if self.complete():
            return True
        chunks = []
        for batch in range(self.batches):
            try:
                chunks.append(self.part_path(batch).read_bytes())
            except FileNotFoundError:
                return self.complete()      # not done yet, or another process just assembled it
        write_atomic(self.manifest_path, b"".join(chunks))
        for batch in range(self.batches):
            self.part_path(batch).unlink(missing_ok=True)
        try:
            (self.root / PARTS_DIR).rmdir()
        except OSError:                     # another process's temporary file: it removes it when it is done
            pass
        return True

    def read_rows(self, batches: Optional[Iterable[int]] = None) -> list[dict]:
        """Manifest rows: of the whole dataset from manifest.jsonl when complete, else of the finished batches."""
        if self.complete():
            texts = [self.manifest_path.read_text()]
        else:
            wanted = range(self.batches) if batches is None else batches
            texts = [self.part_path(b).read_text() for b in wanted if self.part_path(b).is_file()]
        return [json.loads(line) for text in texts for line in text.splitlines() if line.strip()]
