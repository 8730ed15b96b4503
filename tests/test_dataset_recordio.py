"""``pack``: a dataset folder as insightface's RecordIO (arc2face_core.datasets.recordio, .pack).

Independent route: ``read_records`` below is written from the format's definition (dmlc-core's recordio.h: magic
0xced7230a, ``lrecord = cflag << 29 | length``, 4-byte padding, parts joined by the magic; mxnet's recordio.py:
``IRHeader`` = ``struct 'IfQQ'`` flag/label/id/id2, ``flag`` float32 labels after it when flag > 0), walking the
file from its first byte, never calling the writer's code. The JPEG settings are checked against OpenCV's
``imencode(..., [IMWRITE_JPEG_QUALITY, 95])``, the call mxnet's ``pack_img`` makes; the trainer's view against
arcface_torch's ``MXFaceDataset`` logic (header record 0, images ``1 .. header.label[0] - 1``). The dataset folders
are written here in the documented layout: 112x112 crops (``arcface112/<identity>/<image>.png``, the manifest's
``crop``) cut from scikit-image's astronaut photo, real-world JPEG content.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from arc2face_core.cli.main import main as cli_main

MAGIC = 0xCED7230A


def read_records(rec: Path, idx: Path) -> tuple[dict[int, dict], list[tuple[int, int]]]:
    """Every record of the .rec walked from byte 0 (key from the index by offset), and the index lines in order."""
    index = [tuple(int(field) for field in line.split("\t")) for line in idx.read_text().splitlines()]
    key_at = {offset: key for key, offset in index}
    data = rec.read_bytes()
    records, position = {}, 0
    while position < len(data):
        start, payload = position, b""
        while True:
            magic, lrec = struct.unpack_from("<II", data, position)
            assert magic == MAGIC, f"no magic at byte {position}"
            cflag, length = lrec >> 29, lrec & ((1 << 29) - 1)
            payload += data[position + 8:position + 8 + length]
            padded = (length + 3) // 4 * 4
            assert data[position + 8 + length:position + 8 + padded] == bytes(padded - length)
            position += 8 + padded
            if cflag in (0, 3):
                break
            payload += struct.pack("<I", MAGIC)               # the part boundary stands for the magic number
        flag, label, record_id, id2 = struct.unpack_from("<IfQQ", payload, 0)
        labels = np.frombuffer(payload, "<f4", flag, 24) if flag else None
        records[key_at[start]] = {"flag": flag, "label": label, "id": record_id, "id2": id2, "labels": labels,
                                  "data": payload[24 + 4 * flag:]}
    assert len(records) == len(index)                         # every record indexed, every index line a record
    return records, index


def astronaut_crop(identity: int, image: int, size: int = 112) -> np.ndarray:
    from skimage import data

    photo = data.astronaut()
    y, x = 20 + 37 * identity, 60 + 23 * image
    return np.ascontiguousarray(photo[y:y + size, x:x + size])


def write_dataset(folder: Path, identities: int = 4, per_id: int = 3, dropped=((1, 2), (2, 0), (2, 1), (2, 2)),
                  crops: bool = True, full_size: int = 64) -> list[dict]:
    """A finished dataset folder: full images, crops under arcface112/, a manifest; ``dropped`` (identity, image)
    have no files (identity 2 loses every image)."""
    rows = []
    for i in range(identities):
        for j in range(per_id):
            gone = (i, j) in dropped
            row = {"identity": i, "image": j, "file": None, "crop": None, "seed": 1000 * i + j, "attempt": 0,
                   "similarity": -0.2 if gone else 0.5 + 0.01 * j, "dropped": gone, "tries": [0.5], "batch": i}
            if not gone:
                row["file"] = f"{i:05d}/{j:03d}.png"
                (folder / row["file"]).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(astronaut_crop(i, j, full_size)).save(folder / row["file"])
                if crops:
                    row["crop"] = f"arcface112/{i:05d}/{j:03d}.png"
                    (folder / row["crop"]).parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(astronaut_crop(i, j)).save(folder / row["crop"])
            rows.append(row)
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def decoded(jpeg: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))


def check_image(record: dict, source: Path) -> None:
    """The record's bytes are a JPEG of the source at quality 95 (OpenCV's tables, as mxnet's pack_img), 4:2:0."""
    import cv2

    jpeg = record["data"]
    assert jpeg[:2] == b"\xff\xd8" and jpeg[-2:] == b"\xff\xd9"
    pixels = np.asarray(Image.open(source).convert("RGB"))
    difference = np.abs(decoded(jpeg).astype(int) - pixels.astype(int))
    assert difference.mean() < 2.5 and difference.max() < 60, (difference.mean(), difference.max())
    ok, reference = cv2.imencode(".jpg", pixels[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    ours, theirs = Image.open(io.BytesIO(jpeg)), Image.open(io.BytesIO(reference.tobytes()))
    assert ours.quantization == theirs.quantization                         # the same quality-95 tables
    assert ours.layer == theirs.layer and [c[1:3] for c in ours.layer] == [(2, 2), (1, 1), (1, 1)]   # 4:2:0


@pytest.fixture()
def dataset(tmp_path) -> tuple[Path, list[dict]]:
    folder = tmp_path / "faces"
    return folder, write_dataset(folder)


def pack(*args: str) -> int:
    return cli_main(["pack", *map(str, args), "-q"])


def test_insightface_layout_reads_back(dataset):
    folder, rows = dataset
    assert pack(folder) == 0
    records, index = read_records(folder / "train.rec", folder / "train.idx")
    kept = [r for r in rows if not r["dropped"]]                       # 8 images; identity 2 has none
    classes = {0: 0, 1: 1, 3: 2}
    n, k = len(kept), len(classes)
    assert [key for key, _ in index] == list(range(n + 1 + k))
    header = records[0]
    assert (header["flag"], header["id"], header["id2"], header["data"]) == (2, 0, 1, b"")
    assert header["labels"].tolist() == [n + 1, n + 1 + k]
    for key, row in enumerate(kept, start=1):
        record = records[key]
        assert (record["flag"], record["label"], record["id"], record["id2"]) == (0, classes[row["identity"]], key, 0)
        check_image(record, folder / row["crop"])
    starts = {}
    for key, row in enumerate(kept, start=1):
        starts.setdefault(classes[row["identity"]], key)
    bounds = [starts[c] for c in range(k)] + [n + 1]
    for label in range(k):
        record = records[n + 1 + label]
        assert record["flag"] == 2 and record["data"] == b"" and record["id"] == n + 1 + label
        assert record["labels"].tolist() == [bounds[label], bounds[label + 1]]
    assert (folder / "property").read_text() == "3,112,112\n"
    info = json.loads((folder / "pack.json").read_text())
    assert info["identity_of_class"] == [0, 1, 3] and info["images"] == 8 and info["layout"] == "insightface"
    assert not list(folder.glob(".*partial")) and not (folder / ".pack.lock").exists()


def test_what_arcface_torch_reads(dataset):
    """MXFaceDataset: header = record 0; flag > 0, so the images are keys 1 .. label[0] - 1, label = header.label."""
    folder, rows = dataset
    assert pack(folder) == 0
    records, _ = read_records(folder / "train.rec", folder / "train.idx")
    header = records[0]
    assert header["flag"] > 0
    samples = [(records[key]["label"], decoded(records[key]["data"])) for key in range(1, int(header["labels"][0]))]
    kept = [r for r in rows if not r["dropped"]]
    assert [label for label, _ in samples] == [{0: 0, 1: 1, 3: 2}[r["identity"]] for r in kept]
    assert all(image.shape == (112, 112, 3) for _, image in samples)


def test_dali_layout_is_the_images_alone_in_the_documented_order(dataset):
    folder, rows = dataset
    assert pack(folder, "--layout", "dali") == 0
    records, index = read_records(folder / "train.rec", folder / "train.idx")
    kept = [r for r in rows if not r["dropped"]]
    order = sorted(kept, key=lambda r: hashlib.sha256(f"arc2face-pack/v1/{r['identity']}/{r['image']}".encode())
                   .digest())
    assert order != kept                                              # shuffled, not in identity order
    assert [key for key, _ in index] == list(range(len(kept)))
    offsets = [offset for _, offset in index]
    assert offsets == sorted(offsets) and offsets[0] == 0             # DALI sizes records by their offsets
    for key, row in enumerate(order):
        record = records[key]
        assert (record["flag"], record["label"], record["id"]) == (0, {0: 0, 1: 1, 3: 2}[row["identity"]], key)
        check_image(record, folder / row["crop"])
    assert (folder / "property").read_text() == "3,112,112\n"


def test_a_record_holding_the_magic_number_is_cut_into_parts(tmp_path):
    """Hand-worked from dmlc's WriteRecord: aligned magics at 0 and 8 cut the record; the one at 13 does not. The
    reader joins the parts again."""
    from arc2face_core.datasets.recordio import IndexedWriter, frame, pack_record

    m = struct.pack("<I", MAGIC)
    payload = m + b"xyzw" + m + b"q" + m + b"abcdefgh"         # magic at 0, 8 (aligned) and 13 (not)
    lrec = lambda cflag, length: struct.pack("<II", MAGIC, cflag << 29 | length)  # noqa: E731
    assert frame(payload) == lrec(1, 0) + lrec(2, 4) + b"xyzw" + lrec(3, 13) + b"q" + m + b"abcdefgh" + bytes(3)
    assert frame(b"abcd" + m) == lrec(1, 4) + b"abcd" + lrec(3, 0)    # a magic at the very end: an empty last part
    writer = IndexedWriter(tmp_path / "x.rec", tmp_path / "x.idx")
    writer.open()
    writer.write([pack_record(7, 0, b"1234" + payload), pack_record([2, 5], 1)])   # the magic aligned in the record
    writer.close()
    records, _ = read_records(tmp_path / "x.rec", tmp_path / "x.idx")
    assert (records[0]["label"], records[0]["data"]) == (7.0, b"1234" + payload)
    assert records[1]["labels"].tolist() == [2.0, 5.0] and records[1]["data"] == b""
    assert frame(b"abc") == lrec(0, 3) + b"abc\0"


def test_a_killed_pack_resumes_to_the_same_bytes(dataset, tmp_path, monkeypatch):
    from arc2face_core.datasets import pack as packing
    from arc2face_core.datasets.recordio import IndexedWriter

    folder, _ = dataset
    whole = tmp_path / "whole"
    monkeypatch.setattr(packing, "CHUNK", 3)
    assert pack(folder, "--out", whole) == 0
    real, calls = IndexedWriter.write, []

    def die_on_the_third_chunk(self, payloads):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real(self, payloads)

    monkeypatch.setattr(IndexedWriter, "write", die_on_the_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        pack(folder)
    monkeypatch.setattr(IndexedWriter, "write", real)
    partial_rec, partial_idx = folder / ".train.rec.partial", folder / ".train.idx.partial"
    assert len(partial_idx.read_text().splitlines()) == 6 and not (folder / "train.rec").exists()
    with open(partial_rec, "ab") as handle:                  # a record written but not indexed yet
        handle.write(struct.pack("<II", MAGIC, 40) + b"x" * 17)
    with open(partial_idx, "a") as handle:                   # a half index line
        handle.write("6\t9")
    assert pack(folder) == 0
    for name in ("train.rec", "train.idx", "property", "pack.json"):
        assert (folder / name).read_bytes() == (whole / name).read_bytes(), name
    before = {name: (folder / name).stat().st_mtime_ns for name in ("train.rec", "train.idx", "pack.json")}
    assert pack(folder) == 0                                  # finished: left alone
    assert {name: (folder / name).stat().st_mtime_ns for name in before} == before


def test_another_layouts_leftovers_are_not_resumed(dataset, tmp_path, monkeypatch):
    from arc2face_core.datasets import pack as packing
    from arc2face_core.datasets.recordio import IndexedWriter

    folder, _ = dataset
    monkeypatch.setattr(packing, "CHUNK", 3)
    assert pack(folder, "--out", tmp_path / "whole") == 0
    real = IndexedWriter.write
    monkeypatch.setattr(IndexedWriter, "write", lambda self, p: (_ for _ in ()).throw(KeyboardInterrupt)
                        if self.count >= 3 else real(self, p))
    with pytest.raises(KeyboardInterrupt):
        pack(folder, "--layout", "dali")
    monkeypatch.setattr(IndexedWriter, "write", real)
    assert pack(folder) == 0                                  # insightface now: the dali records are not kept
    assert (folder / "train.rec").read_bytes() == (tmp_path / "whole" / "train.rec").read_bytes()


def test_full_images_on_request(tmp_path):
    folder = tmp_path / "faces"
    rows = write_dataset(folder, crops=False)
    assert pack(folder, "--full-images") == 0
    records, _ = read_records(folder / "train.rec", folder / "train.idx")
    kept = [r for r in rows if not r["dropped"]]
    for key, row in enumerate(kept, start=1):
        check_image(records[key], folder / row["file"])
    assert (folder / "property").read_text() == "3,64,64\n"
    assert json.loads((folder / "pack.json").read_text())["source"] == "full"


@pytest.mark.parametrize("case, message", [
    ("no crops", "make the dataset with --crop arcface, or pack the full"),
    ("unfinished", "no manifest.jsonl: it is not a finished dataset"),
    ("sizes", "a RecordIO training set holds images of one size"),
    ("no full images", "identity 0 image 0 is kept but has no full image"),
])
def test_refusals(tmp_path, capsys, case, message):
    folder = tmp_path / "faces"
    rows = write_dataset(folder, crops=case != "no crops")
    extra = []
    if case == "unfinished":
        (folder / "manifest.jsonl").unlink()
    elif case == "sizes":
        Image.fromarray(astronaut_crop(3, 1, 100)).save(folder / rows[-2]["crop"])
    elif case == "no full images":
        for row in rows:
            row["file"] = None
        (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        extra = ["--full-images"]
    assert pack(folder, *extra) == 2
    assert message in capsys.readouterr().err
    assert not (folder / "train.rec").exists() and not (folder / "pack.json").exists()
