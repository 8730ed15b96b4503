"""Small random FLAME models in the real file layout: a Python-2 pickle of chumpy objects, written without chumpy.

FLAME 2020's ``generic_model.pkl`` is a dict (docs/pose_hints.md, 'Keys and shapes'): ``v_template`` (V,3), ``f``
(F,3), ``shapedirs`` (V,3,400: 300 shape + 100 expression), ``posedirs`` (V,3,36), ``J_regressor`` (5,V) scipy sparse,
``weights`` (V,5), ``kintree_table`` (2,5) with the root's parent stored as uint32 -1, plus ``J``, ``bs_style`` and
``bs_type``. Most arrays are chumpy ``Ch`` objects, pickled as new-style objects whose state (chumpy's
``__getstate__``: the instance dict less its weak references) holds the array as ``x``.

``write_python2_pickle`` writes the opcodes Python 2's cPickle writes (protocol 2 with ``NEWOBJ``, or the protocol 0/1
form with ``copy_reg._reconstructor``), strings as ``SHORT_BINSTRING``/``BINSTRING``, arrays through numpy's
``_reconstruct`` under numpy 1's or numpy 2's module path. ``write_python3_pickle`` lets today's pickler write the
same dict with stand-in classes registered under chumpy's module path (and real scipy/numpy objects), as a file
re-saved under Python 3 would be. Neither needs chumpy.

The geometry is a closed ellipsoidal "head" (metres, +y up, facing +z) whose eye joints sit at the front, so renders
of it are meaningful; everything else is random.
"""

from __future__ import annotations

import pickle
import struct
import sys
import types
from contextlib import contextmanager
from pathlib import Path

import numpy as np

N_JOINTS = 5
N_BASES = 400
ROOT_PARENT = 4294967295        # -1 stored as uint32, as in SMPL-family files
HEAD_AXES = (0.075, 0.105, 0.095)   # half width, half height, half depth, metres
EYE_OFFSETS = ((-0.031, 0.028), (0.031, 0.028))   # (x, y) of the eye joints on the front of the head, metres


