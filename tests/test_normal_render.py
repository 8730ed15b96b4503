"""The pieces of the FLAME-free pose hint (arc2face_core.pose: rasterizer; faces.head_pose), checked
against independent computations (closed-form geometry, scipy's rotations, insightface's own pose code on a rigged
tiny 1k3d68 model). The generic-head renders themselves: tests/test_generic_head.py."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from arc2face_core.errors import (
    CorruptWeightsError,
    InvalidInputError,
    NoFaceError,
    WeightsNotFoundError,
    WrongModelError,
)
from arc2face_core.faces.head_pose import angles_from_rotation, estimate_head_pose, rotation_from_angles
from arc2face_core.faces.landmarks import load_landmark_model, mean_shape
from arc2face_core.pose.rasterizer import interpolate, rasterize
from arc2face_core.pose.render import render_normal_map
from arc2face_core.weights import ModelRoots
from builders.onnx_faces import build_recogniser, truncate
from builders.onnx_landmarks import build_landmarks_2d, build_rigged_landmarks, posed_mean_shape
from fixtures_faces import write_face_models

CPU = ["CPUExecutionProvider"]
LANDMARKS_REL = Path("insightface/models/antelopev2/1k3d68.onnx")
RIGGED_ANGLES = (12.0, -28.0, 9.0)      # pitch, yaw, roll of the face the rigged 1k3d68 model "sees"


def euler(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """R = Rz(roll) Ry(yaw) Rx(pitch) by scipy (intrinsic Z-Y-X), independent of the engine's own formula."""
    return Rotation.from_euler("ZYX", [roll, yaw, pitch], degrees=True).as_matrix()


# ------------------------------------------------------------------------------------------------ angles

@pytest.mark.parametrize("angles", [(0, 0, 0), (12, -28, 9), (-35, 60, -120), (80, -5, 170), (-60, -75, 45)])
def test_angles_round_trip_and_match_insightface(angles):
    from insightface.utils.transform import matrix2angle

    rotation = rotation_from_angles(*angles)
    np.testing.assert_allclose(rotation, euler(*angles), atol=1e-12)
    np.testing.assert_allclose(angles_from_rotation(rotation), angles, atol=1e-9)
    np.testing.assert_allclose(matrix2angle(rotation), angles, atol=1e-9)


def test_gimbal_lock_decomposes_like_insightface():
    from insightface.utils.transform import matrix2angle

    rotation = euler(20, 90, 15)
    np.testing.assert_allclose(angles_from_rotation(rotation), matrix2angle(rotation), atol=1e-9)
    np.testing.assert_allclose(rotation_from_angles(*angles_from_rotation(rotation)), rotation, atol=1e-6)


@pytest.mark.parametrize("matrix", [np.diag([1.0, 1.0, -1.0]), 2 * np.eye(3), np.full((3, 3), np.nan), np.eye(2)])
def test_non_rotations_are_refused(matrix):
    with pytest.raises(InvalidInputError):
        render_normal_map(None, matrix)


# ---------------------------------------------------------------------------------------------- rasteriser

def test_triangle_coverage_and_interpolation_are_exact():
    corners = np.array([[5.3, 4.1, 2.0], [58.7, 20.2, -1.0], [17.9, 60.6, 0.5]])
    fragments = rasterize(corners, np.array([[0, 1, 2]]), 64, 64)
    rows, cols = np.mgrid[0:64, 0:64]
    centres = np.stack([cols + 0.5, rows + 0.5], -1).reshape(-1, 2)
    contour = corners[:, :2].astype(np.float32)
    distance = np.array([cv2.pointPolygonTest(contour, (float(x), float(y)), True) for x, y in centres]).reshape(64, 64)
    clear = np.abs(distance) > 1e-3
    np.testing.assert_array_equal(fragments.covered[clear], distance[clear] > 0)

    # A linear function given at the corners must come back exactly at every covered pixel centre.
    a, b, c = 0.37, -1.25, 4.0
    values = a * corners[:, 0] + b * corners[:, 1] + c
    inside = fragments.covered
    got = interpolate(fragments, np.array([[0, 1, 2]]), values[:, None])[..., 0]
    np.testing.assert_allclose(got[inside], (a * centres[:, 0] + b * centres[:, 1] + c).reshape(64, 64)[inside],
                               atol=1e-9)
    plane = np.linalg.solve(np.column_stack([corners[:, :2], np.ones(3)]), corners[:, 2])
    np.testing.assert_allclose(fragments.depth[inside], (centres @ plane[:2] + plane[2]).reshape(64, 64)[inside],
                               atol=1e-9)
    assert (fragments.triangle[~inside] == -1).all() and np.isneginf(fragments.depth[~inside]).all()


