"""Reading FLAME's generic_model.pkl without chumpy (arc2face_core.pose.flame_file, flame.read_flame_arrays).

The files are written by tests/builders/flame.py in the published layout: Python-2 opcodes by hand (numpy 1 and 2
module paths, protocol-2 NEWOBJ and protocol-0/1 copy_reg objects) and today's pickler with stand-in chumpy classes.
Python's own unpickler, given stand-ins for chumpy and scipy, checks that the hand-written files mean what they
should; the reader must return the very arrays that were written, and refuse anything else by name without running it.
"""

from __future__ import annotations

import io
import pickle
import pickletools
from pathlib import Path

import numpy as np
import pytest

from arc2face_core.errors import CorruptWeightsError, WeightsNotFoundError
from arc2face_core.pose.flame import FLAME_2020_VERTICES, read_eyelids, read_flame_arrays
from arc2face_core.pose.flame_file import as_array, read_pickle
from arc2face_core.weights import FLAME, find_weight
from builders.flame import (
    ellipsoid_mesh,
    foreign_object,
    random_eyelids,
    random_flame,
    write_flame_folder,
    write_python2_pickle,
    write_python3_pickle,
)
from builders.pickles import RunsCode

ARRAY_KEYS = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "J")


@pytest.fixture(scope="module")
def model():
    return random_flame(seed=3)


class _Recorded:
    """What Python's own unpickler makes of a chumpy or scipy object: its class and its state."""

    def __init__(self, *args):
        self.args = args

    def __setstate__(self, state):
        self.state = state


class _ReferenceUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module.startswith(("chumpy", "scipy")):
            return type(name, (_Recorded,), {"path": f"{module}.{name}"})
        return super().find_class(module, name)


def _reference_load(path: Path):
    return _ReferenceUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()


@pytest.mark.parametrize("numpy_module", ["numpy.core.multiarray", "numpy._core.multiarray"])
@pytest.mark.parametrize("objects", ["newobj", "reconstructor"])
def test_python2_layout_is_read_as_the_arrays_written(tmp_path, model, numpy_module, objects):
    path = write_python2_pickle(tmp_path / "generic_model.pkl", model, numpy_module=numpy_module, objects=objects)
    raw = path.read_bytes()
    opcodes = {op.name for op, _, _ in pickletools.genops(raw)}
    assert raw[:2] == b"\x80\x02" and f"c{numpy_module}\n_reconstruct".encode() in raw
    assert ("NEWOBJ" in opcodes) == (objects == "newobj") and (b"ccopy_reg\n_reconstructor" in raw) != ("NEWOBJ" in opcodes)
    assert "BINUNICODE" not in opcodes and {"SHORT_BINSTRING", "BINSTRING"} <= opcodes   # Python 2 str, not bytes
    assert b"cchumpy.ch\nCh" in raw and b"cscipy.sparse.csc\ncsc_matrix" in raw

    # Python's own unpickler (stand-ins for chumpy and scipy only) sees chumpy objects holding the arrays as "x".
    reference = _reference_load(path)
    assert reference["v_template"].path == "chumpy.ch.Ch" and set(reference["v_template"].state["_dirty_vars"]) == {"x"}
    np.testing.assert_array_equal(reference["v_template"].state["x"], model["v_template"])
    np.testing.assert_array_equal(reference["f"], model["f"])

    data = read_pickle(path)
    assert data["bs_style"] == "lbs" and data["bs_type"] == "lrotmin"
    for key in ARRAY_KEYS:
        array = as_array(data[key], key, path)
        assert array.dtype == model[key].dtype and np.array_equal(array, model[key]), key


@pytest.mark.parametrize("protocol", [2, 4])
def test_python3_pickles_with_chumpy_stand_ins_and_real_scipy(tmp_path, model, protocol):
    path = write_python3_pickle(tmp_path / "generic_model.pkl", model, protocol=protocol)
    raw = path.read_bytes()
    assert b"chumpy.ch" in raw and b"scipy.sparse" in raw
    if protocol == 2:
        assert b"_codecs" in raw            # Python 3 writes bytes at protocol 2 through _codecs.encode
    data = read_pickle(path)
    for key in ARRAY_KEYS:
        np.testing.assert_array_equal(as_array(data[key], key, path), model[key])


