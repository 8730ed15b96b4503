"""``pack``: a finished dataset folder as insightface's RecordIO training set (``train.rec``, ``train.idx``,
``property``), written by ``recordio``; resumable, and a finished pack is left alone.

What is packed: the 112x112 ArcFace crops of the kept images (the manifest's ``crop`` files, written with
``--crop arcface``), which is what face-recognition trainers read; the full images only when asked
(``full_images``). Dropped images are never packed. Classes are 0..K-1: the identities with at least one packed image,
in identity order (``pack.json``'s ``classes[label]`` is the identity's index in ``identities.safetensors``).

Layouts:

* ``insightface`` (default), as ``recognition/arcface_mxnet/common/rec_builder.py`` (``RecBuilder``) writes it:
  record 0 is a header with no data whose labels are ``[first range record, number of records]`` (id 0, id2 1);
  records 1..n are the images (label: the class; JPEG at quality 95, as mxnet's ``pack_img`` defaults to); records
  n+1..n+K hold one class each, labels ``[its first image record, one past its last]``. ``property`` is
  ``K,height,width``. arcface_torch's ``MXFaceDataset`` reads images 1..header.label[0]-1.
* ``dali``: the image records alone, keys 0..n-1, in a seeded shuffled order: what insightface's
  ``recognition/arcface_torch/scripts/shuffle_rec.py`` writes and arcface_torch's README asks for before DALI.
  DALI's MXNet reader reads every record the index lists (the header and range records would reach its JPEG
  decoder) and shuffles only within a buffer.
  ``MXFaceDataset`` reads this layout too (a header without labels: every key is an image). The order: records
  sorted by ``sha256(f"arc2face-pack/v1/{identity}/{image}")``.

Resumable: the records go to hidden ``.partial`` files whose index is the commit log (``recordio.IndexedWriter``);
a rerun after a kill keeps the whole records, writes the rest and renames the files into place; the result equals an
uninterrupted pack byte for byte. ``pack.json`` is written last and says what was packed from which manifest.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from ..errors import InvalidInputError
from .progress import ProgressBar
from .recordio import IndexedWriter, pack_record
from .store import MANIFEST_FILE, write_atomic

REC_FILE, IDX_FILE, PROPERTY_FILE, PACK_FILE = "train.rec", "train.idx", "property", "pack.json"
PACK_FORMAT = "arc2face.recordio"
LAYOUTS = ("insightface", "dali")
JPEG_QUALITY = 95           # mxnet's pack_img default, which insightface's rec builders use
CHUNK = 1024                # records encoded and appended at a time (a kill loses at most this much work)
ENCODERS = min(8, os.cpu_count() or 1)


@dataclass(frozen=True)
class PackItem:
    identity: int
    image: int
    label: int
    file: str               # relative to the dataset folder


@dataclass(frozen=True)
class PackPlan:
    items: list[PackItem]   # in record order
    classes: list[int]      # identity of each label
    source: str             # "crops" or "full"
    layout: str
    manifest_sha256: str

    @property
    def what(self) -> dict:
        """What makes two packs the same (a partial pack is resumed only by the same)."""
        return {"format": PACK_FORMAT, "version": 1, "layout": self.layout, "source": self.source,
                "manifest_sha256": self.manifest_sha256, "jpeg_quality": JPEG_QUALITY}

    def record(self, width: int, height: int) -> dict:
        return dict(self.what, images=len(self.items), classes=len(self.classes), image_size=[height, width],
                    identity_of_class=self.classes)


def read_manifest(folder: Path) -> tuple[list[dict], str]:
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise InvalidInputError(f"{folder} has no {MANIFEST_FILE}: it is not a finished dataset. Run the dataset "
                                "command into it until every batch is done (it writes the manifest at the end).")
    data = path.read_bytes()
    try:
        rows = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
    except ValueError as exc:
        raise InvalidInputError(f"{path} is not a dataset manifest ({exc})") from exc
    return rows, hashlib.sha256(data).hexdigest()


def check_pack_request(makes_crops: bool, full_images: bool) -> None:
    """Refuse ``dataset --format rec`` up front when the run will make nothing to pack by default."""
    if not makes_crops and not full_images:
        raise InvalidInputError("--format rec packs the 112x112 ArcFace crops trainers read: make the dataset with "
                                "--crop arcface, or pass --pack-full-images to pack the full images as they are")


def _shuffle_key(item: PackItem) -> bytes:
    return hashlib.sha256(f"arc2face-pack/v1/{item.identity}/{item.image}".encode()).digest()


def plan_pack(folder: Path, layout: str = "insightface", full_images: bool = False) -> PackPlan:
    """Which files become which records (see the module docstring)."""
    if layout not in LAYOUTS:
        raise InvalidInputError(f"unknown RecordIO layout {layout!r}; one of {', '.join(LAYOUTS)}")
    rows, digest = read_manifest(folder)
    kept = sorted((r for r in rows if not r.get("dropped")), key=lambda r: (r["identity"], r["image"]))
    if not kept:
        raise InvalidInputError(f"{folder}: every image of the dataset was dropped; there is nothing to pack")
    key = "file" if full_images else "crop"
    missing = [r for r in kept if not r.get(key)]
    if not full_images and len(missing) == len(kept):
        raise InvalidInputError(f"{folder} holds no 112x112 crops (its manifest has no 'crop' files): trainers read "
                                "aligned 112x112 crops, so make the dataset with --crop arcface, or pack the full "
                                "images as they are with --full-images")
    if missing:
        row = missing[0]
        what = "full image (made with --no-keep-full?)" if full_images else "crop"
        raise InvalidInputError(f"{folder}: identity {row['identity']} image {row['image']} is kept but has no "
                                f"{what} in the manifest ({len(missing)} such images); pack the other kind, or make "
                                "the dataset again")
    classes = sorted({r["identity"] for r in kept})
    label_of = {identity: label for label, identity in enumerate(classes)}
    items = [PackItem(r["identity"], r["image"], label_of[r["identity"]], r[key]) for r in kept]
    if layout == "dali":
        items.sort(key=_shuffle_key)
    return PackPlan(items, classes, "full" if full_images else "crops", layout, digest)


def jpeg_bytes(path: Path, size: Optional[tuple[int, int]]) -> tuple[bytes, tuple[int, int]]:
    """The image at ``path`` as JPEG (quality 95, 4:2:0), and its (width, height); refused when it is not ``size``."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
    except OSError as exc:
        raise InvalidInputError(f"cannot read {path} ({exc}): the dataset folder is damaged") from exc
    if size is not None and rgb.size != size:
        raise InvalidInputError(f"{path} is {rgb.size[0]}x{rgb.size[1]}, the other images {size[0]}x{size[1]}: a "
                                "RecordIO training set holds images of one size")
    buffer = io.BytesIO()
    rgb.save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling="4:2:0")
    return buffer.getvalue(), rgb.size


