"""The EMOCA-free pose hint (arc2face_core.pose: render, face_surface, rasterizer; faces.head_pose): real renders, checked against
independent computations (closed-form geometry, FFHQ's image_align written out here, scipy's rotations, insightface's
own pose code on a rigged tiny 1k3d68 model)."""

from __future__ import annotations

import math
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
from arc2face_core.pose.face_surface import FOREHEAD_HEIGHT, build_face_surface
from arc2face_core.pose.rasterizer import interpolate, rasterize
from arc2face_core.pose.render import render_face_normals, render_normal_map
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


def ffhq_frame_errors(lm: np.ndarray, size: int = 512) -> dict[str, float]:
    """How far 68 landmarks in an output image are from FFHQ's framing of them, read in that image.

    FFHQ's image_align crops the square c ± x ± y with, from the eye centres and mouth corners: e = right eye - left
    eye, m = mouth centre - eye centre, c = eye centre + 0.1 m, x along e - rot90(m) (rot90(m) = (-m_y, m_x)) with
    |x| = max(2 |e|, 1.8 |m|), y = rot90(x). In the aligned image that square is the whole frame: c is its centre and
    x points right with length size / 2. Zero for a correct framing.
    """
    eye_left, eye_right = lm[36:42].mean(0), lm[42:48].mean(0)
    eye_centre = (eye_left + eye_right) / 2
    e, m = eye_right - eye_left, (lm[48] + lm[54]) / 2 - eye_centre
    x = e + np.array([m[1], -m[0]])   # e - rot90(m): its direction only
    half = max(2 * np.hypot(*e), 1.8 * np.hypot(*m))
    return {"centre": float(np.hypot(*(eye_centre + 0.1 * m - size / 2))),
            "tilt": abs(math.degrees(math.atan2(x[1], x[0]))),
            "half_side": abs(half - size / 2)}


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def normals_of(image: np.ndarray) -> np.ndarray:
    return (image.astype(np.float64) - 0.5) * 2.0


def pixel(image: np.ndarray, point: np.ndarray) -> np.ndarray:
    return image[int(math.floor(point[1])), int(math.floor(point[0]))]


@pytest.fixture(scope="module")
def frontal():
    return render_face_normals()


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


@pytest.mark.parametrize("matrix, message", [
    (np.diag([1.0, 1.0, -1.0]), r"not a rotation \(it must be orthonormal with determinant \+1\)"),   # a mirror
    (2 * np.eye(3), "not a rotation"),
    (np.full((3, 3), np.nan), "must be a finite 3x3 matrix"),
    (np.eye(2), r"must be a finite 3x3 matrix, got shape \(2, 2\)"),
])
def test_non_rotations_are_refused(matrix, message):
    with pytest.raises(InvalidInputError, match=message):
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


# ---------------------------------------------------------------------------------------------- face surface

def test_surface_is_deterministic_smooth_and_through_the_landmarks():
    shape = mean_shape()
    first, second = build_face_surface(shape), build_face_surface(shape)
    np.testing.assert_array_equal(first.vertices, second.vertices)
    np.testing.assert_array_equal(first.triangles, second.triangles)
    assert 5000 < len(first.vertices) and 10000 < len(first.triangles) < 40000
    np.testing.assert_allclose(np.linalg.norm(first.normals, axis=1), 1.0, atol=1e-12)
    assert (first.normals[:, 2] > 0).all()
    corners = first.vertices[first.triangles][..., :2]
    e1, e2 = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
    assert (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0] > 0).all()

    eye_to_mouth = np.linalg.norm((shape[48, :2] + shape[54, :2]) / 2
                                  - (shape[36:42, :2].mean(0) + shape[42:48, :2].mean(0)) / 2)
    # The fitted height passes close to every landmark (nearest vertex, in eye-to-mouth units).
    nearest = np.argmin(((first.vertices[None, :, :2] - shape[:, None, :2]) ** 2).sum(-1), axis=1)
    close = np.linalg.norm(first.vertices[nearest, :2] - shape[:, :2], axis=1) < 0.01 * eye_to_mouth
    assert close.sum() > 20
    assert np.abs(first.vertices[nearest[close], 2] - shape[close, 2]).max() < 0.03 * eye_to_mouth
    # Forehead reaches FOREHEAD_HEIGHT eye-to-mouth distances above the mean brow line; the chin bounds the bottom.
    top = first.vertices[:, 1].min()
    assert top == pytest.approx(shape[17:27, 1].mean() - FOREHEAD_HEIGHT * eye_to_mouth, abs=0.01)
    assert first.vertices[:, 1].max() == pytest.approx(shape[8, 1], abs=1e-9)


