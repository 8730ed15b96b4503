"""SMIRK's crop from MediaPipe's 478 points, and the choice between it and the 68-point crop.

``face_landmarker.task`` cannot be had here, so MediaPipe itself never runs: the crop is checked from given 478-point
sets against SMIRK's ``crop_face`` worked by hand, and the choice logic with a stand-in landmarker whose answers are
set by the test (the real one has the same ``detect(rgb) -> [478, 3] | None`` surface).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from arc2face_core.errors import InvalidInputError, MissingPackageError, WeightsNotFoundError
from arc2face_core.expression.smirk_crop import (
    choose_crop,
    mediapipe_crop_transform,
    smirk_crop_transform,
    warp_crop,
)
from arc2face_core.faces import mediapipe_landmarks
from arc2face_core.faces.mediapipe_landmarks import choose_crop_landmarker, landmarks_to_pixels
from builders.onnx_faces import astronaut_rgb


def mesh_points(left, right, top, bottom, seed=0, count=478) -> np.ndarray:
    """``count`` noisy points (x, y, z) whose box is exactly (left, right, top, bottom): a stand-in face mesh."""
    rng = np.random.default_rng(seed)
    pts = np.column_stack([rng.uniform(left, right, count), rng.uniform(top, bottom, count),
                           rng.normal(0, 0.05, count)])
    # MediaPipe's forehead, chin and cheek-edge points (iBUG's brow, chin and jaw ends for 68)
    top_i, chin_i, left_i, right_i = (10, 152, 234, 454) if count == 478 else (19, 8, 0, 16)
    pts[top_i, :2] = ((left + right) / 2, top)
    pts[chin_i, :2] = ((left + right) / 2, bottom)
    pts[left_i, :2] = (left, (top + bottom) / 2)
    pts[right_i, :2] = (right, (top + bottom) / 2)
    return pts


# ---------------------------------------------------------------------------------------------- the 478-point crop

def test_crop_from_478_points_worked_by_hand():
    # box x 100..300 (w 200), y 80..330 (h 250): side (200 + 250) / 2 = 225, int(225 * 1.4) = 315, centre (200, 205);
    # the square's top-left corner (200 - 157.5, 205 - 157.5) = (42.5, 47.5) goes to (0, 0), its side to 223 pixels.
    points = mesh_points(100.0, 300.0, 80.0, 330.0)
    s = 223 / 315
    expected = np.array([[s, 0, -42.5 * s], [0, s, -47.5 * s], [0, 0, 1]])
    np.testing.assert_allclose(mediapipe_crop_transform(points).params, expected, atol=1e-9)
    # z is ignored, (478, 2) works too
    np.testing.assert_allclose(mediapipe_crop_transform(points[:, :2]).params, expected, atol=1e-9)


def test_crop_side_is_truncated_like_smirks_int():
    # w 101, h 100: side 100.5 * 1.4 = 140.7 -> int 140 (not 141); centre (60.5, 50): corner (-9.5, -20)
    points = mesh_points(10.0, 111.0, 0.0, 100.0, seed=1)
    s = 223 / 140
    expected = np.array([[s, 0, 9.5 * s], [0, s, 20.0 * s], [0, 0, 1]])
    np.testing.assert_allclose(mediapipe_crop_transform(points).params, expected, atol=1e-9)


def test_no_forehead_correction_for_the_mesh():
    # the 68-point crop raises the top by 0.16 of the height; the mesh's own box is used as it is
    box = (180.0, 266.0, 92.0, 186.0)
    mesh = mediapipe_crop_transform(mesh_points(*box)).params
    points68 = mesh_points(*box, count=68)[:, :2]
    sixty_eight = smirk_crop_transform(points68).params
    centre = np.array([(180 + 266) / 2, (92 + 186) / 2, 1.0])
    np.testing.assert_allclose((mesh @ centre)[:2], [111.5, 111.5], atol=1e-9)
    assert (sixty_eight @ centre)[1] > 111.5 + 5      # its crop centre sits higher, on the forehead


def test_crop_pixels_are_the_warp_with_the_hand_matrix():
    from skimage.transform import AffineTransform, warp

    image = astronaut_rgb()
    points = mesh_points(170.0, 275.0, 60.0, 190.0, seed=4)
    matrix = mediapipe_crop_transform(points).params
    crop = warp_crop(image, matrix, "rgb")
    side = int((105 + 130) / 2 * 1.4)
    s = 223 / side
    by_hand = np.array([[s, 0, -s * (222.5 - side / 2)], [0, s, -s * (125.0 - side / 2)], [0, 0, 1]])
    ref = warp(image, AffineTransform(matrix=by_hand).inverse, output_shape=(224, 224), preserve_range=True)
    ours = (crop * 255).round().permute(1, 2, 0).numpy()
    diff = np.abs(ours - ref.astype(np.uint8))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    torch.testing.assert_close(warp_crop(image, matrix, "bgr"), crop.flip(0), atol=0, rtol=0)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((468, 3)), r"478 MediaPipe face landmarks"),
    (np.full((478, 3), np.nan), "NaN"),
    (np.full((478, 2), 5.0), "no area"),
])
def test_bad_mesh_points_are_refused(bad, message):
    with pytest.raises(InvalidInputError, match=message):
        mediapipe_crop_transform(bad)


def test_normalised_landmarks_become_pixels():
    marks = [SimpleNamespace(x=i / 478, y=1 - i / 478, z=0.01 * i) for i in range(478)]
    points = landmarks_to_pixels(marks, width=640, height=480)
    np.testing.assert_allclose(points[10], [10 / 478 * 640, (1 - 10 / 478) * 480, 0.1])
    with pytest.raises(Exception, match="468 landmarks instead of 478"):
        landmarks_to_pixels(marks[:468], 640, 480)


# -------------------------------------------------------------------------------------------- choosing the crop

class ScriptedLandmarker:
    """Answers ``detect`` from a list, one answer per call (None = no face); records the image sizes it was given."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.seen: list[tuple[int, int]] = []

    def detect(self, image_rgb):
        self.seen.append(image_rgb.shape[:2])
        return self.answers.pop(0)