def ellipsoid_mesh(rings: int, segments: int, axes=HEAD_AXES, outward: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A closed UV ellipsoid: ``rings`` latitude steps, ``segments`` longitudes; poles on the y axis, front at +z."""
    lat = np.linspace(0.0, np.pi, rings + 1)[1:-1]
    lon = np.linspace(-np.pi, np.pi, segments, endpoint=False)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    ring = np.stack([np.sin(la) * np.sin(lo), np.cos(la), np.sin(la) * np.cos(lo)], -1).reshape(-1, 3)
    vertices = np.vstack([[0, 1, 0], ring, [0, -1, 0]]) * np.asarray(axes)
    top, bottom = 0, len(vertices) - 1

    def at(r, s):
        return 1 + r * segments + s % segments

    faces = []
    for s in range(segments):
        faces.append([top, at(0, s + 1), at(0, s)])
        faces.append([bottom, at(rings - 2, s), at(rings - 2, s + 1)])
        for r in range(rings - 2):
            faces.append([at(r, s), at(r, s + 1), at(r + 1, s)])
            faces.append([at(r + 1, s), at(r, s + 1), at(r + 1, s + 1)])
    faces = np.asarray(faces, np.int64)[:, ::-1]      # counter-clockwise seen from outside (+y up, +z front)
    return vertices, np.ascontiguousarray(faces if outward else faces[:, ::-1])


def _nearest(vertices: np.ndarray, target, count: int = 3) -> np.ndarray:
    return np.argsort(np.linalg.norm(vertices - np.asarray(target), axis=1))[:count]


def random_flame(seed: int = 0, rings: int = 12, segments: int = 24, outward: bool = True, basis_scale: float = 2e-3,
                 pose_scale: float = 1e-3) -> dict:
    """The arrays of a random FLAME model (numpy, float64; ``f`` uint32, ``J_regressor`` dense [5, V])."""
    rng = np.random.default_rng(seed)
    v_template, faces = ellipsoid_mesh(rings, segments, outward=outward)
    v_template = v_template + rng.normal(0, 1e-3, v_template.shape)
    count = len(v_template)
    regressor = np.zeros((N_JOINTS, count))
    regressor[0] = 1.0 / count                                           # root: the centroid
    front = HEAD_AXES[2]
    targets = [(0, -HEAD_AXES[1], 0), (0, -0.5 * HEAD_AXES[1], 0.5 * front),   # neck, jaw
               (EYE_OFFSETS[0][0], EYE_OFFSETS[0][1], front), (EYE_OFFSETS[1][0], EYE_OFFSETS[1][1], front)]
    for joint, target in enumerate(targets, start=1):
        chosen = _nearest(v_template, target)
        regressor[joint, chosen] = rng.dirichlet(np.ones(len(chosen)))
    weights = rng.dirichlet(np.full(N_JOINTS, 0.5), count)
    return {
        "v_template": v_template,
        "f": faces.astype(np.uint32),
        "shapedirs": rng.normal(0, basis_scale, (count, 3, N_BASES)),
        "posedirs": rng.normal(0, pose_scale, (count, 3, 36)),
        "J_regressor": regressor,
        "weights": weights,
        "kintree_table": np.array([[ROOT_PARENT, 0, 1, 1, 1], [0, 1, 2, 3, 4]], np.int64),
        "J": regressor @ v_template,
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }


def random_eyelids(count: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """SMIRK-style eyelid blendshapes: (V,3) float64, non-zero on a few vertices."""
    rng = np.random.default_rng(seed)
    left, right = np.zeros((count, 3)), np.zeros((count, 3))
    left[rng.choice(count, 6, replace=False)] = rng.normal(0, 5e-3, (6, 3))
    right[rng.choice(count, 6, replace=False)] = rng.normal(0, 5e-3, (6, 3))
    return left, right


CHUMPY_KEYS = ("v_template", "shapedirs", "posedirs", "weights", "J")


# ----------------------------------------------------------------------------------- Python 2 opcodes, by hand

class _Python2Writer:
    """Writes a few Python-2 types the way cPickle does: str as BINSTRING, new-style objects, numpy, scipy."""

    def __init__(self, numpy_module: str, objects: str):
        self.out = bytearray(b"\x80\x02")
        self.memo: dict = {}
        self.numpy_module, self.objects = numpy_module, objects

    def _put(self, key) -> None:
        index = len(self.memo)
        self.memo[key] = index
        self.out += b"q" + bytes([index]) if index < 256 else b"r" + struct.pack("<I", index)

    def global_(self, module: str, name: str) -> None:
        key = ("global", module, name)
        if key in self.memo:
            index = self.memo[key]
            self.out += b"h" + bytes([index]) if index < 256 else b"j" + struct.pack("<I", index)
            return
        self.out += b"c" + f"{module}\n{name}\n".encode()
        self._put(key)

    def string(self, data: bytes) -> None:
        self.out += (b"U" + bytes([len(data)]) if len(data) < 256 else b"T" + struct.pack("<i", len(data))) + data

    def value(self, obj) -> None:
        if obj is None:
            self.out += b"N"
        elif isinstance(obj, bool):
            self.out += b"\x88" if obj else b"\x89"
        elif isinstance(obj, int):
            self.out += b"J" + struct.pack("<i", obj) if -2 ** 31 <= obj < 2 ** 31 else self._long(obj)
        elif isinstance(obj, float):
            self.out += b"G" + struct.pack(">d", obj)
        elif isinstance(obj, str):
            self.string(obj.encode("latin-1"))
        elif isinstance(obj, bytes):
            self.string(obj)
        elif isinstance(obj, tuple):
            self.out += b"("
            for item in obj:
                self.value(item)
            self.out += b"t"
        elif isinstance(obj, list):
            self.out += b"]("
            for item in obj:
                self.value(item)
            self.out += b"e"
        elif isinstance(obj, set):
            self.global_("__builtin__", "set")
            self.value((sorted(obj),))
            self.out += b"R"
        elif isinstance(obj, dict):
            self.out += b"}("
            for key, item in obj.items():
                self.value(key)
                self.value(item)
            self.out += b"u"
        elif isinstance(obj, np.ndarray):
            self.array(obj)
        elif isinstance(obj, _Object):
            self.new_object(obj.module, obj.name, obj.state)
        else:
            raise TypeError(type(obj))

    def _long(self, number: int) -> bytes:
        raw = number.to_bytes((number.bit_length() + 8) // 8, "little", signed=True)
        return b"\x8a" + bytes([len(raw)]) + raw

    def dtype(self, dtype: np.dtype) -> None:
        self.global_("numpy", "dtype")
        self.value((dtype.str[1:], 0, 1))
        self.out += b"R"
        order = "|" if dtype.itemsize == 1 else "<"
        self.value((3, order, None, None, None, -1, -1, 0))
        self.out += b"b"

    def array(self, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array)
        if array.dtype.byteorder == ">":
            array = array.astype(array.dtype.newbyteorder("<"))
        self.global_(self.numpy_module, "_reconstruct")
        self.out += b"("
        self.global_("numpy", "ndarray")
        self.value((0,))
        self.string(b"b")
        self.out += b"tR("
        self.value(1)
        self.value(tuple(int(n) for n in array.shape))
        self.dtype(array.dtype)
        self.value(False)
        self.string(array.tobytes())
        self.out += b"tb"

    def new_object(self, module: str, name: str, state: dict) -> None:
        if self.objects == "newobj":                 # protocol 2: cls.__new__(cls), then BUILD
            self.global_(module, name)
            self.out += b")\x81"
        else:                                        # protocols 0/1: copy_reg._reconstructor(cls, object, None)
            self.global_("copy_reg", "_reconstructor")
            self.out += b"("
            self.global_(module, name)
            self.global_("__builtin__", "object")
            self.out += b"NtR"
        self.value(state)
        self.out += b"b"


class _Object:
    def __init__(self, module: str, name: str, state: dict):
        self.module, self.name, self.state = module, name, state


def _chumpy(array: np.ndarray) -> _Object:
    """A chumpy ``Ch`` as chumpy 0.70 pickles it: the instance dict without ``_parents`` and ``_cache``."""
    return _Object("chumpy.ch", "Ch", {"_dirty_vars": {"x"}, "_itr": None, "_depends_on_deps": {},
                                       "_make_dense": False, "_make_sparse": False, "x": np.asarray(array)})


def _sparse_state(dense: np.ndarray) -> dict:
    """scipy 0.x's csc_matrix instance dict."""
    column, row = np.nonzero(dense.T)          # column-major order: per column, its rows
    return {"_shape": dense.shape, "maxprint": 50, "format": "csc", "indices": row.astype(np.int32),
            "indptr": np.concatenate([[0], np.cumsum(np.count_nonzero(dense, axis=0))]).astype(np.int32),
            "data": dense[row, column]}


def write_python2_pickle(path: Path, model: dict, *, numpy_module: str = "numpy.core.multiarray",
                         objects: str = "newobj", chumpy_keys=CHUMPY_KEYS, extra: dict | None = None) -> Path:
    """``model`` (from ``random_flame``) as Python 2 would have pickled FLAME's dict. ``objects``: "newobj"
    (protocol 2) or "reconstructor" (protocols 0/1). ``extra``: more top-level entries (raw ``_Object``s allowed)."""
    writer = _Python2Writer(numpy_module, objects)
    content = {}
    for key, value in model.items():
        if key == "J_regressor":
            content[key] = _Object("scipy.sparse.csc", "csc_matrix", _sparse_state(value))
        elif key in chumpy_keys:
            content[key] = _chumpy(value)
        else:
            content[key] = value
    content.update(extra or {})
    writer.value(content)
    writer.out += b"."
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(writer.out))
    return path


