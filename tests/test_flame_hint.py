"""Pose hints from FLAME (arc2face_core.pose.flame_hint): the reference's recipe on a small random FLAME file.

Independent checks: the silhouette against OpenCV filling the triangles projected with scikit-image's similarity (as
EMOCA builds its crop); the framing without a photo against FFHQ's image_align written out here; the winding of the
file; the sign conventions of typed angles.
"""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest
import torch

from arc2face_core.errors import InvalidInputError
from arc2face_core.faces.landmarks import mean_shape
from arc2face_core.pose.face_parameters import FaceParameters
from arc2face_core.pose.flame import load_flame
from arc2face_core.pose.flame_hint import flame_normal_maps, framing_points, typed_face_parameters
from builders.flame import random_flame, write_flame_folder, write_python2_pickle


@pytest.fixture(scope="module")
def flame_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("flame")
    return folder, write_flame_folder(folder, seed=7)


@pytest.fixture(scope="module")
def flame(flame_folder):
    return load_flame(flame_folder[0] / "generic_model.pkl")


def _params(count: int = 1, pose=None, camera=None, crop=None, seed: int = 0, expression_scale: float = 0.0):
    rng = np.random.default_rng(seed)
    tensor = lambda a: torch.tensor(np.asarray(a, np.float64), dtype=torch.float32)    # noqa: E731
    return FaceParameters(
        shape=tensor(rng.normal(0, 0.5, (count, 300))), expression=tensor(rng.normal(0, expression_scale, (count, 50))),
        eyelids=torch.zeros(count, 2), jaw=torch.zeros(count, 3),
        pose=tensor(np.zeros((count, 3)) if pose is None else pose),
        camera=tensor(np.zeros((count, 3)) if camera is None else camera),
        crop=None if crop is None else tensor(crop))


def _smirk_crop(left: float, top: float, side: float) -> np.ndarray:
    """SMIRK's crop transform as its demo builds it: a square box onto 0..223 by skimage's similarity."""
    from skimage.transform import estimate_transform

    src = np.array([[left, top], [left, top + side], [left + side, top]])
    return estimate_transform("similarity", src, np.array([[0, 0], [0, 223], [223, 0]])).params


def test_photo_hint_silhouette_matches_the_projected_mesh(flame):
    from skimage.draw import polygon
    from skimage.transform import SimilarityTransform

    crop = _smirk_crop(120.0, 140.0, 300.0)
    camera = np.array([[8.0, 0.004, -0.006]])
    params = _params(1, pose=[[0.1, 0.35, -0.05]], camera=camera, crop=crop[None])
    hint = flame_normal_maps(flame, params)[0]
    vertices = flame.vertices_of(params)[0][0].double().numpy()
    s, tx, ty = camera[0]
    in_crop = np.column_stack([(s * (vertices[:, 0] + tx) / 2 + 0.5) * 224, (-s * (vertices[:, 1] + ty) / 2 + 0.5) * 224])
    pixels = SimilarityTransform(crop).inverse(in_crop)
    expected = np.zeros((512, 512), bool)
    for triangle in flame.faces.numpy():
        # skimage fills the pixels whose centres (integers there; j + 0.5, i + 0.5 here) lie in the polygon
        rows, cols = polygon(pixels[triangle, 1] - 0.5, pixels[triangle, 0] - 0.5, (512, 512))
        expected[rows, cols] = True
    covered = (hint != 127).any(-1)
    assert expected.sum() > 20000
    assert (covered != expected).sum() <= 0.0005 * expected.sum()      # pixel centres on an edge may go either way


def test_the_nose_tip_faces_the_viewer_whatever_the_winding(tmp_path, flame):
    inward = random_flame(seed=7, outward=False)
    write_python2_pickle(tmp_path / "generic_model.pkl", inward)
    turned_round = load_flame(tmp_path / "generic_model.pkl")
    params = _params(1)
    hint = flame_normal_maps(turned_round, params)[0]
    plain = flame_normal_maps(load_flame_without_eyelids(flame), params)[0]
    np.testing.assert_array_equal(hint, plain)
    # The frontmost vertex of the frontal head: its pixel's normal points at the viewer (+z: blue 255 side).
    from arc2face_core.pose.camera import framed_placement
    from arc2face_core.pose.flame_hint import ffhq_frames

    vertices = turned_round.vertices_of(params)[0][0].double().numpy()
    placement = framed_placement(vertices, ffhq_frames(turned_round, params, 512)[0])
    tip = placement.pixels[np.argmax(vertices[:, 2])]
    assert hint[int(tip[1]), int(tip[0]), 2] > 240


def load_flame_without_eyelids(flame):
    """The same model without its eyelid blendshapes (the winding test's file has none)."""
    from arc2face_core.pose.flame import FlameModel, read_flame_arrays

    return FlameModel(read_flame_arrays(flame.source))