# ------------------------------------------------------------------------------------------------- renders

def test_frontal_render_basics(frontal):
    image = frontal.image
    assert image.shape == (512, 512, 3) and image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    face = frontal.coverage > 0
    assert set(np.unique(frontal.coverage)) == {0.0, 1.0}
    assert (image[~face] == 0.5).all()
    assert 0.25 < face.mean() < 0.45
    normals = normals_of(image[face])
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=0.01)   # unit normals
    assert abs(normals[:, 0].mean()) < 0.01 and normals[:, 2].min() >= -1e-6

    # The nearest point of the frontal face (the nose tip) faces the camera: RGB ~ (0.5, 0.5, 1.0).
    surface = build_face_surface()
    tip = surface.vertices[np.argmax(surface.vertices[:, 2]), :2]
    np.testing.assert_allclose(pixel(image, apply(frontal.transform, tip)), [0.5, 0.5, 1.0], atol=0.04)
    # Right side reddish, left side less red, forehead top greenish, chin underside less green.
    lm = frontal.landmarks_2d
    cheek = lambda i: lm[i] + 12 * (lm[30] - lm[i]) / np.linalg.norm(lm[30] - lm[i])     # noqa: E731
    assert pixel(image, cheek(14))[0] > 0.8 and pixel(image, cheek(2))[0] < 0.2
    assert pixel(image, (lm[19] + lm[24]) / 2 - [0, 60])[1] > 0.5 > pixel(image, lm[8] - [0, 4])[1]


def test_ffhq_quad_by_hand():
    """Eyes at (-1, 0) and (1, 0), mouth corners at (-0.8, 1.2) and (0.8, 1.2), worked through image_align by hand:
    e = (2, 0), m = (0, 1.2), x = e - (-1.2, 0) = (3.2, 0) scaled to max(2 * 2, 1.8 * 1.2) = 4, y = (0, 4),
    c = (0, 0.12): corners (-4, -3.88), (-4, 4.12), (4, 4.12), (4, -3.88)."""
    from arc2face_core.faces.ffhq import ffhq_quad, quad_to_square

    lm = np.random.default_rng(0).uniform(-3, 3, (68, 2))
    lm[36:42] = [-1, 0] + np.random.default_rng(1).normal(0, 0.1, (6, 2))
    lm[36:42] -= lm[36:42].mean(0) - [-1, 0]                      # six points whose mean is the eye centre
    lm[42:48] = lm[36:42] + [2, 0]
    lm[48], lm[54] = [-0.8, 1.2], [0.8, 1.2]
    quad = ffhq_quad(lm)
    np.testing.assert_allclose(quad, [[-4, -3.88], [-4, 4.12], [4, 4.12], [4, -3.88]], atol=1e-12)
    frame = quad_to_square(quad, 512)
    np.testing.assert_allclose(apply(frame, quad), [[0, 0], [0, 512], [512, 512], [512, 0]], atol=1e-9)
    np.testing.assert_allclose(apply(frame, (lm[36:42].mean(0), lm[42:48].mean(0))), [[192, 248.32], [320, 248.32]],
                               atol=1e-9)


def test_framing_follows_image_align(frontal):
    # A turned, nodding face: the square FFHQ would crop from its projected landmarks is the frame.
    render = render_face_normals(None, euler(8, -20, 0), 512)
    errors = ffhq_frame_errors(render.landmarks_2d)
    assert errors["centre"] < 1e-3 and errors["tilt"] < 1e-4 and errors["half_side"] < 1e-3, errors
    lm = frontal.landmarks_2d
    assert max(ffhq_frame_errors(lm).values()) < 1e-3
    # a typed roll turns the frame with the face (roll_in_frame): the framing reads the roll back
    rolled = render_face_normals(None, rotation_from_angles(8, -20, 12), 512, roll_in_frame=True)
    assert ffhq_frame_errors(rolled.landmarks_2d)["tilt"] == pytest.approx(12, abs=0.05)
    # (a frame off by a pixel or a tenth of a degree would show: the check reads the framing, not the renderer)
    shifted = render.landmarks_2d + [1.0, 0.0]
    assert ffhq_frame_errors(shifted)["centre"] > 0.99

    # The image agrees: the frontal face's jaw contour is its silhouette (face 4 px inside, background 4 px outside).
    jaw = lm[1:16]
    middle = jaw.mean(0)
    outward = (jaw - middle) / np.linalg.norm(jaw - middle, axis=1, keepdims=True)
    assert all(frontal.coverage[int(p[1]), int(p[0])] == 1 for p in jaw - 4 * outward)
    assert all(frontal.coverage[int(p[1]), int(p[0])] == 0 for p in jaw + 4 * outward)


