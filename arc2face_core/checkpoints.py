"""Reading weight files safely: pickles only through ``torch.load(weights_only=True)``, never arbitrary code.

Every failure names the file and says what to do: a truncated download, a file that is not a checkpoint at all, or a
pickle that holds more than tensors (which ``weights_only`` refuses to unpickle, by design).

Files are memory-mapped, not copied: safetensors always, zip-format pickles with ``torch.load(mmap=True)`` (what
transformers and diffusers do). The tensors read the file's pages as they are used, so loading costs no second copy
of the weights; the pages are the operating system's file cache, shared by every process that loads the same file.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import pickle
import sys
import threading
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np
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
        # Only the zip format (torch.save since 1.6) can be mapped; an older or a truncated file is read whole, and a
        # truncated one fails below with its name.
        return torch.load(os.fspath(path), map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        refused = [line.strip() for line in str(exc).splitlines() if "GLOBAL" in line]
        if not refused:   # torch could not read it at all: look at the pickle without running it
            names = _pickled_names(path)
            if names is None:   # not a pickle: a text file, an HTML error page, a Git LFS pointer...
                raise CorruptWeightsError(_not_a_checkpoint(path, source)) from exc
            if not names:
                raise CorruptWeightsError(
                    f"{path} is a Python pickle that torch's safe loader cannot read ({_first_detail(exc)}); "
                    f"re-save it with torch.save, or use the official file. {_refetch_hint(path, source)}") from exc
            refused = [f"it refers to {', '.join(sorted(names)[:5])}"]
        raise CorruptWeightsError(
            f"{path} is not a plain weights file: it asks to run Python code when loaded, which this pack refuses "
            f"to do (weights_only=True). Use the official file instead. {_refetch_hint(path, source)}\n"
            f"Detail: {refused[0]}"
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError) as exc:
        raise CorruptWeightsError(
            f"{path} could not be read as a PyTorch checkpoint ({type(exc).__name__}: {exc}); it is probably "
            f"truncated or corrupt. {_refetch_hint(path, source)}"
        ) from exc


def _pickled_names(path: Path) -> set[str] | None:
    """The Python names (module.attribute) a plain pickle file refers to, read with pickletools, which parses
    opcodes without running any; None when the file is not a pickle."""
    import pickletools

    names: set[str] = set()
    strings: list[str] = []
    try:
        with open(path, "rb") as fh:
            for opcode, argument, _ in pickletools.genops(fh):
                if opcode.name in ("GLOBAL", "INST"):
                    names.add(str(argument).replace(" ", "."))
                elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                    names.add(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(argument, str):
                    strings.append(argument)
    except Exception:   # noqa: BLE001 - any parse failure means "not a pickle"
        return None
    return names


def _first_detail(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if line.startswith(("Unsupported", "WeightsUnpickler"))]
    return (useful or lines or [type(exc).__name__])[-1]


def _not_a_checkpoint(path: Path, source: str | None) -> str:
    """What a file that torch cannot unpickle at all is, from its first bytes (text is shown, as it often says why)."""
    with open(path, "rb") as fh:
        head = fh.read(200)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or not text.strip() or any(ch < " " and ch not in "\t\r\n" for ch in text):
        return (f"{path} is not a PyTorch weights file (neither a zip nor a pickle of tensors); it is probably corrupt "
                f"or another kind of file. {_refetch_hint(path, source)}")
    first = text.strip().splitlines()[0][:80]
    what = ("a Git LFS pointer, not the file itself: fetch the real file (git lfs pull, or download it directly)"
            if text.startswith("version https://git-lfs") else
            "probably an error page or a note saved under the weights' name")
    return f"{path} is a text file beginning {first!r}, not PyTorch weights: {what}. {_refetch_hint(path, source)}"


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


def safetensors_bytes(tensors: Mapping[str, torch.Tensor], metadata: Optional[Mapping[str, str]] = None) -> bytes:
    """A safetensors file's bytes, the same in every process: the library's layout with the header's keys sorted.

    ``safetensors.torch.save`` writes the metadata in hash-map order, which Rust seeds per process, so the same
    tensors and metadata gave files that differ byte for byte. The header is re-encoded here with sorted keys and
    padded with spaces to a multiple of 8 bytes, as the library pads it; the tensors' bytes follow unchanged (their
    offsets are relative to the end of the header)."""
    from safetensors.torch import save

    data = save(dict(tensors), metadata=dict(metadata) if metadata is not None else None)
    length = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8:8 + length]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    return len(header).to_bytes(8, "little") + header + data[8 + length:]


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
    """Refuse weights holding NaN/inf: they would turn every output into noise without any error.

    One pass over the weights and no copy of them: a float sum is finite only if every term is (NaN and inf propagate
    through additions), so a finite sum clears what it covers; a non-finite one (or a sum of huge finite values that
    overflowed) is settled tensor by tensor, element by element. Tensors that lie end to end in memory (a
    memory-mapped safetensors file: one run of the whole file per dtype) are summed as one array, in one call that
    holds no interpreter lock, so the check barely slows whatever runs beside it (``BackgroundRead``).
    """
    tensors = [(name, t) for name, t in state_dict.items() if t.is_floating_point()]
    cleared = set()
    for run in _adjacent_runs([t for _, t in tensors]):
        if len(run) > 1 and _run_is_finite(run):
            cleared.update(id(t) for t in run)
    for name, tensor in tensors:
        if id(tensor) not in cleared and not _all_finite(tensor):
            raise CorruptWeightsError(f"{path}: tensor {name!r} contains NaN or infinite values; the file is corrupt.")


def _adjacent_runs(tensors: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Contiguous CPU tensors of one numpy dtype that follow each other in memory, grouped (each run is one array)."""
    candidates = sorted((t for t in tensors if t.device.type == "cpu" and t.dtype in _NUMPY_SUM and t.numel()
                         and t.is_contiguous()), key=lambda t: t.data_ptr())
    runs: list[list[torch.Tensor]] = []
    for tensor in candidates:
        last = runs[-1][-1] if runs else None
        if last is not None and last.dtype == tensor.dtype \
                and last.data_ptr() + last.numel() * last.element_size() == tensor.data_ptr():
            runs[-1].append(tensor)
        else:
            runs.append([tensor])
    return runs


