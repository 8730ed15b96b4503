"""Reading weight files safely: pickles only through ``torch.load(weights_only=True)``, never arbitrary code.

Every failure names the file and says what to do: a truncated download, a file that is not a checkpoint at all, or a
pickle that holds more than tensors (which ``weights_only`` refuses to unpickle, by design).
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch

from .errors import CorruptWeightsError

StateDict = dict[str, torch.Tensor]

_PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".ckpt"}


def _refetch_hint(path: Path, source: str | None) -> str:
    where = f" from {source}" if source else ""
    return f"Delete {path} and download it again{where}."


def read_checkpoint(path: str | os.PathLike, *, source: str | None = None) -> Any:
    """Load a ``.safetensors`` or pickle checkpoint onto the CPU without executing code from it."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise CorruptWeightsError(f"Cannot read {path}: {exc}. {_refetch_hint(path, source)}") from exc
    if size == 0:
        raise CorruptWeightsError(f"{path} is empty (0 bytes): the download did not finish. {_refetch_hint(path, source)}")

    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(os.fspath(path), device="cpu")
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise CorruptWeightsError(
                f"{path} is not a readable safetensors file ({exc}); it is probably truncated or corrupt. "
                f"{_refetch_hint(path, source)}"
            ) from exc

    if path.suffix not in _PICKLE_SUFFIXES:
        raise CorruptWeightsError(f"{path}: unsupported weight file type {path.suffix!r} (expected .safetensors or .bin)")
    try:
        return torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CorruptWeightsError(
            f"{path} is not a plain weights file: it asks to run Python code when loaded, which this pack refuses "
            f"to do (weights_only=True). Use the official file instead. {_refetch_hint(path, source)}\n"
            f"Detail: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError) as exc:
        raise CorruptWeightsError(
            f"{path} could not be read as a PyTorch checkpoint ({type(exc).__name__}: {exc}); it is probably "
            f"truncated or corrupt. {_refetch_hint(path, source)}"
        ) from exc


def check_safetensors_file(path: str | os.PathLike, *, source: str | None = None) -> None:
    """Refuse a ``.safetensors`` file that is not whole, from its header alone (no tensor is read).

    For files a host reads itself (ComfyUI's UNet and ControlNet loaders): a truncated download would fail there with
    the bare "incomplete metadata, file not fully covered" of the safetensors library, naming no file. The format:
    an 8-byte little-endian header length, a JSON header giving each tensor's byte range, then exactly those bytes.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            length = int.from_bytes(fh.read(8), "little") if size >= 8 else 0
            if not 0 < length <= size - 8:
                raise ValueError(f"its header length {length} does not fit a file of {size} bytes")
            header = json.loads(fh.read(length))
        ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"]
        expected = 8 + length + max(ends, default=0)
        if expected != size:
            raise ValueError(f"its header describes {expected} bytes but the file has {size}")
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise CorruptWeightsError(
            f"{path} is not a readable safetensors file ({exc}); it is probably truncated or corrupt. "
            f"{_refetch_hint(path, source)}"
        ) from exc


def as_state_dict(obj: Any, path: str | os.PathLike, *, what: str = "state dict") -> StateDict:
    """Check that ``obj`` is a flat ``{name: tensor}`` mapping and return it as a dict."""
    if not isinstance(obj, Mapping) or not obj:
        kind = "an empty mapping" if isinstance(obj, Mapping) else f"a {type(obj).__name__}"
        raise CorruptWeightsError(f"{path} holds {kind}, not a {what} of tensors. Is it the right file?")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CorruptWeightsError(
            f"{path} is not a plain {what}: entries {bad[:5]} are not tensors. Is it the right file?"
        )
    return dict(obj)


def load_state_dict(path: str | os.PathLike, *, source: str | None = None) -> StateDict:
    """``read_checkpoint`` + ``as_state_dict``: the common case of a flat weight file."""
    return as_state_dict(read_checkpoint(path, source=source), path)


def check_finite(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Refuse weights holding NaN/inf: they would turn every output into noise without any error."""
    for name, tensor in state_dict.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CorruptWeightsError(f"{path}: tensor {name!r} contains NaN or infinite values; the file is corrupt.")