def test_without_a_photo_the_eyes_land_where_image_align_puts_them(flame):
    params = _params(1)
    points = framing_points(flame, params)[0]
    rest = flame.rest_joints(params.shape, params.expression)[0].double().numpy()
    eyes = rest[[3, 4]][np.argsort(rest[[3, 4], 0])]
    distance = np.linalg.norm(eyes[1] - eyes[0])
    np.testing.assert_allclose(points[:2, :2], eyes[:, :2], atol=1e-9)      # frontal: the eye joints, seen from front
    np.testing.assert_allclose(points[:2, 2], eyes[:, 2] + 0.1 * distance, atol=1e-9)
    # The mouth sits below the eyes as on insightface's mean face (eye-to-mouth / eye-to-eye ratio).
    lm = mean_shape()
    ratio = np.linalg.norm((lm[48] + lm[54]) / 2 - (lm[36:42].mean(0) + lm[42:48].mean(0)) / 2) / np.linalg.norm(
        lm[42:48].mean(0) - lm[36:42].mean(0))
    assert np.linalg.norm(points[2] - points[:2].mean(0)) == pytest.approx(ratio * distance, rel=1e-6)
    assert points[2, 1] < points[:2, 1].mean() - 0.9 * ratio * distance        # below (y up)

    from arc2face_core.pose.camera import framed_placement
    from arc2face_core.pose.flame_hint import ffhq_frames

    frame = ffhq_frames(flame, params, 512)[0]
    image_points = np.column_stack([points[:, 0], -points[:, 1]])             # image coordinates, y down
    on_screen = framed_placement(points, frame).pixels
    lm68 = np.zeros((68, 2))
    lm68[36:42], lm68[42:48], lm68[48], lm68[54] = image_points[0], image_points[1], image_points[2], image_points[2]
    eye_left, eye_right = lm68[36:42].mean(0), lm68[42:48].mean(0)
    eye_to_mouth = lm68[48] - (eye_left + eye_right) / 2
    x = (eye_right - eye_left) - np.flipud(eye_to_mouth) * [-1, 1]
    x = x / np.hypot(*x) * max(2 * np.hypot(*(eye_right - eye_left)), 1.8 * np.hypot(*eye_to_mouth))
    y = np.flipud(x) * [-1, 1]
    c = (eye_left + eye_right) / 2 + 0.1 * eye_to_mouth
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])
    expected = cv2.getAffineTransform(np.float32(quad[[0, 1, 3]]), np.float32([[0, 0], [0, 512], [512, 0]]))
    np.testing.assert_allclose(on_screen, image_points @ expected[:, :2].T + expected[:, 2], atol=1e-3)
    assert np.linalg.norm(on_screen[1] - on_screen[0]) == pytest.approx(128, abs=1e-3)   # 2|e2e| > 1.8|e2m|


def test_typed_angles_follow_insightface_signs(flame):
    """Yaw > 0 turns the face (its eyes) to image right, pitch > 0 lifts it (+y up = green)."""
    from arc2face_core.pose.camera import framed_placement
    from arc2face_core.pose.flame_hint import ffhq_frames

    def eye_normal(angles):
        params = typed_face_parameters(*angles)
        hint = flame_normal_maps(flame, params)[0]
        eyes = framed_placement(framing_points(flame, params)[0], ffhq_frames(flame, params, 512)[0]).pixels[:2]
        point = eyes.mean(0)
        return hint[int(point[1]), int(point[0])].astype(np.float64) / 255 * 2 - 1

    front, right, left, up = (eye_normal(a) for a in ((0, 0, 0), (0, 35, 0), (0, -35, 0), (25, 0, 0)))
    assert right[0] > front[0] + 0.3 and left[0] < front[0] - 0.3
    assert up[1] > front[1] + 0.25


def test_expression_and_identity_shape_change_the_head(flame):
    neutral = flame_normal_maps(flame, typed_face_parameters(0, 10, 0))
    expression = torch.zeros(2, 55)
    expression[1, :50] = 2.0
    expression[1, 52] = 0.3
    both = flame_normal_maps(flame, typed_face_parameters(0, 10, 0, expression))
    assert both.shape == (2, 512, 512, 3)
    np.testing.assert_array_equal(both[0], neutral[0])
    assert (both[1] != both[0]).any(-1).mean() > 0.01
    pose = _params(1, pose=[[0.0, 0.2, 0.0]])
    other = pose.with_shape_of(_params(1, seed=9))
    assert (flame_normal_maps(flame, other)[0] != flame_normal_maps(flame, pose)[0]).any(-1).mean() > 0.01


def test_a_head_outside_the_frame_is_an_error(flame):
    params = _params(1, camera=[[8.0, 5.0, 0.0]], crop=_smirk_crop(100.0, 100.0, 300.0)[None])
    with pytest.raises(InvalidInputError, match="outside"):
        flame_normal_maps(flame, params)


def test_typed_parameters_refuse_bad_input():
    with pytest.raises(InvalidInputError, match="finite"):
        typed_face_parameters(float("nan"), 0, 0)
    with pytest.raises(InvalidInputError, match="55"):
        typed_face_parameters(0, 0, 0, torch.zeros(1, 54))


@pytest.mark.parametrize("column, value, message", [
    (50, 5.0, "an eyelid value of 5; it must be 0 (open) to 1 (closed)"),
    (52, -0.3, "a jaw opening value of -0.3; it must be at least 0 rad"),
    (53, 0.5, "a sideways jaw value of 0.5; it must be from -0.2 to 0.2 rad"),
    (3, 12.0, "expression coefficient 4 = 12"),
])
def test_typed_parameters_take_the_expression_adapters_ranges(column, value, message):
    """A typed pose's expression (Normal Map from Angles with FLAME) is refused outside what SMIRK outputs, as the
    Expression Adapter refuses it (it used to render eyelids of 5.0 silently)."""
    expression = torch.zeros(3, 55)
    expression[2, column] = value
    with pytest.raises(InvalidInputError, match=re.escape(f"expression (row 3 of 3) has {message}")):
        typed_face_parameters(0.0, 10.0, 0.0, expression)