_MADV_POPULATE_READ = 22   # Linux >= 5.14: map a range's pages in one call instead of one page fault at a time


def _map_in(start: int, size: int) -> None:
    """Ask Linux to map a memory-mapped file's pages in bulk before they are read (about a fifth cheaper than taking
    each page fault in turn); a no-op where that is not available."""
    if not sys.platform.startswith("linux"):
        return
    try:
        madvise = ctypes.CDLL(None).madvise
        madvise.argtypes, madvise.restype = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int], ctypes.c_int
        first = start - start % mmap.PAGESIZE
        madvise(first, start + size - first, _MADV_POPULATE_READ)   # failure (old kernel, not a file) changes nothing
    except (OSError, AttributeError):
        pass


class _Memory:
    """A read-only numpy view of memory that the given tensors own (numpy's array interface, no copy)."""

    def __init__(self, start: int, count: int, dtype: np.dtype) -> None:
        self.__array_interface__ = {"data": (start, True), "shape": (count,), "typestr": dtype.str, "version": 3}


def _run_is_finite(run: list[torch.Tensor]) -> bool:
    start, last = run[0].data_ptr(), run[-1]
    count = (last.data_ptr() - start) // last.element_size() + last.numel()
    _map_in(start, count * last.element_size())
    values = np.asarray(_Memory(start, count, np.dtype(_NUMPY_DTYPE[last.dtype])))
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.isfinite(values.sum(dtype=_NUMPY_SUM[last.dtype])))