def test_checked_arrays(tmp_path, model):
    path = write_python2_pickle(tmp_path / "generic_model.pkl", model)
    arrays = read_flame_arrays(path)
    np.testing.assert_array_equal(arrays.shapedirs[:, :, :300], model["shapedirs"][:, :, :300])
    np.testing.assert_array_equal(arrays.shapedirs[:, :, 300:], model["shapedirs"][:, :, 300:350])
    assert arrays.parents.tolist() == [-1, 0, 1, 1, 1]
    np.testing.assert_array_equal(arrays.faces, model["f"].astype(np.int64))     # the builder winds outward:
    vertices, faces = ellipsoid_mesh(12, 24)
    np.testing.assert_array_equal(faces, arrays.faces)
    corners = vertices[faces]
    normal = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    assert (np.einsum("fi,fi->f", normal, corners.mean(1)) > 0).all()     # every face looks away from the centre
    np.testing.assert_array_equal(arrays.J_regressor, model["J_regressor"])


def test_a_file_wound_inward_is_turned_outward(tmp_path):
    inward = random_flame(seed=3, outward=False)
    arrays = read_flame_arrays(write_python2_pickle(tmp_path / "generic_model.pkl", inward))
    np.testing.assert_array_equal(arrays.faces, inward["f"][:, ::-1].astype(np.int64))


def test_other_vertex_counts_are_read_with_a_warning(tmp_path, model, caplog):
    read_flame_arrays(write_python2_pickle(tmp_path / "generic_model.pkl", model))
    assert f"FLAME 2020 has {FLAME_2020_VERTICES}" in caplog.text


# ------------------------------------------------------------------------------------------------- refusals

def test_a_code_payload_is_refused_and_never_runs(tmp_path, model):
    marker = tmp_path / "pwned"
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(pickle.dumps({"v_template": RunsCode(str(marker))}, protocol=2))
    with pytest.raises(CorruptWeightsError) as err:
        read_pickle(path)
    assert "class io.open" in str(err.value) and "never runs code" in str(err.value) and str(path) in str(err.value)
    assert not marker.exists()
    pickle.loads(path.read_bytes())            # the payload is real: the stock unpickler runs it
    assert marker.exists()


@pytest.mark.parametrize("module, name", [("os", "system"), ("builtins", "eval"), ("numpy", "load"),
                                          ("scipy.sparse", "load_npz"), ("pickle", "loads")])
def test_unknown_classes_are_named(tmp_path, model, module, name):
    path = write_python2_pickle(tmp_path / "generic_model.pkl", model,
                                extra={"odd": foreign_object(module, name, {"x": 1})})
    with pytest.raises(CorruptWeightsError, match="holds an object of class " + f"{module}.{name}".replace(".", r"\.")):
        read_pickle(path)


def test_stand_ins_cannot_be_called_with_arguments(tmp_path):
    """A chumpy class used as a function (REDUCE with arguments) builds nothing."""
    raw = b"\x80\x02}(U\x01a" + b"cchumpy.ch\nCh\n(U\x04evilt" + b"Ru."
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(raw)
    with pytest.raises(CorruptWeightsError, match="cannot be read"):
        read_pickle(path)


def test_numpy_reconstruct_only_builds_plain_arrays(tmp_path):
    raw = (b"\x80\x02}(U\x01a" + b"cnumpy.core.multiarray\n_reconstruct\n(cchumpy.ch\nCh\n(K\x00tU\x01bt" + b"Ru.")
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(raw)
    with pytest.raises(CorruptWeightsError, match="only plain numpy arrays"):
        read_pickle(path)


def test_object_arrays_are_refused(tmp_path, model):
    path = write_python2_pickle(tmp_path / "generic_model.pkl", dict(model, J=np.array([1, "x"], dtype=object)))
    with pytest.raises(CorruptWeightsError, match="pickled Python objects"):
        read_pickle(path)


def test_a_chumpy_object_without_an_array_is_named_when_needed(tmp_path, model):
    path = write_python2_pickle(tmp_path / "generic_model.pkl", model,
                                extra={"weights": foreign_object("chumpy.ch_ops", "add", {"a": 1, "b": 2})})
    assert read_pickle(path)["weights"].class_path == "chumpy.ch_ops.add"   # unused keys may hold such objects...
    with pytest.raises(CorruptWeightsError, match=r"'weights' is a chumpy\.ch_ops\.add object without a stored array"):
        read_flame_arrays(path)                 # ...a needed one is an error naming the class


