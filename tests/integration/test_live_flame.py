"""The FLAME loader and the normal-map nodes in a real ComfyUI: prompts on the server, and the node classes in
ComfyUI's own interpreter (its model folders and memory manager) for FLAME parameters no node here makes yet.

The session's models folder holds a small random FLAME in FLAME 2020's pickle layout (tests/builders/flame.py) with
SMIRK-style eyelids; the expected hints are the core's renders of that same file, made here.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
from PIL import Image

from arc2face_core.expression.vectors import make_expression
from arc2face_core.faces.head_pose import rotation_from_angles
from arc2face_core.pose.flame import load_flame
from arc2face_core.pose.flame_hint import flame_normal_maps, typed_face_parameters
from arc2face_core.pose.render import render_normal_map
from comfyui_client import outputs
from fixtures_comfyui import FLAME_SEED, run_in_comfyui

CHECKS = Path(__file__).resolve().parents[1] / "comfyui_checks"


def _saved(comfy, entry: dict, node_id: str) -> list[np.ndarray]:
    return [np.asarray(Image.open(comfy.root / "output" / image["subfolder"] / image["filename"]))
            for image in outputs(entry, node_id)]


def test_flame_nodes_inside_comfyui(comfy_install):
    m = run_in_comfyui(comfy_install, CHECKS / "flame_nodes.py")
    assert m["model_file"].endswith("models/arc2face/flame/generic_model.pkl")
    assert m["cached"] and m["eyelids"] and m["managed"]          # one load, SMIRK's eyelids, memory-managed
    assert m["hint_shape"] == [2, 512, 512, 3] and m["hint_vs_core"] == 0.0
    assert m["identity_shape_used"] > 0.1 and abs(m["background"] - 127 / 255) < 1e-7
    assert m["angles_shape"] == [3, 512, 512, 3] and m["angles_vs_core"] == 0.0
    errors = m["errors"]
    assert "3 identity shapes for 2 pose references" in errors["identity_batch"]
    assert "pose_params must be FLAME face parameters, got Tensor" in errors["not_params"]
    assert "flame must come from Arc2Face FLAME Loader" in errors["not_flame"]
    for path in ("eyelids_flame", "eyelids_generic"):   # the same ranges as the Expression Adapter, with or without FLAME
        assert ("InvalidInputError: expression (row 2 of 2) has an eyelid value of 5; it must be 0 (open) to 1 "
                "(closed)") in errors[path], errors[path]


def test_angles_node_renders_flame_with_an_expression(comfy):
    tag = uuid.uuid4().hex[:8]
    prompt = {
        "1": {"class_type": "Arc2FaceFLAMELoader", "inputs": {}},
        "2": {"class_type": "Arc2FaceExpression", "inputs": {"jaw_open": 0.3, "eyelid_left": 1.0,
                                                             "eyelid_right": 0.0, "coefficients": "1.5, -1"}},
        "3": {"class_type": "Arc2FaceNormalMapFromAngles", "inputs": {
            "yaw": 25.0, "pitch": -10.0, "roll": 4.0, "expression": ["2", 0], "flame": ["1", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": f"flame_{tag}"}},
        "5": {"class_type": "Arc2FaceNormalMapFromAngles", "inputs": {"yaw": 25.0, "pitch": -10.0, "roll": 4.0}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": f"generic_{tag}"}},
    }
    entry = comfy.run_ok(prompt)
    (with_flame,), (generic,) = _saved(comfy, entry, "4"), _saved(comfy, entry, "6")
    flame = load_flame(comfy.root / "models" / "arc2face" / "flame" / "generic_model.pkl")
    expression = make_expression(0.3, (1.0, 0.0), "1.5, -1")
    np.testing.assert_array_equal(with_flame, flame_normal_maps(flame, typed_face_parameters(-10, 25, 4, expression))[0])
    expected = render_normal_map(None, rotation_from_angles(-10, 25, 4), roll_in_frame=True)
    np.testing.assert_array_equal(generic, np.round(expected * 255).astype(np.uint8))
    assert (with_flame != generic).any(-1).mean() > 0.05


def test_an_expression_without_flame_opens_the_generic_heads_jaw(comfy):
    """Without FLAME the generic head takes the expression's jaw opening and eyelids: one hint per expression row,
    each the core's render with that jaw and those eyelids, framed as the head at rest."""
    tag = uuid.uuid4().hex[:8]
    prompt = {
        "2": {"class_type": "Arc2FaceExpression", "inputs": {"jaw_open": 0.4, "eyelid_left": 1.0,
                                                             "eyelid_right": 0.0, "coefficients": ""}},
        "7": {"class_type": "ImageBatch", "inputs": {"image1": ["3", 0], "image2": ["5", 0]}},
        "3": {"class_type": "Arc2FaceNormalMapFromAngles", "inputs": {"yaw": -15.0, "pitch": 0.0, "roll": 0.0,
                                                                     "expression": ["2", 0]}},
        "5": {"class_type": "Arc2FaceNormalMapFromAngles", "inputs": {"yaw": -15.0, "pitch": 0.0, "roll": 0.0}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": f"noexp_{tag}"}},
    }
    with_expression, without = _saved(comfy, comfy.run_ok(prompt), "4")
    rotation = rotation_from_angles(0, -15, 0)
    opened = render_normal_map(None, rotation, roll_in_frame=True, jaw=[np.float32(0.4), 0.0, 0.0],
                               eyelids=[1.0, 0.0])          # (an expression holds float32 values)
    np.testing.assert_array_equal(with_expression, np.round(opened * 255).astype(np.uint8))
    np.testing.assert_array_equal(without, np.round(render_normal_map(None, rotation, roll_in_frame=True) * 255)
                                  .astype(np.uint8))
    assert (with_expression != without).any(-1).mean() > 0.01


def test_the_flame_loader_follows_its_files(comfy, tmp_path):
    """Removing SMIRK's eyelid files, replacing generic_model.pkl or deleting it takes effect on the next prompt: the
    loader has no inputs, and ComfyUI used to keep the first model until /free. The session's files are restored."""
    import shutil

    from builders.flame import write_flame_folder

    folder = comfy.root / "models" / "arc2face" / "flame"
    backup = tmp_path / "backup"
    shutil.copytree(folder, backup)
    expression = make_expression(0.2, (1.0, 1.0), "")        # closed eyelids: they show only with the eyelid files
    params = typed_face_parameters(5, -20, 0, expression)

    def hint_of_server() -> np.ndarray:
        tag = uuid.uuid4().hex[:8]
        prompt = {
            "1": {"class_type": "Arc2FaceFLAMELoader", "inputs": {}},
            "2": {"class_type": "Arc2FaceExpression", "inputs": {"jaw_open": 0.2, "eyelid_left": 1.0,
                                                                 "eyelid_right": 1.0, "coefficients": ""}},
            "3": {"class_type": "Arc2FaceNormalMapFromAngles", "inputs": {
                "yaw": -20.0, "pitch": 5.0, "roll": 0.0, "expression": ["2", 0], "flame": ["1", 0]}},
            "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": f"files_{tag}"}},
        }
        return _saved(comfy, comfy.run_ok(prompt), "4")[0]

    def hint_of_files() -> np.ndarray:
        return flame_normal_maps(load_flame(folder / "generic_model.pkl"), params)[0]

    try:
        with_eyelids = hint_of_server()
        np.testing.assert_array_equal(with_eyelids, hint_of_files())
        for name in ("l_eyelid.npy", "r_eyelid.npy"):
            (folder / name).unlink()
        without_eyelids = hint_of_server()
        np.testing.assert_array_equal(without_eyelids, hint_of_files())
        assert (without_eyelids != with_eyelids).any()
        other = tmp_path / "other"
        other.mkdir()
        write_flame_folder(other, seed=FLAME_SEED + 7, eyelids=False)
        shutil.copyfile(other / "generic_model.pkl", folder / "generic_model.pkl")
        replaced = hint_of_server()
        np.testing.assert_array_equal(replaced, hint_of_files())
        assert (replaced != without_eyelids).any()
        (folder / "generic_model.pkl").unlink()
        error = comfy.run_error({
            "1": {"class_type": "Arc2FaceFLAMELoader", "inputs": {}},
            "3": {"class_type": "Arc2FaceNormalMapFromAngles", "inputs": {
                "yaw": -20.0, "pitch": 5.0, "roll": 0.0, "flame": ["1", 0]}},
            "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}}})
        assert "FLAME 2020 head model (generic_model.pkl) not found" in error, error
    finally:
        shutil.rmtree(folder)
        shutil.copytree(backup, folder)
