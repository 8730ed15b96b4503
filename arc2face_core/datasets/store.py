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

Records are checked line by line when read (``records``): a batch whose record is damaged counts as not done and is
made again, and is never joined into the manifest; a damaged manifest gives its whole batches their records back
and the rest is made again (``check_manifest``). A failed write (a full disk) removes its temporary file and says in
one line what was being written and how much space is left.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import shutil
import socket
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from ..errors import DamagedFileError, InvalidInputError, WriteFailedError
from .records import Line, check_batch, parse_lines, read_record, split_lines

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


def _size(count: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    return ""


def write_error(path: Path, size: int, exc: OSError) -> WriteFailedError:
    """One line saying what could not be written and what to do; on a full disk, how much space is left."""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        try:
            free = f"{_size(shutil.disk_usage(folder).free)} free"
        except OSError:
            free = "free space unknown"
        return WriteFailedError(f"the disk is full: writing {path} ({_size(size)}) failed with {free} on {folder}. "
                                "Free some space (or give another --out) and run the same command again: it goes on "
                                "where it stopped")
    return WriteFailedError(f"cannot write {path} ({exc.strerror or exc}). Make the folder writable (or give another "
                            "--out) and run the same command again: it goes on where it stopped")


def _written(path: Path, data: bytes) -> Path:
    """``data`` in ``path``'s temporary file (see ``temporary_name``); on any failure, no temporary file is left and
    an ``OSError`` becomes ``write_error``'s message."""
    tmp = temporary_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        return tmp
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise write_error(path, len(data), exc) from exc
        raise


def write_atomic(path: Path, data: bytes) -> None:
    tmp = _written(path, data)
    try:
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise write_error(path, len(data), exc) from exc


def publish(path: Path, data: bytes) -> bool:
    """Write ``path`` unless it exists; True when this call wrote it. Safe against concurrent writers."""
    if path.exists():
        return False
    tmp = _written(path, data)
    try:
        os.link(tmp, path)          # atomic, and fails when another writer got there first
        return True
    except FileExistsError:
        return False
    except OSError:                 # a filesystem without hard links: a rename, checked just before
        if path.exists():
            return False
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise write_error(path, len(data), exc) from exc
        return True
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def has_finished_batch(root: Path) -> bool:
    """Whether any batch of the dataset in ``root`` was recorded (its settings are then fixed for good)."""
    parts = root / PARTS_DIR
    return (root / MANIFEST_FILE).exists() or (parts.is_dir() and any(parts.glob("*.jsonl")))


def clear_unfinished(root: Path) -> None:
    """Remove what a start that recorded no batch left in ``root``: its settings, identities and PCA, the images
    of batches it never recorded and temporary files; other settings can then start there. Only names of the
    dataset layout are touched."""
    for name in (SETTINGS_FILE, IDENTITIES_FILE, PCA_FILE):
        (root / name).unlink(missing_ok=True)
    for path in root.glob(f".*{_TMP_MARK}*"):
        path.unlink(missing_ok=True)
    image = re.compile(r"\d+\.png")
    crops = root / CROP_DIR
    identity_folders = [p for base in (root, crops) if base.is_dir() for p in base.iterdir() if p.name.isdigit()]
    for folder in [root / PARTS_DIR, *identity_folders]:
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if image.fullmatch(path.name) or _TMP_MARK in path.name:
                path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):     # something else is in it: kept
            folder.rmdir()
    with contextlib.suppress(OSError):
        crops.rmdir()


