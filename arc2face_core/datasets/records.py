"""Reading a dataset's records (``.parts/*.jsonl``, ``manifest.jsonl``) with every line checked.

A record is one JSON object per line, one line per image (``generation`` lists the fields). A line cut short by a
kill, a full disk or an editor, or one that no longer describes its image, is *damaged*: the error names the file and
the line. A batch's record must hold exactly the images of its identities, in order, each naming its batch and its
file; a damaged batch is made again rather than trusted (``store``). Fields other runs add (other options, other
tools) are allowed; the fields checked here are the ones every row has.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional

from ..errors import DamagedFileError

# field: the types it may hold (bool is checked apart: JSON true is no integer here)
_INT = (int,)
_NUMBER_OR_NONE = (int, float, type(None))
REQUIRED_FIELDS: dict[str, tuple[type, ...]] = {
    "identity": _INT, "image": _INT, "file": (str, type(None)), "seed": _INT, "attempt": _INT,
    "similarity": _NUMBER_OR_NONE, "dropped": (bool,), "tries": (list,), "batch": _INT,
}
OPTIONAL_FIELDS: dict[str, tuple[type, ...]] = {
    "jitter_similarity": _NUMBER_OR_NONE, "sha256": (str,), "crop": (str, type(None)), "crop_sha256": (str,),
    "mode": (str,), "dropped_because": (str,),
}
# the files a row can name, each with the field keeping its PNG's SHA-256
FILE_HASHES = (("file", "sha256"), ("crop", "crop_sha256"))


@dataclass(frozen=True)
class Line:
    """One record line: its row, and where it was read (for messages)."""

    number: int         # 1-based
    row: dict


def damaged(path: Path, line: Optional[int], reason: str) -> DamagedFileError:
    where = f"{path}, line {line}" if line is not None else str(path)
    return DamagedFileError(f"{where}: {reason}")


def check_row(row: object, path: Path, number: int) -> dict:
    """``row`` when it has every field with a value of the right type; else the error naming file and line."""
    if not isinstance(row, dict):
        raise damaged(path, number, f"a record line must be a JSON object, got {type(row).__name__}")
    for name, types in (*REQUIRED_FIELDS.items(), *OPTIONAL_FIELDS.items()):
        if name not in row:
            if name in REQUIRED_FIELDS:
                raise damaged(path, number, f"the field {name!r} is missing")
            continue
        value = row[name]
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            raise damaged(path, number, f"{name} = {value!r} is not a {' or '.join(t.__name__ for t in types)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise damaged(path, number, f"{name} = {value!r} is not a finite number")
    for name in ("identity", "image", "seed", "attempt", "batch"):
        if row[name] < 0:
            raise damaged(path, number, f"{name} = {row[name]} is negative")
    if row["dropped"] != (row["file"] is None and row.get("crop") is None):
        raise damaged(path, number, "a kept image must name its file (or its crop) and a dropped one must not")
    if len(row["tries"]) != row["attempt"] + 1:
        raise damaged(path, number, f"attempt {row['attempt']} but {len(row['tries'])} tries")
    for _, name in FILE_HASHES:
        if name in row and (len(row[name]) != 64 or any(c not in "0123456789abcdef" for c in row[name])):
            raise damaged(path, number, f"{name} = {row[name]!r} is not a SHA-256 hex digest")
    return row


def split_lines(data: bytes, path: Path) -> tuple[list[Line], list[DamagedFileError]]:
    """Every line of a record file that reads as a row, and the error of each line that does not."""
    lines, problems = [], []
    texts = data.split(b"\n") if data else []
    for number, text in enumerate(texts, 1):
        if number == len(texts):
            if text:     # no newline at the end: the last write was cut short
                problems.append(damaged(path, number, "the file ends inside a line (it was cut short)"))
            break
        try:
            lines.append(Line(number, check_row(json.loads(text), path, number)))
        except ValueError as exc:   # also invalid UTF-8
            problems.append(damaged(path, number, f"not a JSON object ({exc})"))
        except DamagedFileError as exc:
            problems.append(exc)
    return lines, problems


def parse_lines(data: bytes, path: Path) -> list[Line]:
    """Every line of a record file, parsed and checked; a damaged one raises, naming ``path`` and the line."""
    lines, problems = split_lines(data, path)
    if problems:
        raise problems[0]
    return lines


def check_batch(lines: list[Line], batch: int, identities: Iterable[int], images_per_id: int,
                relative_file: Callable[[int, int], str], path: Path,
                crop_file: Optional[Callable[[int, int], str]] = None) -> list[dict]:
    """The rows of batch ``batch`` when ``lines`` are exactly its images in order (files and crops at their names);
    else the error."""
    expected = [(identity, image) for identity in identities for image in range(images_per_id)]
    for (identity, image), line in zip(expected, lines):
        row = line.row
        if (row["identity"], row["image"]) != (identity, image):
            raise damaged(path, line.number, f"identity {row['identity']} image {row['image']} where batch {batch} "
                                             f"has identity {identity} image {image}")
        if row["batch"] != batch:
            raise damaged(path, line.number, f"batch {row['batch']} in the record of batch {batch}")
        if row["file"] is not None and row["file"] != relative_file(identity, image):
            raise damaged(path, line.number, f"file {row['file']!r}, expected {relative_file(identity, image)!r}")
        if crop_file is not None and row.get("crop") is not None and row["crop"] != crop_file(identity, image):
            raise damaged(path, line.number, f"crop {row['crop']!r}, expected {crop_file(identity, image)!r}")
    if len(lines) != len(expected):
        last = lines[-1].number if lines else None
        raise damaged(path, last, f"{len(lines)} rows where batch {batch} has {len(expected)} images")
    return [line.row for line in lines]


def read_record(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise damaged(path, None, f"cannot be read ({exc.strerror or exc})") from exc
