"""Read the pack's RecordIO with NVIDIA DALI's own MXNet reader, on the CPU.

DALI's wheel is about 0.4 GB (1.1 GB installed), so it is not part of the test environment; run this with an
interpreter that has it (numpy and Pillow are all the pack's side needs here), from the repo root or anywhere::

    python -m venv /tmp/dali && /tmp/dali/bin/pip install nvidia-dali-cuda120 pillow numpy
    /tmp/dali/bin/python tests/dali_check.py

It writes a small dataset folder (112x112 crops of smooth random textures, one identity with every image dropped),
packs it in both layouts and reads them with ``fn.readers.mxnet`` + ``fn.decoders.image(device="cpu")`` in index
order. Checked: the ``dali`` layout gives every kept image once, with its class as label, in the documented order,
pixels within JPEG tolerance of the source; the ``insightface`` layout is refused by DALI's decoder at its header
record (DALI reads every record the index lists), which is why the ``dali`` layout exists; a record cut into parts
at the magic number (a JPEG comment holding it) is joined and decoded. Prints one JSON line; exits 1 when a check
fails.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arc2face_core.datasets.pack import pack_dataset  # noqa: E402

IDENTITIES, PER_ID, DROPPED = 4, 3, {(1, 2), (2, 0), (2, 1), (2, 2)}


def texture(identity: int, image: int) -> np.ndarray:
    noise = np.random.default_rng(100 * identity + image).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(noise).filter(ImageFilter.GaussianBlur(3)))


def write_dataset(folder: Path) -> list[dict]:
    rows = []
    for i in range(IDENTITIES):
        for j in range(PER_ID):
            gone = (i, j) in DROPPED
            crop = None if gone else f"arcface112/{i:05d}/{j:03d}.png"
            if crop:
                (folder / crop).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(texture(i, j)).save(folder / crop)
            rows.append({"identity": i, "image": j, "file": None, "crop": crop, "dropped": gone, "attempt": 0,
                         "similarity": 0.5, "tries": [0.5]})
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def read_with_dali(folder: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=1, num_threads=1, device_id=None)
    def pipe():
        jpegs, labels = fn.readers.mxnet(path=str(folder / "train.rec"), index_path=str(folder / "train.idx"),
                                         random_shuffle=False, name="reader")
        return fn.decoders.image(jpegs, device="cpu", output_type=types.RGB), labels

    pipeline = pipe()
    pipeline.build()
    out = []
    for _ in range(pipeline.epoch_size("reader")):
        images, labels = pipeline.run()
        out.append((np.array(images[0]), np.array(labels[0])))
    return out


def magic_record_check(folder: Path) -> bool:
    """A JPEG whose comment holds the magic number at 4-byte aligned offsets of its record is cut into parts by the
    writer (as dmlc's is); DALI must join them again and decode the image."""
    import io
    import struct

    from arc2face_core.datasets.recordio import IndexedWriter, frame, pack_record

    pixels = texture(9, 9)
    magics = struct.pack("<I", 0xCED7230A) * 4
    for pad in range(4):                     # one of four comment offsets puts the magic on a word boundary
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=95, comment=b"x" * pad + magics)
        record = pack_record(3, 0, buffer.getvalue())
        if len(frame(record)) != len(record) + 8 + (-len(record) % 4):     # cut into parts: use this one
            break
    else:
        raise AssertionError("no comment offset put the magic number on a word boundary")
    folder.mkdir(parents=True)
    writer = IndexedWriter(folder / "train.rec", folder / "train.idx")
    writer.open()
    writer.write([record])
    writer.close()
    (image, label), = read_with_dali(folder)
    return float(label[0]) == 3.0 and float(np.abs(image.astype(int) - pixels.astype(int)).mean()) < 3.0


def main() -> int:
    import nvidia.dali

    checks: dict[str, object] = {"dali": nvidia.dali.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "faces"
        rows = write_dataset(folder)
        kept = [r for r in rows if not r["dropped"]]
        classes = {identity: label for label, identity in enumerate(sorted({r["identity"] for r in kept}))}
        pack_dataset(folder, Path(tmp) / "dali", layout="dali", quiet=True)
        pack_dataset(folder, Path(tmp) / "insightface", quiet=True)
        order = sorted(kept, key=lambda r: hashlib.sha256(
            f"arc2face-pack/v1/{r['identity']}/{r['image']}".encode()).digest())
        samples = read_with_dali(Path(tmp) / "dali")
        checks["dali_layout_images"] = len(samples) == len(kept)
        checks["dali_layout_labels"] = [float(label[0]) for _, label in samples] == [
            float(classes[r["identity"]]) for r in order]
        worst = max(float(np.abs(image.astype(int) - texture(r["identity"], r["image"]).astype(int)).mean())
                    for (image, _), r in zip(samples, order))
        checks["dali_layout_pixels_mean_abs_diff"] = round(worst, 3)
        try:
            read_with_dali(Path(tmp) / "insightface")
            checks["insightface_layout_refused_by_dali"] = False
        except RuntimeError as exc:
            checks["insightface_layout_refused_by_dali"] = "decod" in str(exc).lower() or "codec" in str(exc).lower()
        checks["record_in_parts_read_whole"] = magic_record_check(Path(tmp) / "parts")
    ok = all(v is True for k, v in checks.items() if k.startswith(("dali_layout_i", "dali_layout_l", "insight",
                                                                   "record_in")))
    ok = ok and checks["dali_layout_pixels_mean_abs_diff"] < 3.0
    print(json.dumps(dict(checks, ok=ok)))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