@pytest.mark.parametrize("near_first", [True, False])
def test_z_buffer_keeps_the_nearer_triangle(near_first):
    far = [[2, 2, 1.0], [30, 2, 1.0], [2, 30, 1.0]]
    near = [[10, 10, 5.0], [40, 10, 5.0], [10, 40, 5.0]]
    vertices = np.array(near + far if near_first else far + near, np.float64)
    triangles = np.array([[0, 1, 2], [3, 4, 5]])
    near_id = 0 if near_first else 1
    fragments = rasterize(vertices, triangles, 48, 48)
    assert fragments.triangle[15, 15] == near_id          # both cover (15.5, 15.5): the nearer wins
    assert fragments.triangle[4, 4] == 1 - near_id        # only the far one covers (4.5, 4.5)
    assert fragments.triangle[30, 14] == near_id and fragments.depth[15, 15] == pytest.approx(5.0)


def test_back_faces_are_culled_on_request():
    front = np.array([[2, 2, 0.0], [20, 2, 0.0], [2, 20, 0.0]])       # positive signed area (clockwise on screen)
    back = front[[0, 2, 1]]
    for vertices, kept in ((front, True), (back, False)):
        fragments = rasterize(vertices, np.array([[0, 1, 2]]), 24, 24, cull_back_faces=True)
        assert fragments.covered.any() == kept
        # Without culling both windings cover the 171 pixel centres with x, y >= 2.5 and x + y <= 22.
        assert rasterize(vertices, np.array([[0, 1, 2]]), 24, 24).covered.sum() == 171


def test_hemisphere_normals_match_closed_form():
    radius, centre, size = 40.0, np.array([50.0, 50.0]), 100
    ring_count, segment_count = 40, 120
    rings = np.linspace(0.0, np.pi / 2, ring_count + 1)[1:]
    angles = np.linspace(0, 2 * np.pi, segment_count, endpoint=False)
    polar, azimuth = np.meshgrid(rings, angles, indexing="ij")
    unit = np.stack([np.sin(polar) * np.cos(azimuth), np.sin(polar) * np.sin(azimuth), np.cos(polar)], -1)
    unit = np.vstack([[0.0, 0.0, 1.0], unit.reshape(-1, 3)])
    vertices = np.column_stack([centre + radius * unit[:, :2], radius * unit[:, 2]])
    triangles = []
    for ring in range(ring_count):
        for seg in range(segment_count):
            nxt = (seg + 1) % segment_count
            if ring == 0:
                triangles.append([0, 1 + seg, 1 + nxt])   # azimuth grows clockwise on screen: front-facing
                continue
            a, b = 1 + (ring - 1) * segment_count + seg, 1 + (ring - 1) * segment_count + nxt
            c, d = a + segment_count, b + segment_count     # c, d: one ring further out than a, b
            triangles += [[a, d, b], [a, c, d]]
    triangles = np.array(triangles)
    fragments = rasterize(vertices, triangles, size, size, cull_back_faces=True)
    normals = interpolate(fragments, triangles, unit)
    rows, cols = np.mgrid[0:size, 0:size]
    offset = np.stack([cols + 0.5 - centre[0], rows + 0.5 - centre[1]], -1) / radius
    rho2 = (offset ** 2).sum(-1)
    interior = rho2 < 0.9 ** 2
    assert fragments.covered[interior].all() and not fragments.covered[rho2 > 1.0001].any()
    expected = np.concatenate([offset, np.sqrt(np.clip(1 - rho2, 0, None))[..., None]], -1)
    got = normals[interior] / np.linalg.norm(normals[interior], axis=1, keepdims=True)
    assert np.abs(got - expected[interior]).max() < 0.01
    assert np.abs(fragments.depth[interior] - radius * expected[interior][:, 2]).max() < 0.2


# --------------------------------------------------------------------------------------------- pose from a photo

@pytest.fixture(scope="module")
def rigged_models(tmp_path_factory, astronaut_scene) -> ModelRoots:
    models = tmp_path_factory.mktemp("landmarks") / "models"
    roots = write_face_models(models, astronaut_scene)
    build_rigged_landmarks(models / LANDMARKS_REL, posed_mean_shape(euler(*RIGGED_ANGLES)))
    return roots


@pytest.fixture(scope="module")
def pose_models(rigged_models):
    from arc2face_core.faces.analysis import load_face_analyzer

    return load_face_analyzer(rigged_models, CPU), load_landmark_model(rigged_models, CPU)


def astronaut_bgr(scene) -> np.ndarray:
    return np.ascontiguousarray(scene.image[..., ::-1])