FACE68 = mesh_points(180.0, 266.0, 92.0, 186.0, count=68)[:, :2]   # the face insightface chose


def test_without_a_landmarker_the_68_point_crop_is_used():
    crop = choose_crop(astronaut_rgb(), FACE68, None)
    assert crop.source == "insightface 68" and crop.note == "insightface 68 points"
    np.testing.assert_allclose(crop.matrix, smirk_crop_transform(FACE68).params, atol=0)


def test_mediapipe_points_of_the_chosen_face_make_the_crop():
    mesh = mesh_points(178.0, 268.0, 70.0, 188.0, seed=2)
    landmarker = ScriptedLandmarker(mesh)
    crop = choose_crop(astronaut_rgb(), FACE68, landmarker)
    assert crop.source == "mediapipe" and crop.note == "MediaPipe 478 points"
    np.testing.assert_allclose(crop.matrix, mediapipe_crop_transform(mesh).params, atol=0)
    assert landmarker.seen == [(512, 512)]    # the whole photo, as the reference runs it


def test_mediapipe_finding_no_face_falls_back_and_says_so():
    crop = choose_crop(astronaut_rgb(), FACE68, ScriptedLandmarker(None, None))
    assert crop.source == "insightface 68" and "MediaPipe found no face" in crop.note
    np.testing.assert_allclose(crop.matrix, smirk_crop_transform(FACE68).params, atol=0)


def test_another_persons_face_makes_mediapipe_look_again_around_the_chosen_one():
    # MediaPipe's one face on the whole photo is someone else (right of the photo). The chosen face's box, top raised
    # for the forehead, is x 180..266, y 92 - 0.16 * 94 = 76.96..186: centre (223, 131.48), side 109.04; the region 2
    # sides wide spans x int(113.96)..ceil(332.04) = 113..333 and y int(22.44)..ceil(240.52) = 22..241 (220 x 219).
    # There MediaPipe finds the chosen face, in region pixels.
    other = mesh_points(380.0, 470.0, 40.0, 150.0, seed=3)
    local = mesh_points(178.0 - 113, 268.0 - 113, 70.0 - 22, 188.0 - 22, seed=5)
    landmarker = ScriptedLandmarker(other, local)
    crop = choose_crop(astronaut_rgb(), FACE68, landmarker)
    assert crop.source == "mediapipe"
    assert landmarker.seen == [(512, 512), (219, 220)]
    shifted = local.copy()
    shifted[:, 0] += 113
    shifted[:, 1] += 22
    np.testing.assert_allclose(crop.matrix, mediapipe_crop_transform(shifted).params, atol=1e-12)


def test_another_persons_face_twice_falls_back():
    other = mesh_points(380.0, 470.0, 40.0, 150.0, seed=3)
    crop = choose_crop(astronaut_rgb(), FACE68, ScriptedLandmarker(other, other))
    assert crop.source == "insightface 68"


# ------------------------------------------------------------------------------------------ choosing the landmarker

def test_insightface_choice_never_uses_mediapipe(tmp_path):
    chosen = choose_crop_landmarker([tmp_path], "insightface 68")
    assert chosen.landmarker is None and chosen.reason == "insightface 68 points (chosen)"


def test_auto_without_the_package_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(mediapipe_landmarks, "mediapipe_installed", lambda: False)
    chosen = choose_crop_landmarker([tmp_path], "auto")
    assert chosen.landmarker is None and "the mediapipe package is not installed" in chosen.reason


def test_auto_without_the_file_says_where_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(mediapipe_landmarks, "mediapipe_installed", lambda: True)
    chosen = choose_crop_landmarker([tmp_path], "auto")
    assert chosen.landmarker is None
    assert "face_landmarker.task was not found" in chosen.reason
    assert "models/arc2face/smirk/face_landmarker.task" in chosen.reason and "Apache-2.0" in chosen.reason


def test_mediapipe_asked_for_without_the_file_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(mediapipe_landmarks, "mediapipe_installed", lambda: True)
    with pytest.raises(WeightsNotFoundError) as err:
        choose_crop_landmarker([tmp_path], "mediapipe")
    assert "smirk/face_landmarker.task" in str(err.value) and str(tmp_path) in str(err.value)


@pytest.mark.skipif(mediapipe_landmarks.mediapipe_installed(), reason="mediapipe is installed here")
def test_mediapipe_asked_for_without_the_package_is_an_error(tmp_path):
    task = tmp_path / "smirk" / "face_landmarker.task"
    task.parent.mkdir()
    task.write_bytes(b"not read: the package is missing first")
    with pytest.raises(MissingPackageError, match=r"pip install mediapipe.*or choose the insightface 68-point"):
        choose_crop_landmarker([tmp_path], "mediapipe")
    # auto with the file but no package: the 68-point crop, and the reason names the package
    assert "mediapipe package is not installed" in choose_crop_landmarker([tmp_path], "auto").reason


def test_unknown_choice_is_refused(tmp_path):
    with pytest.raises(InvalidInputError, match="crop_landmarks must be one of"):
        choose_crop_landmarker([tmp_path], "dlib")