def test_face_size_follows_the_quad_geometry(frontal):
    shape = mean_shape()
    eye_to_eye = np.linalg.norm(shape[42:48, :2].mean(0) - shape[36:42, :2].mean(0))
    eye_to_mouth = np.linalg.norm((shape[48, :2] + shape[54, :2]) / 2
                                  - (shape[36:42, :2].mean(0) + shape[42:48, :2].mean(0)) / 2)
    assert 2.0 * eye_to_eye > 1.8 * eye_to_mouth        # so the quad's side is 4 eye distances
    lm = frontal.landmarks_2d
    assert np.linalg.norm(lm[42:48].mean(0) - lm[36:42].mean(0)) == pytest.approx(512 / 4, abs=1e-6)
    # Face width at the height of jaw points 0 and 16: their distance, in quad units.
    row = int(round((lm[0, 1] + lm[16, 1]) / 2)) + 6
    columns = np.flatnonzero(frontal.coverage[row])
    width = 512 / 4 * np.linalg.norm(shape[16, :2] - shape[0, :2]) / eye_to_eye
    assert columns[-1] - columns[0] + 1 == pytest.approx(width, abs=4)


def test_yaw_flips_x_and_mirrors_the_image():
    plus = render_face_normals(None, rotation_from_angles(0, 30, 0))
    minus = render_face_normals(None, rotation_from_angles(0, -30, 0))
    x_plus = normals_of(plus.image[plus.coverage > 0])[:, 0].mean()
    x_minus = normals_of(minus.image[minus.coverage > 0])[:, 0].mean()
    assert abs(x_plus) > 0.02 and x_plus == pytest.approx(-x_minus, abs=0.02)
    # Yaw > 0 turns the nose to image right (as for insightface's face['pose']): its normal points right.
    for render, sign in ((plus, 1), (minus, -1)):
        nose = normals_of(pixel(render.image, render.landmarks_2d[30]))
        assert sign * nose[0] > 0.35
        lm = render.landmarks_2d
        assert sign * (lm[30, 0] - (lm[36:42, 0].mean() + lm[42:48, 0].mean()) / 2) > 10   # nose right of the eyes
    mirrored = minus.image[:, ::-1].copy()
    mirrored[..., 0] = 1.0 - mirrored[..., 0]
    face_plus, face_mirrored = plus.coverage > 0, minus.coverage[:, ::-1] > 0
    both = face_plus & face_mirrored
    assert both.sum() / (face_plus | face_mirrored).sum() > 0.97          # the mean shape is nearly symmetric
    assert np.abs(plus.image[both] - mirrored[both]).mean() < 0.02


def test_pitch_flips_y(frontal):
    up = render_face_normals(None, rotation_from_angles(20, 0, 0))
    down = render_face_normals(None, rotation_from_angles(-20, 0, 0))
    y_up, y_down, y_level = (normals_of(r.image[r.coverage > 0])[:, 1].mean() for r in (up, down, frontal))
    assert y_up - y_level > 0.1 and y_level - y_down > 0.1           # hint y points UP: pitch > 0 looks up
    nose = [normals_of(pixel(r.image, r.landmarks_2d[30]))[1] for r in (up, frontal, down)]
    assert nose[0] > nose[1] + 0.2 > nose[2] + 0.4


def test_angles_and_matrix_give_the_same_render():
    from insightface.utils import transform

    rotation = euler(*RIGGED_ANGLES)
    posed = 70 * mean_shape() @ rotation.T + [200, 150, 3]
    _, fitted, _ = transform.P2sRt(transform.estimate_affine_matrix_3d23d(mean_shape(), posed))
    pose = transform.matrix2angle(fitted)          # what insightface's face['pose'] says for this face
    np.testing.assert_allclose(pose, RIGGED_ANGLES, atol=1e-6)
    by_matrix = render_normal_map(None, rotation, roll_in_frame=True)
    by_angles = render_normal_map(None, rotation_from_angles(*pose), roll_in_frame=True)
    assert np.abs(by_matrix - by_angles).max() < 1e-4