def test_pose_from_photo_matches_the_rig_and_insightface(pose_models, astronaut_scene):
    from insightface.app.common import Face

    analyzer, landmarks = pose_models
    image = astronaut_bgr(astronaut_scene)
    pose = estimate_head_pose(image, analyzer, landmarks)
    np.testing.assert_allclose((pose.pitch, pose.yaw, pose.roll), RIGGED_ANGLES, atol=0.01)
    np.testing.assert_allclose(pose.rotation, euler(*RIGGED_ANGLES), atol=1e-5)
    np.testing.assert_allclose(pose.landmarks, posed_mean_shape(euler(*RIGGED_ANGLES)), atol=1e-3)
    np.testing.assert_allclose(pose.face.bbox, astronaut_scene.faces[0].bbox, atol=1e-4)

    record = Face(bbox=pose.face.bbox, kps=pose.face.kps, det_score=pose.face.score)
    landmarks.get(image, record)                              # insightface's own pose for the same face
    np.testing.assert_allclose((pose.pitch, pose.yaw, pose.roll), record["pose"], atol=1e-4)
    np.testing.assert_allclose(pose.landmarks, record["landmark_3d_68"], atol=1e-6)

    # The reference's own shape, pose and scale removed: here the rig's mean shape.
    np.testing.assert_allclose(pose.canonical, mean_shape(), atol=1e-4)
    from_photo = render_normal_map(pose.canonical, pose.rotation)
    typed = render_normal_map(None, rotation_from_angles(*RIGGED_ANGLES))
    assert (np.abs(from_photo - typed).max(-1) > 1e-3).mean() < 0.002


@pytest.mark.parametrize("z_sign", [1.0, -1.0])
def test_canonical_shape_undoes_pose_scale_and_z_convention(z_sign):
    from insightface.utils import transform

    from arc2face_core.faces.head_pose import canonical_shape

    shape = mean_shape()
    shape[48:68, 1] += 0.05 * np.sign(shape[48:68, 1] - shape[48:68, 1].mean())    # an open mouth: not the mean
    posed = 90 * shape @ euler(-15, 35, -6).T + [300, 210, 40]
    posed[:, 2] *= z_sign                      # a landmark model whose z would point away from the camera
    affine = transform.estimate_affine_matrix_3d23d(mean_shape(), posed)
    scale, rotation, _ = transform.P2sRt(affine)
    canonical = canonical_shape(posed, affine, rotation, scale)
    # Up to the similarity that maps it onto the mean shape's centroid and size, it is the shape that was posed.
    centred = shape - shape.mean(0)
    reference = mean_shape() - mean_shape().mean(0)
    expected = centred * np.sqrt((reference ** 2).sum() / (centred ** 2).sum()) + mean_shape().mean(0)
    np.testing.assert_allclose(canonical, expected, atol=0.01)   # vs 0.05 for the mean shape itself


def test_pose_reference_face_choice(pose_models, astronaut_scene):
    analyzer, landmarks = pose_models
    image = astronaut_bgr(astronaut_scene)
    assert estimate_head_pose(image, analyzer, landmarks, face="0").face.bbox[0] == pytest.approx(176.0, abs=1e-3)
    with pytest.raises(NoFaceError, match=r"Face index 3 .* only 1 face"):
        estimate_head_pose(image, analyzer, landmarks, face=3)
    with pytest.raises(InvalidInputError):
        estimate_head_pose(image, analyzer, landmarks, face="biggest")


def test_black_pose_reference_has_no_face(pose_models, black_image):
    analyzer, landmarks = pose_models
    with pytest.raises(NoFaceError, match=r"Pose reference: No face found in image 1 of 1 \(512x512 pixels\)"):
        estimate_head_pose(black_image, analyzer, landmarks)


def test_missing_landmark_model_is_named(face_models):
    with pytest.raises(WeightsNotFoundError, match=r"1k3d68\.onnx") as info:
        load_landmark_model(face_models, CPU)
    assert str(face_models.insightface[0]) in str(info.value)


def test_wrong_or_damaged_landmark_model(tmp_path, rigged_models):
    roots = ModelRoots.under(tmp_path / "models")
    path = tmp_path / "models" / LANDMARKS_REL
    build_landmarks_2d(path)
    with pytest.raises(WrongModelError, match=r"1k3d68\.onnx is not .*landmark_2d_106"):
        load_landmark_model(roots, CPU)
    build_recogniser(path)
    with pytest.raises(WrongModelError, match="recognition model"):
        load_landmark_model(roots, CPU)
    path.write_bytes((rigged_models.insightface[0] / "models/antelopev2/1k3d68.onnx").read_bytes())
    truncate(path)
    with pytest.raises(CorruptWeightsError, match=r"1k3d68\.onnx"):
        load_landmark_model(roots, CPU)