def foreign_object(module: str, name: str, state: dict | None = None) -> _Object:
    """An object of any class, for refusal tests (the reader must name it and build nothing)."""
    return _Object(module, name, state or {})


# ------------------------------------------------------------------------------- Python 3 pickler, stand-ins

@contextmanager
def chumpy_stand_ins():
    """A fake ``chumpy.ch`` module with a ``Ch`` class, registered while pickling (chumpy is not installed)."""
    saved = {name: sys.modules.get(name) for name in ("chumpy", "chumpy.ch")}
    package, module = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")

    class Ch:
        def __init__(self, x):
            self.__dict__.update(_chumpy(x).state)

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    module.Ch, package.ch = Ch, module
    sys.modules.update({"chumpy": package, "chumpy.ch": module})
    try:
        yield Ch
    finally:
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old


def write_python3_pickle(path: Path, model: dict, *, protocol: int = 2, chumpy_keys=CHUMPY_KEYS) -> Path:
    """The dict pickled by this Python with stand-in chumpy classes and a real scipy ``csc_matrix``."""
    from scipy.sparse import csc_matrix

    with chumpy_stand_ins() as Ch:
        content = {key: (csc_matrix(value) if key == "J_regressor" else Ch(value) if key in chumpy_keys else value)
                   for key, value in model.items()}
        raw = pickle.dumps(content, protocol=protocol)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)
    return path


def write_flame_folder(folder: Path, seed: int = 0, eyelids: bool = True, **layout) -> dict:
    """``generic_model.pkl`` (Python-2 layout) and, optionally, SMIRK's ``l_eyelid.npy``/``r_eyelid.npy`` beside it.
    Returns the arrays written (eyelids under ``l_eyelid``/``r_eyelid``)."""
    model = random_flame(seed, **layout)
    write_python2_pickle(Path(folder) / "generic_model.pkl", model)
    if eyelids:
        left, right = random_eyelids(len(model["v_template"]), seed + 1)
        np.save(Path(folder) / "l_eyelid.npy", left)
        np.save(Path(folder) / "r_eyelid.npy", right)
        model = dict(model, l_eyelid=left, r_eyelid=right)
    return model