def png_bytes(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


class DatasetStore:
    """The files of one dataset folder (see the module docstring)."""

    def __init__(self, root: Path, identities: int, images_per_id: int, batches: int, *, ids_per_batch: int) -> None:
        self.root = Path(root)
        self.identities, self.images_per_id, self.ids_per_batch = identities, images_per_id, ids_per_batch
        self.identity_digits = max(5, len(str(identities - 1)))
        self.image_digits = max(3, len(str(images_per_id - 1)))
        self.batch_digits = max(6, len(str(batches - 1)))
        self.batches = batches
        self.notes: list[str] = []     # damaged records found on the way: those batches are made again

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

    def batch_identities(self, batch: int) -> range:
        start = batch * self.ids_per_batch
        return range(start, min(start + self.ids_per_batch, self.identities))

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_FILE

    def part_path(self, batch: int) -> Path:
        return self.root / PARTS_DIR / f"{batch:0{self.batch_digits}d}.jsonl"

    def complete(self) -> bool:
        return self.manifest_path.is_file()

    # ---- records: read with every line checked (``records``) -----------------------------------------------------

    def _checked(self, lines: list[Line], batch: int, path: Path) -> list[dict]:
        return check_batch(lines, batch, self.batch_identities(batch), self.images_per_id, self.relative_file, path,
                           self.crop_relative_file)

    def read_batch(self, batch: int) -> Optional[list[dict]]:
        """The checked rows of a finished batch's record (None: no record); a damaged record raises, naming the file
        and the line."""
        path = self.part_path(batch)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        return self._checked(parse_lines(data, path), batch, path)

    def batch_done(self, batch: int) -> bool:
        """Whether the batch has a whole record; a damaged one does not count (the batch is made again)."""
        if self.complete():
            return True
        try:
            return self.read_batch(batch) is not None
        except DamagedFileError as exc:
            self._note(f"{exc}: batch {batch} is made again")
            return False

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def manifest_batches(self) -> tuple[dict[int, list[dict]], list[str]]:
        """manifest.jsonl's whole batches {batch: rows}, and what is wrong with the lines and batches that are not."""
        path = self.manifest_path
        lines, problems = split_lines(read_record(path), path)
        by_batch: dict[int, list[Line]] = {}
        for line in lines:
            by_batch.setdefault(line.row["batch"], []).append(line)
        notes = [str(problem) for problem in problems]
        notes += [f"{path}, line {by_batch[b][0].number}: batch {b}, but the dataset has {self.batches} batches"
                  for b in sorted(set(by_batch) - set(range(self.batches)))]
        whole = {}
        for batch in range(self.batches):
            try:
                whole[batch] = self._checked(by_batch.get(batch, []), batch, path)
            except DamagedFileError as exc:
                notes.append(f"{exc}: batch {batch} is made again")
        return whole, notes

    def check_manifest(self) -> list[str]:
        """A damaged manifest.jsonl (a line cut short or changed) reopens the dataset: its whole batches get their
        records back, the manifest goes, and the others are made again like any missing batch. What was wrong."""
        if not self.complete():
            return []
        whole, notes = self.manifest_batches()
        if notes:
            self.reopen(whole)
        return notes

    def reopen(self, keep: dict[int, list[dict]]) -> None:
        """Turn a complete dataset back into batch records: ``keep``'s batches get theirs (written before the
        manifest goes, so a kill in between loses nothing), every other batch counts as not done."""
        for batch, rows in sorted(keep.items()):
            self.finish_batch(batch, rows)
        self.manifest_path.unlink(missing_ok=True)

    def forget(self, batches: Iterable[int]) -> None:
        """Make ``batches`` count as not done (their images were found damaged), reopening a complete dataset."""
        batches = set(batches)
        if not batches:
            return
        if self.complete():
            whole, _ = self.manifest_batches()
            self.reopen({b: rows for b, rows in whole.items() if b not in batches})
        else:
            for batch in batches:
                self.part_path(batch).unlink(missing_ok=True)

    def recorded_rows(self, batches: Iterable[int]) -> dict[int, list[dict]]:
        """The checked rows of those of ``batches`` that are done, from the manifest or the batch records."""
        if self.complete():
            whole, _ = self.manifest_batches()
            return {b: whole[b] for b in batches if b in whole}
        found = {}
        for batch in batches:
            try:
                rows = self.read_batch(batch)
            except DamagedFileError:
                continue
            if rows is not None:
                found[batch] = rows
        return found

    # ---- writing ---------------------------------------------------------------------------------------------------

    def begin_batch(self, identities: Iterable[int]) -> None:
        """Remove what a killed run left half-written in these identities' folders (its temporary files)."""
        for identity in identities:
            name = f"{identity:0{self.identity_digits}d}"
            for folder in (self.root / name, self.root / CROP_DIR / name):
                if folder.is_dir():
                    for leftover in folder.glob(f".*{_TMP_MARK}*"):
                        leftover.unlink(missing_ok=True)

    def write_image(self, identity: int, image: int, pixels: np.ndarray) -> str:
        """Write one image; its PNG's SHA-256 (hex), which the manifest keeps for ``--verify``."""
        data = png_bytes(pixels)
        write_atomic(self.image_path(identity, image), data)
        return hashlib.sha256(data).hexdigest()

    def write_crop(self, identity: int, image: int, pixels: np.ndarray) -> str:
        """Write one aligned face crop; its PNG's SHA-256 (hex), kept as the row's ``crop_sha256``."""
        data = png_bytes(pixels)
        write_atomic(self.root / self.crop_relative_file(identity, image), data)
        return hashlib.sha256(data).hexdigest()

    def finish_batch(self, batch: int, rows: list[dict]) -> None:
        write_atomic(self.part_path(batch), "".join(json.dumps(row) + "\n" for row in rows).encode())

    def done_batches(self) -> int:
        if self.complete():
            return self.batches
        parts = self.root / PARTS_DIR
        return sum(1 for _ in parts.glob("*.jsonl")) if parts.is_dir() else 0

    def assemble_manifest(self) -> bool:
        """Join the batch records into manifest.jsonl once all exist and are whole; True when the manifest is there.
        A damaged record is left to be made again (a note says which)."""
        if self.complete():
            return True
        chunks = []
        for batch in range(self.batches):
            path = self.part_path(batch)
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                return self.complete()      # not done yet, or another process just assembled it
            try:
                self._checked(parse_lines(data, path), batch, path)
            except DamagedFileError as exc:
                self._note(f"{exc}: batch {batch} is made again by the next run that covers it")
                return False
            chunks.append(data)
        write_atomic(self.manifest_path, b"".join(chunks))
        for batch in range(self.batches):
            self.part_path(batch).unlink(missing_ok=True)
        try:
            (self.root / PARTS_DIR).rmdir()
        except OSError:                     # another process's temporary file: it removes it when it is done
            pass
        return True

    def read_rows(self, batches: Optional[Iterable[int]] = None) -> list[dict]:
        """Manifest rows, checked: of the whole dataset from manifest.jsonl when complete (a damaged line raises,
        naming it), else of the finished batches."""
        if self.complete():
            path = self.manifest_path
            try:
                return [line.row for line in parse_lines(read_record(path), path)]
            except DamagedFileError as exc:
                raise DamagedFileError(f"{exc}. Run the same command again: it makes the damaged batches again")
        wanted = range(self.batches) if batches is None else batches
        return [row for rows in self.recorded_rows(wanted).values() for row in rows]
