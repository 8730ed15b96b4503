"""Identities as files: one format for the command line, the dataset mode and the Save/Load Embeddings nodes.

A safetensors file holding ``embeddings``, float32 [N, 512] (unit rows), with string metadata ``format`` =
``arc2face.identities``, ``version`` = ``1`` and ``source``: JSON saying how the identities were made (photos, a seed,
a PCA, a ComfyUI prompt...). Reading also accepts the command line's older ``embeddings.pt`` (a bare tensor, read with
``torch.load(weights_only=True)``) and any safetensors file whose only tensor is [N, 512].
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..errors import CorruptWeightsError, InvalidInputError
from .embeddings import ARCFACE_DIM, unit_rows, validate_embeds

EMBEDDINGS_KEY = "embeddings"
IDENTITIES_FORMAT = "arc2face.identities"
FORMAT_VERSION = "1"
SUFFIXES = (".safetensors", ".pt", ".pth")


def embeddings_bytes(embeds: torch.Tensor, source: dict | None = None) -> bytes:
    """The identities file's bytes: unit rows [N, 512] float32 and the metadata (see the module docstring)."""
    from ..checkpoints import safetensors_bytes

    rows = stored_rows(embeds).cpu().contiguous()
    metadata = {"format": IDENTITIES_FORMAT, "version": FORMAT_VERSION, "source": json.dumps(source or {})}
    return safetensors_bytes({EMBEDDINGS_KEY: rows}, metadata)   # byte for byte the same in every process


def save_embeddings(path: str | os.PathLike, embeds: torch.Tensor, source: dict | None = None) -> Path:
    """Write unit rows [N, 512] to ``path`` (.safetensors) atomically: a reader never sees half a file."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise InvalidInputError(f"identities are saved as .safetensors files, got {path.name}")
    data = embeddings_bytes(embeds, source)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def load_embeddings(path: str | os.PathLike) -> tuple[torch.Tensor, dict]:
    """(unit rows [N, 512] float32, source dict) from an identities file or an older ``embeddings.pt``."""
    from ..checkpoints import read_checkpoint

    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"identities file not found: {path}")
    if path.suffix not in SUFFIXES:
        raise InvalidInputError(f"{path}: identities are read from {', '.join(SUFFIXES)} files, not {path.suffix!r}")
    data = read_checkpoint(path)
    source: dict = {}
    if path.suffix == ".safetensors":
        metadata = read_metadata(path)
        if EMBEDDINGS_KEY in data:
            tensor = data[EMBEDDINGS_KEY]
        elif len(data) == 1:
            tensor = next(iter(data.values()))
        else:
            raise InvalidInputError(f"{path} holds {sorted(data)[:5]} but no {EMBEDDINGS_KEY!r} tensor: it is not an "
                                    "identities file (Save Embeddings and the command line write one)")
        try:
            source = json.loads(metadata.get("source", "{}"))
        except ValueError:
            source = {}
    elif isinstance(data, torch.Tensor):
        tensor, source = data, {"file": str(path), "format": "embeddings.pt"}
    else:
        raise InvalidInputError(f"{path} holds a {type(data).__name__}, not a tensor of ArcFace embeddings "
                                f"[N, {ARCFACE_DIM}]")
    try:
        rows = stored_rows(tensor)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{path}: {exc}") from None
    return rows, source if isinstance(source, dict) else {}


def stored_rows(embeds) -> torch.Tensor:
    """Validated float32 rows, each scaled to norm 1 unless it already is (within 1e-6): rows that are unit keep
    their exact bits, so saving and loading identities changes nothing. Others are normalised overflow-safely (the
    pack's one ``unit_rows``): a row of huge values keeps its direction instead of becoming zeros."""
    rows = validate_embeds(embeds)
    norms = rows.norm(dim=1, keepdim=True)
    return torch.where((norms - 1).abs() > 1e-6, unit_rows(rows), rows)


def looks_like_identities(path: str | os.PathLike) -> bool:
    """Whether a file can be read as identities, judged cheaply (a safetensors header only, never the tensors): a
    .pt/.pth file, or a .safetensors file with an ``embeddings`` tensor or a single tensor, [N, 512]."""
    path = Path(path)
    if path.suffix in (".pt", ".pth"):
        return True
    if path.suffix != ".safetensors":
        return False
    try:
        with open(path, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            if not 2 <= size <= 1_000_000:
                return False
            header = json.loads(handle.read(size))
    except (OSError, ValueError):
        return False
    tensors = {k: v for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}
    entry = tensors.get(EMBEDDINGS_KEY) or (next(iter(tensors.values())) if len(tensors) == 1 else None)
    shape = entry.get("shape") if entry else None
    return isinstance(shape, list) and len(shape) == 2 and shape[1] == ARCFACE_DIM


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata of a safetensors file (empty when it has none)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(os.fspath(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise CorruptWeightsError(f"{path} is not a readable safetensors file ({exc})") from exc
