"""Pose hints without FLAME: the generic whole head (arc2face_core.pose.generic_head) drawn by the EMOCA-style renderer
(pose.render), checked against independent computations: FFHQ's image_align written out here, closed-form geometry,
OpenCV's image rotation, and the mesh's own topology."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from arc2face_core.errors import InvalidInputError
from arc2face_core.faces.head_pose import rotation_from_angles
from arc2face_core.faces.landmarks import mean_shape
from arc2face_core.pose.face_surface import build_face_surface
from arc2face_core.pose.render import generic_normal_maps, render_generic_head, render_normal_map


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
    return image.astype(np.float64) / 255 * 2 - 1


def pixel(image: np.ndarray, point: np.ndarray) -> np.ndarray:
    return image[int(math.floor(point[1])), int(math.floor(point[0]))]


@pytest.fixture(scope="module")
def frontal():
    return render_generic_head()


# ---------------------------------------------------------------------------------------------------- mesh

def test_every_part_is_closed_or_an_open_tube_and_wound_outward():
    from arc2face_core.pose.generic_head import build_generic_head

    head = build_generic_head()
    up = head.vertices * [1, -1, 1]                           # FLAME's frame: y up, right-handed
    for name, part in head.parts.items():
        faces = head.faces[part]
        edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
        _, uses = np.unique(edges, axis=0, return_counts=True)
        if name == "neck":
            assert set(uses) == {1, 2} and (uses == 1).sum() == 2 * 96        # open at both ends only
        else:
            assert (uses == 2).all(), name                                     # closed
        corners = up[faces] - up[np.unique(faces)].mean(0)
        normal = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
        assert (np.einsum("fi,fi->f", normal, corners.mean(1)) > 0).mean() > 0.97, name   # faces look outward


def test_the_head_passes_through_the_face_surface_and_around_it():
    from arc2face_core.pose.generic_head import build_generic_head

    shape = mean_shape()
    head, surface = build_generic_head(), build_face_surface(shape)
    vertices = head.vertices[np.unique(head.faces[head.parts["head"]])]
    # Well inside the face (around the eyes, nose and mouth) the head's front is the face surface itself.
    front = vertices[(np.abs(vertices[:, 0]) < 0.3) & (vertices[:, 1] > -0.4) & (vertices[:, 1] < 0.3)
                     & (vertices[:, 2] > 0)]
    assert len(front) > 500
    np.testing.assert_allclose(front[:, 2], surface.height(front[:, :2]), atol=1e-4)
    # Around it, a whole head: the crown above the forehead, the back of the head behind the ears.
    eye_to_mouth = np.linalg.norm((shape[48, :2] + shape[54, :2]) / 2 - (shape[36:42, :2].mean(0)
                                                                         + shape[42:48, :2].mean(0)) / 2)
    assert vertices[:, 1].min() < shape[17:27, 1].mean() - 1.2 * eye_to_mouth
    assert vertices[:, 2].min() < shape[0, 2] - 1.2 * eye_to_mouth
    ears = head.vertices[np.unique(head.faces[head.parts["left_ear"]])]
    assert ears[:, 0].min() < shape[0, 0] - 0.1 and ears[:, 1].mean() > shape[37, 1]    # beside, below the eyes
    neck = head.vertices[np.unique(head.faces[head.parts["neck"]])]
    assert neck[:, 1].max() > shape[8, 1] + 1.0                                         # well below the chin


# ------------------------------------------------------------------------------------------------- renders

def test_frontal_render_basics(frontal):
    image = frontal.image
    assert image.shape == (512, 512, 3) and image.dtype == np.uint8
    covered = frontal.covered
    assert (image[~covered] == 127).all() and 0.3 < covered.mean() < 0.6
    normals = normals_of(image[covered])
    assert np.linalg.norm(normals, axis=1).max() <= 1.0 + 4 / 255          # blended unit normals: |n| <= 1
    assert abs(normals[:, 0].mean()) < 0.02
    # The frontmost point (the nose tip) faces the viewer.
    from arc2face_core.pose.generic_head import build_generic_head

    head = build_generic_head()
    tip = head.vertices[np.argmax(head.vertices[:, 2]), :2]
    assert normals_of(pixel(image, apply(frontal.transform, tip)))[2] > 0.95
    lm = frontal.landmarks_2d
    cheek = lambda i: lm[i] + 12 * (lm[30] - lm[i]) / np.linalg.norm(lm[30] - lm[i])     # noqa: E731
    assert pixel(image, cheek(14))[0] > 200 and pixel(image, cheek(2))[0] < 55           # image right is red
    crown = (lm[19] + lm[24]) / 2 - [0, 150]
    assert pixel(image, crown)[1] > 190 and pixel(image, lm[8] + [0, 6])[1] < 110         # green up, under the chin down
    # A whole head: ears beyond the jaw points, the crown above the face, the neck down to the frame's edge.
    row = int(lm[0, 1] + 30)
    columns = np.flatnonzero(covered[row])
    assert columns[0] < lm[0, 0] - 8 and columns[-1] > lm[16, 0] + 8
    assert covered[int(crown[1]), int(crown[0])] and covered[-1, 256] and not covered[-1, [0, -1]].any()


def test_framing_follows_image_align(frontal):
    # A turned, nodding head: the square FFHQ would crop from its projected landmarks is the frame.
    render = render_generic_head(None, euler(8, -20, 0), 512)
    errors = ffhq_frame_errors(render.landmarks_2d)
    assert errors["centre"] < 1e-3 and errors["tilt"] < 1e-4 and errors["half_side"] < 1e-3, errors
    assert max(ffhq_frame_errors(frontal.landmarks_2d).values()) < 1e-3
    # (a frame off by a pixel would show: the check reads the framing, not the renderer)
    assert ffhq_frame_errors(render.landmarks_2d + [1.0, 0.0])["centre"] > 0.99
    lm = frontal.landmarks_2d
    assert np.linalg.norm(lm[42:48].mean(0) - lm[36:42].mean(0)) == pytest.approx(512 / 4, abs=1e-6)


def test_yaw_flips_x_and_mirrors_the_image():
    plus = render_generic_head(None, rotation_from_angles(0, 30, 0))
    minus = render_generic_head(None, rotation_from_angles(0, -30, 0))
    for render, sign in ((plus, 1), (minus, -1)):
        nose = normals_of(pixel(render.image, render.landmarks_2d[30]))
        assert sign * nose[0] > 0.35                          # yaw > 0: the nose turns to image right
        lm = render.landmarks_2d
        assert sign * (lm[30, 0] - (lm[36:42, 0].mean() + lm[42:48, 0].mean()) / 2) > 10
    mirrored = minus.image[:, ::-1].astype(np.int16)
    mirrored[..., 0] = 254 - mirrored[..., 0]                 # n_x -> -n_x (255 - c, less one for the truncation)
    both = plus.covered & minus.covered[:, ::-1]
    assert both.sum() / (plus.covered | minus.covered[:, ::-1]).sum() > 0.97
    assert np.abs(plus.image[both].astype(np.int16) - mirrored[both]).mean() < 5


def test_pitch_flips_y(frontal):
    up = render_generic_head(None, rotation_from_angles(20, 0, 0))
    down = render_generic_head(None, rotation_from_angles(-20, 0, 0))
    nose = [normals_of(pixel(r.image, r.landmarks_2d[30]))[1] for r in (up, frontal, down)]
    assert nose[0] > nose[1] + 0.2 > nose[2] + 0.4          # the hint's y points up: pitch > 0 looks up


def test_typed_roll_turns_the_head_in_the_image():
    roll = 15.0
    level = render_generic_head(None, rotation_from_angles(5, 10, 0), roll_in_frame=True)
    turned = render_generic_head(None, rotation_from_angles(5, 10, roll), roll_in_frame=True)
    eye_line = lambda lm: lm[42:48].mean(0) - lm[36:42].mean(0)                    # noqa: E731
    angle = lambda v: math.degrees(math.atan2(v[1], v[0]))                          # noqa: E731
    assert angle(eye_line(turned.landmarks_2d)) - angle(eye_line(level.landmarks_2d)) == pytest.approx(roll, abs=0.5)
    # The rolled render is the level one turned about the centre (clockwise on screen), normals turned with it.
    spin = cv2.getRotationMatrix2D((256.0, 256.0), -roll, 1.0)       # OpenCV: positive = counter-clockwise
    n = normals_of(cv2.warpAffine(level.image, spin, (512, 512), flags=cv2.INTER_LINEAR, borderValue=(127,) * 3))
    mask = cv2.warpAffine(level.covered.astype(np.uint8), spin, (512, 512), flags=cv2.INTER_NEAREST)
    c, s = math.cos(math.radians(roll)), math.sin(math.radians(roll))
    n[..., 0], n[..., 1] = c * n[..., 0] + s * n[..., 1], -s * n[..., 0] + c * n[..., 1]
    interior = cv2.erode(mask, np.ones((5, 5))) > 0
    assert (interior & turned.covered).sum() / interior.sum() > 0.995
    assert np.abs(normals_of(turned.image)[interior] - n[interior]).mean() < 0.02


def test_photo_framing_removes_roll():
    level = render_generic_head(None, rotation_from_angles(5, 10, 0))
    rolled = render_generic_head(None, rotation_from_angles(5, 10, 25), roll_in_frame=False)
    np.testing.assert_allclose(rolled.landmarks_2d, level.landmarks_2d, atol=1e-6)
    differs = np.abs(rolled.image.astype(np.int16) - level.image).max(-1) > 1
    assert differs.mean() < 0.002            # a few silhouette pixels from rounding, nothing else


def test_the_face_shape_comes_from_the_landmarks(frontal):
    long_chin = mean_shape()
    long_chin[4:13, 1] += 0.1                        # lower jaw 0.1 units down; eyes and mouth (the framing) unchanged
    render = render_generic_head(long_chin)
    np.testing.assert_allclose(render.transform, frontal.transform, atol=1e-9)
    from arc2face_core.pose.generic_head import build_generic_head

    def chin(head) -> float:    # the lowest point of the face's front on the middle line (y is down)
        v = head.vertices[np.unique(head.faces[head.parts["head"]])]
        return v[(np.abs(v[:, 0]) < 0.03) & (v[:, 2] > 0.25), 1].max()

    assert chin(build_generic_head(long_chin)) - chin(build_generic_head()) == pytest.approx(0.1, abs=0.025)
    assert (render.image != frontal.image).any(-1).mean() > 0.005
    with pytest.raises(InvalidInputError, match="68"):
        render_normal_map(np.zeros((5, 3)))
    with pytest.raises(InvalidInputError, match="NaN"):
        render_normal_map(np.full((68, 3), np.nan))


def test_float_hint_and_face_parameters_give_the_same_render(frontal):
    from arc2face_core.pose.flame_hint import typed_face_parameters

    as_float = render_normal_map(None, rotation_from_angles(10, -25, 12), roll_in_frame=True)
    assert as_float.dtype == np.float32 and (as_float[0, 0] == np.float32(127 / 255)).all()
    from_params = generic_normal_maps(typed_face_parameters(10, -25, 12))
    assert from_params.shape == (1, 512, 512, 3)
    assert (np.abs(from_params[0].astype(np.float32) / 255 - as_float).max(-1) > 1.5 / 255).mean() < 0.002