def _records(plan: PackPlan, folder: Path, size: tuple[int, int], start: int) -> Iterator[list[bytes]]:
    """The payloads of records ``start``... in chunks of at most ``CHUNK``."""
    n, k = len(plan.items), len(plan.classes)
    specials: dict[int, bytes] = {}
    offset = 0
    if plan.layout == "insightface":
        offset = 1
        specials[0] = pack_record([n + 1, n + 1 + k], 0, id2=1)
        first: dict[int, int] = {}
        for index, item in enumerate(plan.items, start=1):
            first.setdefault(item.label, index)
        bounds = [first[label] for label in range(k)] + [n + 1]
        for label in range(k):
            specials[n + 1 + label] = pack_record([bounds[label], bounds[label + 1]], n + 1 + label)
    total = n + len(specials)

    def encode(key: int) -> bytes:
        if key in specials:
            return specials[key]
        item = plan.items[key - offset]
        data, _ = jpeg_bytes(folder / item.file, size)
        return pack_record(item.label, key, data)

    with ThreadPoolExecutor(ENCODERS, thread_name_prefix="arc2face-pack") as pool:
        for low in range(start, total, CHUNK):
            yield list(pool.map(encode, range(low, min(low + CHUNK, total))))


def _lock(out: Path):
    """An exclusive lock on the output folder's packing, or None when another process holds it (it finishes the
    same pack); released when the process ends, also by a kill."""
    handle = open(out / ".pack.lock", "a+b")
    try:
        import fcntl
    except ImportError:          # no fcntl (Windows): one packer at a time is then the user's business
        return handle
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


def pack_dataset(folder: Path, out: Optional[Path] = None, layout: str = "insightface", full_images: bool = False,
                 quiet: bool = False) -> dict:
    """Pack ``folder`` into ``out`` (default: the folder itself); returns pack.json's record."""
    folder = Path(folder)
    out = Path(out) if out is not None else folder
    plan = plan_pack(folder, layout, full_images)
    out.mkdir(parents=True, exist_ok=True)
    lock = _lock(out)
    if lock is None:
        _say(quiet, f"{out}: another process is packing this RecordIO set; it finishes it")
        return {}
    try:
        done = _finished(out, plan)
        if done is not None:
            _say(quiet, f"{out / REC_FILE}: already packed from this manifest")
            return done
        first = folder / plan.items[0].file
        size = jpeg_bytes(first, None)[1]
        writer = IndexedWriter(out / f".{REC_FILE}.partial", out / f".{IDX_FILE}.partial")
        (out / PACK_FILE).unlink(missing_ok=True)
        partial = out / f".{PACK_FILE}.partial"
        if not _same(partial, plan.what):         # another pack's leftovers: start afresh
            writer.idx_path.unlink(missing_ok=True)
            write_atomic(partial, json.dumps(plan.what).encode())
        start = writer.open()
        total = len(plan.items) + (1 + len(plan.classes) if layout == "insightface" else 0)
        progress = ProgressBar(total, "pack", quiet)
        progress.set(start)
        try:
            for payloads in _records(plan, folder, size, start):
                writer.write(payloads)
                progress.advance(len(payloads))
        finally:
            writer.close()
        record = plan.record(*size)
        os.replace(writer.rec_path, out / REC_FILE)
        os.replace(writer.idx_path, out / IDX_FILE)
        write_atomic(out / PROPERTY_FILE, f"{len(plan.classes)},{size[1]},{size[0]}\n".encode())
        write_atomic(out / PACK_FILE, json.dumps(record, indent=1).encode())
        partial.unlink(missing_ok=True)
        _say(quiet, f"packed {len(plan.items)} images of {len(plan.classes)} identities ({plan.source}, "
                    f"{size[0]}x{size[1]}, {layout} layout) into {out / REC_FILE}")
        return record
    finally:
        (out / ".pack.lock").unlink(missing_ok=True)   # still held: a packer that opens it now finds the pack done
        lock.close()


def _read_json(path: Path) -> Optional[dict]:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _same(path: Path, what: dict) -> bool:
    record = _read_json(path)
    return record is not None and all(record.get(key) == value for key, value in what.items())


def _finished(out: Path, plan: PackPlan) -> Optional[dict]:
    """pack.json's record when ``out`` holds this very pack, whole."""
    if not _same(out / PACK_FILE, plan.what):
        return None
    if not all((out / name).is_file() for name in (REC_FILE, IDX_FILE, PROPERTY_FILE)):
        return None
    return _read_json(out / PACK_FILE)


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, file=sys.stderr, flush=True)