@pytest.mark.parametrize("cut", [0, 1, 1000, -2])
def test_truncated_or_empty_files(tmp_path, model, cut):
    path = write_python2_pickle(tmp_path / "generic_model.pkl", model)
    raw = path.read_bytes()
    path.write_bytes(raw[:cut] if cut >= 0 else raw[:cut])
    with pytest.raises(CorruptWeightsError, match="empty|cannot be read") as err:
        read_pickle(path)
    assert "flame.is.tue.mpg.de" in str(err.value)


def test_not_a_dict(tmp_path):
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(CorruptWeightsError, match="holds a list"):
        read_pickle(path)


@pytest.mark.parametrize("change, message", [
    (lambda m: m.pop("posedirs"), "has no posedirs"),
    (lambda m: m.update(shapedirs=m["shapedirs"][:, :, :320]), "shapedirs has 320 components"),
    (lambda m: m.update(weights=m["weights"][:-1]), r"weights has shape \(265, 5\)"),
    (lambda m: m.update(J_regressor=m["J_regressor"][:4]), r"J_regressor has shape \(4, 266\)"),
    (lambda m: m.update(f=m["f"] + np.uint32(1000)), "vertex indices"),
    (lambda m: m.update(v_template=np.full_like(m["v_template"], np.nan)), "v_template contains NaN"),
    (lambda m: m.update(kintree_table=np.array([[-1, 0, 3, 1, 1], [0, 1, 2, 3, 4]])), "not a tree"),
])
def test_malformed_models_are_refused(tmp_path, model, change, message):
    broken = dict(model)
    change(broken)
    with pytest.raises(CorruptWeightsError, match=message):
        read_flame_arrays(write_python2_pickle(tmp_path / "generic_model.pkl", broken))


def test_malformed_sparse_regressor(tmp_path, model):
    state = {"_shape": (5, 266), "maxprint": 50, "indices": np.array([0, 9], np.int32),
             "indptr": np.zeros(267, np.int32), "data": np.ones(2)}
    path = write_python2_pickle(tmp_path / "generic_model.pkl", model,
                                extra={"J_regressor": foreign_object("scipy.sparse.csc", "csc_matrix", state)})
    with pytest.raises(CorruptWeightsError, match="sparse 'J_regressor' is malformed"):
        read_flame_arrays(path)


# ---------------------------------------------------------------------------------------------------- eyelids

def test_eyelids_beside_the_model(tmp_path):
    written = write_flame_folder(tmp_path, seed=5)
    left, right = read_eyelids(tmp_path, len(written["v_template"]))
    np.testing.assert_array_equal(left, written["l_eyelid"])
    np.testing.assert_array_equal(right, written["r_eyelid"])
    assert read_eyelids(tmp_path / "nowhere", 10) is None


def test_half_a_pair_or_a_wrong_shape_is_refused(tmp_path):
    left, right = random_eyelids(20)
    np.save(tmp_path / "l_eyelid.npy", left)
    with pytest.raises(CorruptWeightsError, match=r"not .*r_eyelid\.npy.*smirk"):
        read_eyelids(tmp_path, 20)
    np.save(tmp_path / "r_eyelid.npy", right[:10])
    with pytest.raises(CorruptWeightsError, match=r"r_eyelid\.npy holds float64 \(10, 3\), expected .*\(20, 3\)"):
        read_eyelids(tmp_path, 20)
    np.save(tmp_path / "r_eyelid.npy", np.array([right], dtype=object), allow_pickle=True)
    with pytest.raises(CorruptWeightsError, match=r"Cannot read .*r_eyelid\.npy"):
        read_eyelids(tmp_path, 20)               # pickled .npy files are never loaded


def test_a_missing_model_says_where_to_get_it(tmp_path):
    with pytest.raises(WeightsNotFoundError) as err:
        find_weight(FLAME, [tmp_path / "models" / "arc2face"], download=True)
    text = str(err.value)
    for part in ("flame/generic_model.pkl", str(tmp_path / "models" / "arc2face"), "flame.is.tue.mpg.de",
                 "register", "cannot be downloaded automatically"):
        assert part in text
