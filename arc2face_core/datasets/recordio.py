"""MXNet's indexed RecordIO, written in pure Python: the ``train.rec`` / ``train.idx`` pair face-recognition trainers
read (insightface's ``arcface_torch`` through ``mx.recordio.MXIndexedRecordIO``, NVIDIA DALI's ``readers.mxnet``).

Framing (dmlc-core ``include/dmlc/recordio.h``, ``src/recordio.cc``): every record is written as
``magic, lrecord, data, padding`` with ``magic`` = 0xced7230a and ``lrecord`` = ``cflag << 29 | length`` (two
little-endian uint32), the data padded with zeros to a multiple of 4 bytes. Wherever the magic number occurs in the
data at a 4-byte aligned offset, the writer cuts the record there and drops those 4 bytes (the reader puts them back):
the parts get ``cflag`` 1 (first), 2 (middle) and 3 (last); a record in one part has ``cflag`` 0.

Payload (mxnet ``python/mxnet/recordio.py``, ``pack``): an ``IRHeader`` ``struct.pack('IfQQ', flag, label, id,
id2)`` (24 bytes), then, when the label is an array, ``flag`` float32 labels (and the header's ``label`` field 0),
then the data (here JPEG bytes, or nothing).

Index: one text line per record, ``key<TAB>byte offset of its magic in the .rec``.
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path
from typing import BinaryIO, Iterable, Optional, Sequence, Union

import numpy as np

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_LREC = struct.Struct("<II")                 # magic, lrecord
IR_HEADER = struct.Struct("<IfQQ")           # flag, label, id, id2 (mxnet's 'IfQQ': 24 bytes, no padding)
MAX_PART = (1 << 29) - 1                     # the largest length lrecord can hold
_INDEX_LINE = re.compile(rb"(0|[1-9][0-9]*)\t(0|[1-9][0-9]*)")   # as this writer writes them

Label = Union[float, Sequence[float]]


def frame(payload: bytes) -> bytes:
    """``payload`` as RecordIO bytes (see the module docstring: cut at aligned magic numbers, padded to 4 bytes)."""
    if len(payload) > MAX_PART:
        raise ValueError(f"a RecordIO record holds at most {MAX_PART} bytes, got {len(payload)}")
    aligned = len(payload) // 4 * 4
    parts, start = [], 0
    hit = payload.find(_MAGIC_BYTES, 0, aligned)
    while hit >= 0:
        if hit % 4 == 0:
            parts.append((1 if start == 0 else 2, payload[start:hit]))
            start = hit + 4
            hit = payload.find(_MAGIC_BYTES, start, aligned)
        else:
            hit = payload.find(_MAGIC_BYTES, hit + 1, aligned)
    parts.append((3 if start else 0, payload[start:]))
    out = bytearray()
    for cflag, data in parts:
        out += _LREC.pack(MAGIC, cflag << 29 | len(data)) + data + bytes(-len(data) % 4)
    return bytes(out)


def pack_record(label: Label, record_id: int, data: bytes = b"", id2: int = 0) -> bytes:
    """mxnet's ``recordio.pack(IRHeader(flag, label, record_id, id2), data)``: a number label goes in the header
    (flag 0); an array of labels follows it (flag = their count)."""
    if isinstance(label, (int, float, np.integer, np.floating)):
        return IR_HEADER.pack(0, float(label), record_id, id2) + data
    labels = np.asarray(label, dtype="<f4").ravel()
    return IR_HEADER.pack(labels.size, 0.0, record_id, id2) + labels.tobytes() + data


def record_end(handle: BinaryIO, offset: int, size: int) -> Optional[int]:
    """Where the record starting at ``offset`` ends (after its last part's padding), or None when the file holds
    no whole record there (a write cut short)."""
    position = offset
    while True:
        if position + _LREC.size > size:
            return None
        handle.seek(position)
        magic, lrec = _LREC.unpack(handle.read(_LREC.size))
        if magic != MAGIC:
            return None
        length = lrec & MAX_PART
        position += _LREC.size + length + (-length % 4)
        if position > size:
            return None
        if lrec >> 29 in (0, 3):
            return position


class IndexedWriter:
    """Appends records with consecutive keys from 0 to a ``.rec`` and its ``.idx``, resuming a cut-short write.

    The index is the commit log: a record's index line is written only after its bytes are flushed, so after a kill
    every indexed record is whole. ``open`` keeps the indexed records, cuts off what follows the last one (a record
    written but not indexed, a half index line) and returns how many records are kept."""

    def __init__(self, rec_path: Path, idx_path: Path) -> None:
        self.rec_path, self.idx_path = Path(rec_path), Path(idx_path)
        self.count = 0
        self._rec: Optional[BinaryIO] = None
        self._idx: Optional[BinaryIO] = None

    def open(self) -> int:
        offsets = self._indexed_offsets()
        end = 0
        if offsets and self.rec_path.is_file():
            size = self.rec_path.stat().st_size
            with open(self.rec_path, "rb") as handle:
                while offsets:
                    found = record_end(handle, offsets[-1], size)
                    if found is not None:
                        end = found
                        break
                    offsets.pop()
        else:
            offsets = []
        self.count = len(offsets)
        mode = "r+b" if self.count else "w+b"
        self._rec = open(self.rec_path, mode)
        self._rec.truncate(end)
        self._rec.seek(end)
        self._idx = open(self.idx_path, "r+b" if self.count else "w+b")
        self._idx.truncate(sum(len(f"{key}\t{offset}\n") for key, offset in enumerate(offsets)))
        self._idx.seek(0, os.SEEK_END)
        self._offset = end
        return self.count

    def _indexed_offsets(self) -> list[int]:
        """The offsets of the whole index lines that list keys 0, 1, 2... in order (the rest is discarded)."""
        if not self.idx_path.is_file():
            return []
        offsets = []
        for key, line in enumerate(self.idx_path.read_bytes().split(b"\n")[:-1]):   # the last piece: no newline
            match = _INDEX_LINE.fullmatch(line)
            if match is None or int(match.group(1)) != key or (offsets and int(match.group(2)) <= offsets[-1]):
                break
            offsets.append(int(match.group(2)))
        return offsets

    def write(self, payloads: Iterable[bytes]) -> None:
        """Append records (payloads as ``pack_record`` makes them) with the next keys; their index lines follow
        once their bytes are flushed."""
        assert self._rec is not None and self._idx is not None, "open() first"
        lines, chunks = [], []
        for payload in payloads:
            framed = frame(payload)
            lines.append(f"{self.count}\t{self._offset}\n")
            chunks.append(framed)
            self._offset += len(framed)
            self.count += 1
        self._rec.write(b"".join(chunks))
        self._rec.flush()
        self._idx.write("".join(lines).encode())
        self._idx.flush()

    def close(self) -> None:
        for handle in (self._rec, self._idx):
            if handle is not None:
                handle.close()
        self._rec = self._idx = None
