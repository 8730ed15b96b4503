"""Head pose of real (non-rigid, noisy) faces: the nearest rotation to insightface's fit, its angles, and a hint.

insightface's ``P2sRt`` is a rotation only for an exact rigid copy of its mean shape. Here the faces have an open
mouth and landmark noise of 0.1% of the face width, over many poses; the expected pose is the one the face was posed
with (scipy's rotations), never the code under test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from arc2face_core.errors import InvalidInputError
from arc2face_core.faces.head_pose import (
    angles_from_rotation,
    check_rotation,
    estimate_head_pose,
    rotation_from_affine,
)
from arc2face_core.faces.landmarks import load_landmark_model
from arc2face_core.pose.render import normal_maps_from_photos, render_normal_map
from builders.onnx_landmarks import build_rigged_landmarks
from face_shapes import NOISE_OF_FACE_WIDTH, insightface_mean_shape, open_mouth_shape, posed_landmarks
from fixtures_faces import write_face_models

CPU = ["CPUExecutionProvider"]
POSES = 50
PHOTO_POSE = (10.0, -25.0, 5.0)     # pitch, yaw, roll of the rigged photo's face


def rotation(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """R = Rz(roll) Ry(yaw) Rx(pitch) (insightface's convention), by scipy."""
    return Rotation.from_euler("ZYX", [roll, yaw, pitch], degrees=True).as_matrix()


def angle_between(a: np.ndarray, b: np.ndarray) -> float:
    """The geodesic distance of two rotations, in degrees."""
    return float(np.degrees(np.arccos(np.clip((np.trace(a.T @ b) - 1) / 2, -1.0, 1.0))))


def insightface_fit(points: np.ndarray):
    from insightface.utils import transform

    mean = insightface_mean_shape().astype(np.float32)
    return transform.estimate_affine_matrix_3d23d(mean, np.asarray(points, np.float32))


def random_poses(count: int, seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).uniform([-25, -50, -20], [25, 50, 20], size=(count, 3))


def test_noisy_open_mouth_faces_give_a_rotation_near_the_posed_one():
    from insightface.utils import transform

    shape, p2srt_failures = open_mouth_shape(), 0
    for index, angles in enumerate(random_poses(POSES)):
        truth = rotation(*angles)
        affine = insightface_fit(posed_landmarks(shape, truth, noise=NOISE_OF_FACE_WIDTH, seed=index))
        _, fitted = rotation_from_affine(affine)
        assert np.abs(fitted @ fitted.T - np.eye(3)).max() < 1e-12 and np.linalg.det(fitted) == pytest.approx(1.0)
        assert angle_between(fitted, truth) < 1.0, (index, angles)
        np.testing.assert_allclose(angles_from_rotation(fitted), angles, atol=1.0)
        assert render_normal_map(None, fitted, 64).shape == (64, 64, 3)
        _, theirs, _ = transform.P2sRt(affine)
        try:
            check_rotation(theirs)
        except InvalidInputError:
            p2srt_failures += 1
    # The same faces through insightface's own decomposition: almost none is a rotation (the bug this guards).
    assert p2srt_failures > 0.8 * POSES


@pytest.mark.parametrize("angles", [(0.0, 0.0, 0.0), (12.0, -28.0, 9.0), (-20.0, 45.0, -15.0)])
def test_a_rigid_face_keeps_insightface_pose(angles):
    """For an exact rigid copy of the mean shape P2sRt's R is a rotation: the nearest rotation is that same R."""
    from insightface.utils import transform

    affine = insightface_fit(posed_landmarks(insightface_mean_shape(), rotation(*angles)))
    scale, fitted = rotation_from_affine(affine)
    their_scale, theirs, _ = transform.P2sRt(affine)
    np.testing.assert_allclose(fitted, theirs, atol=1e-5)
    assert scale == pytest.approx(their_scale, rel=1e-6)
    np.testing.assert_allclose(angles_from_rotation(fitted), transform.matrix2angle(theirs), atol=1e-3)
    np.testing.assert_allclose(angles_from_rotation(fitted), angles, atol=1e-3)


def test_degenerate_landmarks_are_no_face():
    from arc2face_core.errors import NoFaceError

    with pytest.raises(NoFaceError, match="degenerate"):
        rotation_from_affine(np.zeros((3, 4)))


@pytest.fixture(scope="module")
def non_rigid_photo(tmp_path_factory, astronaut_scene):
    """The astronaut photo with a rigged 1k3d68 that 'sees' an open mouth, noisy landmarks, posed at PHOTO_POSE."""
    from arc2face_core.faces.analysis import load_face_analyzer

    models = tmp_path_factory.mktemp("non_rigid") / "models"
    roots = write_face_models(models, astronaut_scene)
    points = posed_landmarks(open_mouth_shape(), rotation(*PHOTO_POSE), noise=NOISE_OF_FACE_WIDTH, seed=0)
    build_rigged_landmarks(models / Path("insightface/models/antelopev2/1k3d68.onnx"), points)
    image = np.ascontiguousarray(astronaut_scene.image[..., ::-1])
    return image, load_face_analyzer(roots, CPU), load_landmark_model(roots, CPU)


def test_pose_and_hint_from_a_photo_of_a_non_rigid_face(non_rigid_photo):
    """Through insightface's own landmark code: the pose is a rotation near the posed one, both hints render."""
    from insightface.utils import transform

    image, analyzer, landmarks = non_rigid_photo
    pose = estimate_head_pose(image, analyzer, landmarks)
    _, theirs, _ = transform.P2sRt(insightface_fit(pose.landmarks))
    with pytest.raises(InvalidInputError, match="not a rotation"):   # the case the old code failed on
        check_rotation(theirs)
    check_rotation(pose.rotation)
    assert angle_between(pose.rotation, rotation(*PHOTO_POSE)) < 1.0
    np.testing.assert_allclose((pose.pitch, pose.yaw, pose.roll), PHOTO_POSE, atol=1.0)
    for own_shape in (False, True):
        hints, poses = normal_maps_from_photos([image], analyzer, landmarks, own_shape=own_shape, size=64)
        assert hints.shape == (1, 64, 64, 3) and (np.abs(hints - 0.5) > 0.05).any()   # a face, not blank


def test_the_reference_face_setting_shapes_the_hint(non_rigid_photo):
    """'mean face' and 'reference face' give different hints: the first is the generic head at the photo's pose, the
    second that head shaped like the photo's face (here: its parted lips open the mouth)."""
    image, analyzer, landmarks = non_rigid_photo
    mean_hints, poses = normal_maps_from_photos([image], analyzer, landmarks, own_shape=False)
    own_hints, _ = normal_maps_from_photos([image], analyzer, landmarks, own_shape=True)
    pose = poses[0]
    np.testing.assert_array_equal(mean_hints[0], render_normal_map(None, pose.rotation))
    np.testing.assert_array_equal(own_hints[0], render_normal_map(pose.canonical, pose.rotation))
    assert (np.abs(own_hints[0] - mean_hints[0]) > 2 / 255).any(-1).mean() > 0.05
    # The photo's upper and lower lip are 0.1 mean-face units (~1 cm) further apart than the mean face's: the shaped
    # head's are too, and its skull keeps its shape.
    from arc2face_core.pose.generic_head import build_generic_head
    from arc2face_core.pose.own_shape import shaped_like

    head = build_generic_head()
    vertices, points = shaped_like(head, pose.canonical)
    gap = lambda p: p[57, 1] - p[51, 1]          # noqa: E731  (y down: the lower lip's height below the upper)
    assert gap(points) - gap(head.landmarks) > 6.0
    crown = head.vertices[:, 1] < -60.0           # more than 6 cm above the eyes
    assert np.abs(vertices[crown] - head.vertices[crown]).max() < 0.5
