"""FLAME's LBS in torch (arc2face_core.pose.flame) against a numpy implementation written here from the paper's
formulas (Li et al. 2017, as docs/pose_hints.md, 'LBS' lists them), on small random files in FLAME's real key layout.

The numpy version takes rotations from scipy (``Rotation.from_rotvec``) and skins each vertex as
``Σ_j w_j (R_j^world (v_p - J_j) + J_j^posed)``, point by point, rather than through 4x4 "relative transforms".
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from arc2face_core.pose.face_parameters import FaceParameters
from arc2face_core.pose.flame import load_flame, rodrigues
from builders.flame import write_flame_folder


def numpy_flame(model: dict, shape, expression, pose, jaw, eyelids=None) -> tuple[np.ndarray, np.ndarray]:
    """One face: FLAME's vertices and posed joints, written from the formulas (float64)."""
    dirs = np.concatenate([model["shapedirs"][:, :, :300], model["shapedirs"][:, :, 300:350]], axis=2)
    v_shaped = model["v_template"] + dirs @ np.concatenate([shape, expression])
    rest_joints = model["J_regressor"] @ v_shaped
    parents = [-1, 0, 1, 1, 1]
    local = [Rotation.from_rotvec(r).as_matrix() for r in (pose, np.zeros(3), jaw, np.zeros(3), np.zeros(3))]
    # Pose blendshapes: vec(R_j - I) of the four non-root joints, row by row, 9 values each.
    feature = np.concatenate([(local[j] - np.eye(3)).reshape(-1) for j in range(1, 5)])
    v_posed = v_shaped + np.einsum("vkp,p->vk", model["posedirs"], feature)
    world_rotation, posed_joint = [None] * 5, [None] * 5
    for j, parent in enumerate(parents):
        if parent < 0:
            world_rotation[j], posed_joint[j] = local[j], rest_joints[j]
        else:
            world_rotation[j] = world_rotation[parent] @ local[j]
            posed_joint[j] = posed_joint[parent] + world_rotation[parent] @ (rest_joints[j] - rest_joints[parent])
    vertices = np.zeros_like(v_posed)
    for j in range(5):
        moved = (v_posed - rest_joints[j]) @ world_rotation[j].T + posed_joint[j]
        vertices += model["weights"][:, j:j + 1] * moved
    if eyelids is not None:
        vertices = vertices + eyelids[0] * model["l_eyelid"] + eyelids[1] * model["r_eyelid"]
    return vertices, np.stack(posed_joint)


@pytest.fixture(scope="module")
def flame_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("flame")
    return folder, write_flame_folder(folder, seed=11, basis_scale=4e-3, pose_scale=5e-3)


def _random_params(count: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"shape": rng.normal(0, 1.0, (count, 300)), "expression": rng.normal(0, 1.0, (count, 50)),
            "pose": rng.normal(0, 0.35, (count, 3)), "jaw": np.abs(rng.normal(0, 0.2, (count, 3))),
            "eyelids": rng.uniform(0, 1, (count, 2))}


def test_lbs_matches_the_formulas(flame_files):
    folder, model = flame_files
    flame = load_flame(folder / "generic_model.pkl")
    assert flame.has_eyelids
    params = _random_params(3, seed=2)
    params["pose"][0] = 0.0                                  # the identity rotation (Rodrigues' 1e-8 guard)
    tensors = {k: torch.tensor(v, dtype=torch.float32) for k, v in params.items()}
    vertices, joints = flame(tensors["shape"], tensors["expression"], tensors["pose"], tensors["jaw"],
                             tensors["eyelids"])
    scale = np.abs(model["v_template"]).max()
    for i in range(3):
        expected, expected_joints = numpy_flame(model, *(params[k][i] for k in ("shape", "expression", "pose", "jaw",
                                                                                  "eyelids")))
        np.testing.assert_allclose(vertices[i].numpy(), expected, atol=2e-6 * scale / 0.1, rtol=0)
        np.testing.assert_allclose(joints[i].numpy(), expected_joints, atol=2e-6 * scale / 0.1, rtol=0)
    # The pose and the blendshapes do matter at this tolerance (the comparison can fail):
    unposed, _ = numpy_flame(model, params["shape"][1], params["expression"][1], np.zeros(3), np.zeros(3))
    assert np.abs(vertices[1].numpy() - unposed).max() > 1e-3


def test_eyelids_are_added_after_skinning_and_do_not_turn_with_the_head(flame_files):
    folder, model = flame_files
    flame = load_flame(folder / "generic_model.pkl")
    zeros = {k: torch.zeros(1, n) for k, n in (("shape", 300), ("expression", 50), ("jaw", 3))}
    turned = torch.tensor([[0.0, 1.2, 0.0]])
    closed = torch.tensor([[1.0, 0.5]])
    with_lids, _ = flame(zeros["shape"], zeros["expression"], turned, zeros["jaw"], closed)
    without, _ = flame(zeros["shape"], zeros["expression"], turned, zeros["jaw"])
    np.testing.assert_allclose((with_lids - without)[0].numpy(), model["l_eyelid"] + 0.5 * model["r_eyelid"],
                               atol=1e-7)


def test_face_parameters_drive_the_same_forward(flame_files):
    folder, model = flame_files
    flame = load_flame(folder / "generic_model.pkl")
    params = _random_params(2, seed=4)
    tensors = {k: torch.tensor(v, dtype=torch.float32) for k, v in params.items()}
    batch = FaceParameters(shape=tensors["shape"], expression=tensors["expression"], eyelids=tensors["eyelids"],
                           jaw=tensors["jaw"], pose=tensors["pose"], camera=torch.zeros(2, 3))
    vertices, _ = flame.vertices_of(batch)
    expected, _ = numpy_flame(model, *(params[k][1] for k in ("shape", "expression", "pose", "jaw", "eyelids")))
    np.testing.assert_allclose(vertices[1].numpy(), expected, atol=2e-6)
    joints = flame.rest_joints(tensors["shape"], tensors["expression"])[0].numpy()
    v_shaped = model["v_template"] + np.concatenate(
        [model["shapedirs"][:, :, :300], model["shapedirs"][:, :, 300:350]], 2) @ np.concatenate(
        [params["shape"][0], params["expression"][0]])
    np.testing.assert_allclose(joints, model["J_regressor"] @ v_shaped, atol=1e-6)


def test_without_eyelid_files_closed_lids_change_nothing_and_say_so(tmp_path, caplog):
    write_flame_folder(tmp_path, seed=3, eyelids=False)
    flame = load_flame(tmp_path / "generic_model.pkl")
    assert not flame.has_eyelids
    z = torch.zeros(1, 3)
    batch = FaceParameters(shape=torch.zeros(1, 300), expression=torch.zeros(1, 50), eyelids=torch.ones(1, 2),
                           jaw=z, pose=z, camera=z)
    open_lids, _ = flame(batch.shape, batch.expression, z, z)
    np.testing.assert_array_equal(flame.vertices_of(batch)[0].numpy(), open_lids.numpy())
    assert "l_eyelid.npy" in caplog.text and "stay open" in caplog.text


@pytest.mark.parametrize("axis_angle", [[0.0, 0.0, 0.0], [0.3, -1.1, 0.4], [np.pi - 1e-3, 0.0, 0.0], [2.0, 2.0, 1.0]])
def test_rodrigues_matches_scipy(axis_angle):
    expected = Rotation.from_rotvec(axis_angle).as_matrix()
    got = rodrigues(torch.tensor([axis_angle], dtype=torch.float64))[0].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-7)
