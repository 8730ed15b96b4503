"""Reading FLAME's ``generic_model.pkl`` as plain arrays: no chumpy needed, no code from the file ever run.

FLAME 2020 is a Python-2 pickle of a dict (EMOCA and SMIRK read it with ``pickle.load(f, encoding='latin1')`` and need
chumpy importable: docs/pose_hints.md, 'Reading the file'). Its arrays are chumpy ``Ch`` objects whose pickled state
holds the array as ``x``, a scipy sparse ``J_regressor`` and plain numpy arrays. The exact class paths are inferred
from the published structure (chumpy's ``Ch.__getstate__`` is its ``__dict__``; numpy and scipy pickle as they always
have), not read off a real file, which the pack cannot download: every class the reader does not know is named in the
error, so a real file's surprises are diagnosable.

The unpickler's ``find_class`` hands out only
* numpy's array and dtype reconstructors (numpy 1's ``numpy.core.multiarray`` and numpy 2's ``numpy._core.multiarray``
  paths), refusing object arrays, whose items would be arbitrary pickled objects;
* inert stand-ins for chumpy and scipy-sparse classes: they keep their pickled state as data and do nothing else;
* ``set``/``frozenset``/``OrderedDict``, copyreg's ``_reconstructor`` (protocol 0/1 objects; only for the stand-ins)
  and ``_codecs.encode`` (bytes pickled by Python 3 at protocol 2; only ``str -> latin-1``).
Anything else (``os.system``, ``builtins.eval``, ...) is refused before it is looked up, so it can never be called.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CorruptWeightsError

MAX_DENSE_SPARSE = 50_000_000     # elements of a densified sparse matrix (FLAME's J_regressor: 5 x 5023)
_NUMPY_RECONSTRUCT_MODULES = {"numpy.core.multiarray", "numpy._core.multiarray"}
_SPARSE_FORMATS = {f"{kind}_{suffix}": kind for kind in ("csc", "csr", "coo") for suffix in ("matrix", "array")}
FLAME_SOURCE = ("https://flame.is.tue.mpg.de (register, accept the FLAME licence, download FLAME 2020 and unzip "
                "generic_model.pkl into models/arc2face/flame/)")


class UnknownClassError(pickle.UnpicklingError):
    """The pickle names a class the reader does not build."""


class StandIn:
    """A chumpy or scipy-sparse object kept as data: its class path and its pickled state; nothing of it runs."""

    class_path = "?"

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<{self.class_path} (not built)>"


_STAND_INS: dict[str, type] = {}


def _stand_in(class_path: str) -> type:
    if class_path not in _STAND_INS:
        _STAND_INS[class_path] = type(class_path.rsplit(".", 1)[-1], (StandIn,), {"class_path": class_path})
    return _STAND_INS[class_path]


class _NdarrayType:
    """What ``numpy.ndarray`` resolves to: accepted only as the subtype argument of numpy's ``_reconstruct``."""


def _reconstruct(subtype, shape, typecode):
    if subtype is not _NdarrayType:
        raise pickle.UnpicklingError(f"numpy _reconstruct of {subtype!r}: only plain numpy arrays are read")
    if not isinstance(shape, tuple) or int(np.prod(shape)) > 1:   # numpy pickles an empty (0,) array, then its state
        raise pickle.UnpicklingError(f"numpy _reconstruct with shape {shape!r}")
    return _numpy_reconstruct()(np.ndarray, shape, typecode)


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct as numpy_reconstruct  # numpy 2
    except ImportError:   # numpy 1
        from numpy.core.multiarray import _reconstruct as numpy_reconstruct
    return numpy_reconstruct


def _dtype(spec, align=0, copy=1):
    dtype = np.dtype(spec, bool(align), bool(copy))
    if dtype.hasobject:
        raise pickle.UnpicklingError(f"an array of dtype {dtype} holds pickled Python objects, not numbers")
    return dtype


def _scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise pickle.UnpicklingError("a numpy scalar of a non-numeric dtype")
    return np.frombuffer(_as_bytes(data), dtype=dtype, count=1)[0]


def _as_bytes(data) -> bytes:
    if isinstance(data, str):           # Python 2 ``str`` read with encoding='latin1'
        return data.encode("latin-1")
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    raise pickle.UnpicklingError(f"expected raw bytes, got {type(data).__name__}")


def _codecs_encode(text, encoding="utf-8", errors="strict"):
    if not isinstance(text, str) or encoding.replace("-", "").lower() != "latin1":
        raise pickle.UnpicklingError("_codecs.encode is read only for Python 3's latin-1 bytes")
    return text.encode("latin-1")


def _reconstructor(cls, base, state):
    """copyreg's protocol 0/1 object constructor, for the stand-ins only."""
    if not (isinstance(cls, type) and issubclass(cls, StandIn)) or base is not object or state is not None:
        raise pickle.UnpicklingError(f"copyreg._reconstructor of {cls!r}: only chumpy/scipy objects are read")
    return cls()


_SAFE_GLOBALS = {
    ("__builtin__", "set"): set, ("builtins", "set"): set,
    ("__builtin__", "frozenset"): frozenset, ("builtins", "frozenset"): frozenset,
    ("__builtin__", "object"): object, ("builtins", "object"): object,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("copy_reg", "_reconstructor"): _reconstructor, ("copyreg", "_reconstructor"): _reconstructor,
    ("_codecs", "encode"): _codecs_encode,
    ("numpy", "ndarray"): _NdarrayType, ("numpy", "dtype"): _dtype,
}