# numpy sums on one core, outside torch's intra-op pool: the check of a memory-mapped file is mostly page faults,
# which threads of one process take in turn, and it runs beside other work (BackgroundRead). Half-width floats are
# summed in float32, so the sum of an ordinary fp16 tensor cannot overflow.
_NUMPY_SUM = {torch.float16: np.float32, torch.float32: None, torch.float64: None}
_NUMPY_DTYPE = {torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64}


def _all_finite(tensor: torch.Tensor) -> bool:
    if tensor.dtype in _NUMPY_SUM and tensor.device.type == "cpu":
        with np.errstate(over="ignore", invalid="ignore"):
            total = tensor.detach().numpy().sum(dtype=_NUMPY_SUM[tensor.dtype])
        if np.isfinite(total):
            return True
    else:   # bfloat16, float8 (no numpy dtype), or a tensor on an accelerator
        try:
            if torch.isfinite(tensor.sum(dtype=torch.float32)):
                return True
        except (RuntimeError, NotImplementedError):   # no sum kernel for this dtype: the exact test below
            pass
    return bool(torch.isfinite(tensor).all())


class BackgroundRead:
    """``load_state_dict`` (+ ``prepare``) + ``check_finite`` of one file, started in a worker thread.

    The caller meanwhile imports the model's library, reads its config and builds the model on the meta device:
    reading and checking the file (work that releases the interpreter lock) overlaps with that instead of following
    it. ``loaded()`` waits for the read only (the tensors may still be being checked); ``result()`` waits for the
    check too and returns the checked state dict, or raises the reader's error (which names the file).
    """

    def __init__(self, path: str | os.PathLike, *, source: str | None = None,
                 prepare: Optional[Callable[[StateDict], StateDict]] = None, check_later: bool = False) -> None:
        self.path = Path(path)
        self._state_dict: StateDict | None = None
        self._outcome: StateDict | BaseException | None = CorruptWeightsError(f"{self.path} was not read")
        self._read_done = threading.Event()
        # check_later: the check waits for start_check(), so it does not compete with the caller's import and build
        # (on two cores a parallel pass over 3.4 GB slows a Python import by about a tenth)
        self._may_check = threading.Event()
        if not check_later:
            self._may_check.set()
        # not a daemon: an interpreter that exits mid-check waits for it (a daemon thread inside a numpy pass over a
        # mapped file can abort the process at shutdown)
        self._thread = threading.Thread(target=self._read, args=(source, prepare), daemon=False,
                                        name=f"arc2face-read-{self.path.name}")
        self._thread.start()

    def _read(self, source: str | None, prepare: Optional[Callable[[StateDict], StateDict]]) -> None:
        try:
            state_dict = load_state_dict(self.path, source=source)
            if prepare is not None:
                state_dict = prepare(state_dict)
        except BaseException as exc:   # handed over to the caller's thread by loaded() / result()
            self._outcome = exc
            self._read_done.set()
            return
        self._state_dict = state_dict
        self._read_done.set()
        self._may_check.wait()
        try:
            check_finite(state_dict, self.path)
            self._outcome = state_dict
        except BaseException as exc:
            self._outcome = exc

    def start_check(self) -> None:
        """Let a ``check_later`` reader begin its NaN/inf check (no-op otherwise)."""
        self._may_check.set()

    def loaded(self) -> StateDict:
        """The state dict once read (and prepared), before its NaN/inf check has necessarily finished."""
        self._read_done.wait()
        if self._state_dict is None:
            raise self._outcome
        return self._state_dict

    def result(self) -> StateDict:
        """The checked state dict; raises the read's or the check's error."""
        self._may_check.set()
        self._thread.join()
        if isinstance(self._outcome, BaseException):
            raise self._outcome
        return self._outcome

    def release(self) -> None:
        """Drop this reader's references to the tensors once the model holds what it needs (after result())."""
        self._may_check.set()
        self._thread.join()
        if not isinstance(self._outcome, BaseException):
            self._state_dict = self._outcome = None