def test_typed_roll_turns_the_face_in_the_image():
    roll = 15.0
    level = render_face_normals(None, rotation_from_angles(5, 10, 0), roll_in_frame=True)
    turned = render_face_normals(None, rotation_from_angles(5, 10, roll), roll_in_frame=True)
    eye_line = lambda lm: lm[42:48].mean(0) - lm[36:42].mean(0)                    # noqa: E731
    angle = lambda v: math.degrees(math.atan2(v[1], v[0]))                          # noqa: E731
    assert angle(eye_line(turned.landmarks_2d)) - angle(eye_line(level.landmarks_2d)) == pytest.approx(roll, abs=0.5)

    # The rolled render is the level one turned about the centre (clockwise on screen), normals turned with it.
    spin = cv2.getRotationMatrix2D((256.0, 256.0), -roll, 1.0)       # OpenCV: positive = counter-clockwise
    moved = cv2.warpAffine(level.image, spin, (512, 512), flags=cv2.INTER_LINEAR, borderValue=(0.5, 0.5, 0.5))
    mask = cv2.warpAffine(level.coverage, spin, (512, 512), flags=cv2.INTER_NEAREST)
    n = normals_of(moved)
    c, s = math.cos(math.radians(roll)), math.sin(math.radians(roll))
    # Clockwise on screen is clockwise in the hint's y-up axes too: x' = c x + s y, y' = -s x + c y.
    n[..., 0], n[..., 1] = c * n[..., 0] + s * n[..., 1], -s * n[..., 0] + c * n[..., 1]
    interior = cv2.erode(mask, np.ones((5, 5))) > 0
    assert (interior & (turned.coverage > 0)).sum() / interior.sum() > 0.995
    assert np.abs(normals_of(turned.image)[interior] - n[interior]).mean() < 0.02


def test_photo_framing_removes_roll():
    level = render_face_normals(None, rotation_from_angles(5, 10, 0))
    rolled = render_face_normals(None, rotation_from_angles(5, 10, 25), roll_in_frame=False)
    np.testing.assert_allclose(rolled.landmarks_2d, level.landmarks_2d, atol=1e-6)
    differs = np.abs(rolled.image - level.image).max(-1) > 1e-3
    assert differs.mean() < 0.002            # a few silhouette pixels from rounding, nothing else


def test_supersampling_keeps_the_background_exact():
    sharp = render_face_normals(size=256)
    smooth = render_face_normals(size=256, supersample=2)
    assert (smooth.image[smooth.coverage == 0] == 0.5).all()
    edge = (smooth.coverage > 0) & (smooth.coverage < 1)
    assert edge.sum() > 100
    np.testing.assert_allclose(smooth.landmarks_2d, sharp.landmarks_2d, atol=1e-9)
    inner = cv2.erode((sharp.coverage > 0).astype(np.uint8), np.ones((5, 5))) > 0
    assert np.abs(smooth.image[inner] - sharp.image[inner]).mean() < 0.01


def test_the_face_shape_comes_from_the_landmarks(frontal):
    long_chin = mean_shape()
    long_chin[4:13, 1] += 0.1                        # lower jaw 0.1 units down; eyes and mouth (the framing) unchanged
    render = render_face_normals(long_chin)
    np.testing.assert_allclose(render.transform, frontal.transform, atol=1e-9)
    pixels_per_unit = np.sqrt(np.linalg.det(frontal.transform[:, :2]))
    chin_row = lambda r: np.flatnonzero((r.coverage > 0).any(axis=1))[-1]        # noqa: E731
    assert chin_row(render) - chin_row(frontal) == pytest.approx(0.1 * pixels_per_unit, abs=2)
    with pytest.raises(InvalidInputError, match="68"):
        render_normal_map(np.zeros((5, 3)))
    with pytest.raises(InvalidInputError, match="NaN"):
        render_normal_map(np.full((68, 3), np.nan))


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
    with pytest.raises(InvalidInputError, match="face must be 'largest' or a face index 0, 1, 2.*'biggest'"):
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