class FlameUnpickler(pickle.Unpickler):
    """Builds numpy arrays and inert chumpy/scipy stand-ins; refuses every other class by name."""

    def find_class(self, module: str, name: str):
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]
        if module in _NUMPY_RECONSTRUCT_MODULES and name == "_reconstruct":
            return _reconstruct
        if module in _NUMPY_RECONSTRUCT_MODULES and name == "scalar":
            return _scalar
        if module == "chumpy" or module.startswith("chumpy."):
            return _stand_in(f"{module}.{name}")
        if module.startswith("scipy.sparse") and name in _SPARSE_FORMATS:
            return _stand_in(f"{module}.{name}")
        raise UnknownClassError(f"{module}.{name}")


def read_pickle(path: str | os.PathLike) -> dict:
    """The file's top-level dict, its values numpy arrays, stand-ins or plain Python data."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CorruptWeightsError(f"Cannot read the FLAME model {path}: {exc}.") from exc
    if not raw:
        raise CorruptWeightsError(f"The FLAME model {path} is empty (0 bytes): download it again from {FLAME_SOURCE}.")
    try:
        data = FlameUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except UnknownClassError as exc:
        raise CorruptWeightsError(
            f"The FLAME model {path} holds an object of class {exc}, which the pack does not read: it builds only "
            "numpy arrays, scipy sparse matrices and chumpy arrays, and never runs code from a model file. If this "
            f"is the real FLAME 2020 generic_model.pkl from {FLAME_SOURCE}, please report the class name.") from None
    except Exception as exc:   # truncated, not a pickle, refused construct: all mean "not a usable FLAME file"
        raise CorruptWeightsError(
            f"The FLAME model {path} cannot be read ({type(exc).__name__}: {exc}). It should be FLAME 2020's "
            f"generic_model.pkl, unmodified; download it again from {FLAME_SOURCE}.") from None
    if not isinstance(data, dict):
        raise CorruptWeightsError(f"The FLAME model {path} holds a {type(data).__name__}, not FLAME's dict of arrays; "
                                  f"it should be FLAME 2020's generic_model.pkl from {FLAME_SOURCE}.")
    return data


def as_array(value: Any, key: str, path: Path) -> np.ndarray:
    """A value of the dict as a numpy array: arrays as they are, chumpy ``Ch`` by its ``x``, sparse densified."""
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:     # a dtype given object fields after construction: not numbers
            raise CorruptWeightsError(f"The FLAME model {path}: '{key}' holds Python objects, not numbers.")
        return value
    if isinstance(value, StandIn):
        state = getattr(value, "state", None)
        if value.class_path.startswith("chumpy") and isinstance(state, dict) and "x" in state:
            return as_array(state["x"], key, path)
        if value.class_path.startswith("scipy") and isinstance(state, dict):
            return _densify(state, _SPARSE_FORMATS[value.class_path.rsplit(".", 1)[-1]], key, path)
        raise CorruptWeightsError(
            f"The FLAME model {path}: '{key}' is a {value.class_path} object without a stored array (its pickled "
            f"state has {sorted(state) if isinstance(state, dict) else type(state).__name__}); the pack reads chumpy "
            "objects only by the array they hold. Please report this with the class name.")
    raise CorruptWeightsError(f"The FLAME model {path}: '{key}' is a {type(value).__name__}, not an array.")


def _densify(state: dict, kind: str, key: str, path: Path) -> np.ndarray:
    """A scipy sparse matrix's pickled state (``data`` with ``indices``/``indptr`` or ``row``/``col``) as a dense
    array, built here from the numbers (scipy's own code is never run on the file's state)."""
    shape = state.get("_shape", state.get("shape"))
    try:
        rows, cols = (int(n) for n in shape)
        data = np.asarray(as_array(state["data"], key, path), np.float64).ravel()
        if rows < 0 or cols < 0 or rows * cols > MAX_DENSE_SPARSE:
            raise ValueError(f"shape {rows} x {cols}")
        dense = np.zeros((rows, cols), np.float64)
        if kind == "coo":
            row = np.asarray(as_array(state["row"], key, path), np.int64).ravel()
            col = np.asarray(as_array(state["col"], key, path), np.int64).ravel()
        else:
            indices = np.asarray(as_array(state["indices"], key, path), np.int64).ravel()
            indptr = np.asarray(as_array(state["indptr"], key, path), np.int64).ravel()
            major = rows if kind == "csr" else cols
            if len(indptr) != major + 1 or indptr[0] != 0 or np.any(np.diff(indptr) < 0) or indptr[-1] != len(data):
                raise ValueError("index pointers do not match the data")
            owner = np.repeat(np.arange(major), np.diff(indptr))
            row, col = (owner, indices) if kind == "csr" else (indices, owner)
        if not (len(row) == len(col) == len(data)) or (len(row) and (row.min() < 0 or row.max() >= rows
                                                                     or col.min() < 0 or col.max() >= cols)):
            raise ValueError("indices outside the matrix")
        np.add.at(dense, (row, col), data)
        return dense
    except CorruptWeightsError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptWeightsError(f"The FLAME model {path}: the sparse '{key}' is malformed ({exc}); download "
                                  f"generic_model.pkl again from {FLAME_SOURCE}.") from None
