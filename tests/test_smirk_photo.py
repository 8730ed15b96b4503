"""FLAME parameters from a photo, end to end with tiny models: detection → 1k3d68 → FFHQ alignment → SMIRK's crop of
the aligned photo → SMIRK's three encoders.

The photo is skimage's astronaut; the rigged 1k3d68 reports insightface's mean shape posed on her face with noise and
an opened jaw (not a rigid face). Expected values: where a photo point lands in the aligned image is measured from
painted dots; the crop matrix is SMIRK's crop_face worked out in the test; the crop pixels come from skimage's own
warp; each encoder's output from pooling and the linear layer written out here.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from skimage.transform import AffineTransform, warp

from arc2face_core.errors import InvalidInputError, NoFaceError
from arc2face_core.expression.smirk import load_smirk, postprocess
from arc2face_core.expression.smirk_crop import mediapipe_crop_transform
from arc2face_core.faces.analysis import load_face_analyzer
from arc2face_core.faces.ffhq import image_align
from arc2face_core.faces.landmarks import load_landmark_model
from arc2face_core.pose.smirk_photo import face_parameters_from_photos, landmarks_in_aligned
from builders.onnx_landmarks import build_rigged_landmarks, posed_mean_shape
from builders.smirk_parts import write_full_smirk_checkpoint
from fixtures_faces import write_face_models

CPU = ["CPUExecutionProvider"]


def euler(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """R = Rz(roll) Ry(yaw) Rx(pitch), degrees (insightface's convention)."""
    p, y, r = np.radians([pitch, yaw, roll])
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


def real_world_landmarks() -> np.ndarray:
    """The posed mean shape with 1.2 px of noise and the jaw dropped (chin and lower lip 6 px down): non-rigid."""
    points = posed_mean_shape(euler(8.0, -22.0, 6.0))
    points[:, :2] += np.random.default_rng(7).normal(0.0, 1.2, (68, 2))
    points[list(range(5, 12)) + list(range(55, 60)) + [65, 66, 67], 1] += 6.0
    return points


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def landmarks() -> np.ndarray:
    return real_world_landmarks()


@pytest.fixture(scope="module")
def models(tmp_path_factory, astronaut_scene, landmarks):
    base = tmp_path_factory.mktemp("smirk_photo") / "models"
    roots = write_face_models(base, astronaut_scene)
    build_rigged_landmarks(base / "insightface/models/antelopev2/1k3d68.onnx", landmarks)
    smirk = load_smirk(write_full_smirk_checkpoint(base / "arc2face/smirk/SMIRK_em1.pt", seed=9))
    return load_face_analyzer(roots, CPU), load_landmark_model(roots, CPU), smirk


@pytest.fixture(scope="module")
def astronaut_bgr(astronaut_scene) -> np.ndarray:
    return np.ascontiguousarray(astronaut_scene.image[..., ::-1])


@pytest.fixture(scope="module")
def reading(models, astronaut_bgr):
    analyzer, landmark_model, smirk = models
    return face_parameters_from_photos([astronaut_bgr] * 3, analyzer, landmark_model, smirk)


# ------------------------------------------------------------------------------------- photo → aligned coordinates

def test_photo_points_land_where_the_aligned_image_shows_them():
    """Dots painted at integer photo pixels, aligned: each dot's centroid in the aligned image (pixel centres) is
    where landmarks_in_aligned puts it, to a tenth of a pixel (a half-pixel slip would show)."""
    lm = posed_mean_shape(euler(5.0, 15.0, 12.0), origin=(128.0, 112.0, 0.0), scale=55.0)
    photo = np.full((256, 256, 3), 40, np.uint8)
    dots = np.array([[110.0, 100.0], [150.0, 96.0], [128.0, 140.0], [126.0, 118.0]])
    for x, y in dots.astype(int):
        photo[y, x] = 255
    aligned = image_align(photo, lm[:, :2])
    predicted = landmarks_in_aligned(dots, aligned.quad)
    grey = aligned.image[..., 0].astype(np.float64) - 40.0
    for (u, v) in predicted:
        j0, i0 = int(round(u)), int(round(v))
        window = np.clip(grey[i0 - 12:i0 + 13, j0 - 12:j0 + 13], 0, None)
        ii, jj = np.mgrid[i0 - 12:i0 + 13, j0 - 12:j0 + 13]
        centroid = np.array([(window * jj).sum(), (window * ii).sum()]) / window.sum()
        assert window.sum() > 500                       # the dot is there
        np.testing.assert_allclose(centroid, (u, v), atol=0.1)


# ------------------------------------------------------------------------------------------------ end to end

def expected_crop(points: np.ndarray) -> np.ndarray:
    """SMIRK's crop_face on the 68-point box with the forehead raised by 0.16 of its height, written out."""
    left, right = points[:, 0].min(), points[:, 0].max()
    top, bottom = points[:, 1].min(), points[:, 1].max()
    top -= 0.16 * (bottom - top)
    side = int(((right - left) + (bottom - top)) / 2 * 1.4)
    cx, cy = (left + right) / 2, (top + bottom) / 2
    s = 223 / side
    return np.array([[s, 0, -s * (cx - side / 2)], [0, s, -s * (cy - side / 2)], [0, 0, 1]])


def pooled_linear(part, head: str, crops: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        pooled = part.encoder.features(crops)[-1].mean(dim=(2, 3))
        layer = getattr(part, head)[0]
        return pooled @ layer.weight.T + layer.bias


def test_one_row_per_photo_with_the_aligned_frame_and_crop(reading, astronaut_scene, landmarks):
    params = reading.params
    assert len(params) == 3 and tuple(params.crop.shape) == (3, 3, 3) and params.crop.dtype == torch.float32
    assert [a.shape for a in reading.aligned] == [(512, 512, 3)] * 3 and reading.aligned[0].dtype == np.uint8
    assert tuple(reading.crops.shape) == (3, 3, 224, 224)
    assert reading.crop_notes == ["insightface 68 points"] * 3
    # the aligned photo is the FFHQ alignment of the photo from the 68 landmarks 1k3d68 reported (which reach the
    # pipeline as float32: a few pixels differ by one level)
    ffhq = image_align(astronaut_scene.image, landmarks[:, :2])
    diff = np.abs(reading.aligned[0].astype(int) - ffhq.image.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    # the crop: SMIRK's box of the landmarks carried into the aligned frame
    in_aligned = landmarks_in_aligned(landmarks, ffhq.quad)
    np.testing.assert_allclose(params.crop[0].double().numpy(), expected_crop(in_aligned), rtol=1e-6, atol=1e-4)
    # the crop's pixels are skimage's warp of the aligned photo by that matrix
    by_skimage = warp(reading.aligned[0], AffineTransform(matrix=params.crop[0].double().numpy()).inverse,
                      output_shape=(224, 224), preserve_range=True).astype(np.uint8)
    ours = (reading.crops[0] * 255).round().permute(1, 2, 0).numpy().astype(np.uint8)
    diff = np.abs(ours.astype(int) - by_skimage.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    for row in (1, 2):   # the same photo gives the same row
        torch.testing.assert_close(params.pose[row], params.pose[0], atol=0, rtol=0)


def test_encoders_read_the_crops_as_smirk_does(reading, models):
    """Pose, camera, shape from the RGB crop; the expression from the channel-swapped crop (bgr, the default)."""
    smirk = models[2]
    crops, params = reading.crops, reading.params
    pose_cam = pooled_linear(smirk.pose_encoder, "pose_cam_layers", crops)
    torch.testing.assert_close(params.pose, pose_cam[:, :3], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(params.camera, pose_cam[:, 3:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(params.shape, pooled_linear(smirk.shape_encoder, "shape_layers", crops),
                               atol=1e-5, rtol=1e-5)
    expression = postprocess(pooled_linear(smirk.expression_encoder, "expression_layers", crops.flip(1)))
    torch.testing.assert_close(params.expression_vector(), expression, atol=1e-5, rtol=1e-5)
    assert params.eyelids.min() >= 0 and params.eyelids.max() <= 1 and params.jaw[:, 0].min() >= 0


def test_rgb_changes_only_the_expression(reading, models, astronaut_bgr):
    analyzer, landmark_model, smirk = models
    rgb = face_parameters_from_photos([astronaut_bgr], analyzer, landmark_model, smirk, channel_order="rgb").params
    torch.testing.assert_close(rgb.pose, reading.params.pose[:1], atol=1e-6, rtol=0)   # batch of 1 vs 3
    torch.testing.assert_close(rgb.shape, reading.params.shape[:1], atol=1e-6, rtol=0)
    expression = postprocess(pooled_linear(smirk.expression_encoder, "expression_layers", reading.crops[:1]))
    torch.testing.assert_close(rgb.expression_vector(), expression, atol=1e-5, rtol=1e-5)
    assert (rgb.expression - reading.params.expression[:1]).abs().max() > 1e-4


def test_mediapipe_points_on_the_aligned_photo_make_the_crop(models, astronaut_bgr, reading):
    """SMIRK's own crop: MediaPipe runs on the aligned 512 photo; its 478 points' box places the crop."""
    analyzer, landmark_model, smirk = models

    class OnAligned:
        seen = []

        def detect(self, image_rgb):
            self.seen.append(image_rgb.copy())
            rng = np.random.default_rng(0)
            return np.column_stack([rng.uniform(150, 360, 478), rng.uniform(120, 420, 478), np.zeros(478)])

    landmarker = OnAligned()
    result = face_parameters_from_photos([astronaut_bgr], analyzer, landmark_model, smirk, landmarker=landmarker)
    np.testing.assert_array_equal(landmarker.seen[0], reading.aligned[0])
    points = OnAligned().detect(reading.aligned[0])
    np.testing.assert_allclose(result.params.crop[0].double().numpy(), mediapipe_crop_transform(points).params,
                               rtol=1e-6, atol=1e-4)
    assert result.crop_notes == ["MediaPipe 478 points"]


def test_a_photo_without_a_face_is_named(models, astronaut_bgr, black_image):
    analyzer, landmark_model, smirk = models
    with pytest.raises(NoFaceError, match=r"No face found in image 2 of 2"):
        face_parameters_from_photos([astronaut_bgr, black_image], analyzer, landmark_model, smirk)


def test_bad_arguments_are_refused(models, astronaut_bgr, tmp_path):
    analyzer, landmark_model, smirk = models
    with pytest.raises(InvalidInputError, match="channel_order must be one of"):
        face_parameters_from_photos([astronaut_bgr], analyzer, landmark_model, smirk, channel_order="yuv")
    with pytest.raises(InvalidInputError, match="No photos"):
        face_parameters_from_photos([], analyzer, landmark_model, smirk)
    expression_only = load_smirk(write_full_smirk_checkpoint(tmp_path / "SMIRK_em1.pt"), ["expression"])
    with pytest.raises(InvalidInputError, match=r"lacks \['pose', 'shape'\]"):
        face_parameters_from_photos([astronaut_bgr], analyzer, landmark_model, expression_only)


@pytest.mark.parametrize("collapse, detail", [
    (1e-3, "its eyes and mouth nearly coincide, so they frame no face"),     # a head pose fits, no FFHQ quad does
    (0.0, "The face's 3D landmarks are degenerate (no head pose fits them)"),   # every point on one spot
])
def test_landmarks_that_frame_no_face_are_named_for_the_user(tmp_path, astronaut_scene, astronaut_bgr, collapse,
                                                             detail):
    """What the detector finds on a noise patch: its landmarks frame no face. The error names the node and the image
    (it used to be "Check that they are 68 points in iBUG order", without either)."""
    from arc2face_core.faces.align import align_faces

    base = tmp_path / "models"
    roots = write_face_models(base, astronaut_scene)
    points = real_world_landmarks()
    centre = points.mean(axis=0)
    build_rigged_landmarks(base / "insightface/models/antelopev2/1k3d68.onnx", centre + collapse * (points - centre))
    analyzer, landmark_model = load_face_analyzer(roots, CPU), load_landmark_model(roots, CPU)
    smirk = load_smirk(write_full_smirk_checkpoint(base / "arc2face/smirk/SMIRK_em1.pt", seed=9))
    height, width = astronaut_bgr.shape[:2]
    where = f"the face found in image 1 of 2 ({width}x{height} pixels) is not a usable face: {detail}"
    with pytest.raises(NoFaceError, match=re.escape(f"Face Parameters from Photo: {where}")):
        face_parameters_from_photos([astronaut_bgr, astronaut_bgr], analyzer, landmark_model, smirk)
    with pytest.raises(NoFaceError, match=re.escape(f"Face Align: {where}")):
        align_faces([astronaut_bgr, astronaut_bgr], analyzer, landmark_model)


def test_a_photo_without_a_face_is_named_with_what_it_is_for(models, astronaut_bgr, black_image):
    """SMIRK's face parameters are read from the identity photo too: not "Pose reference" for every photo."""
    analyzer, landmark_model, smirk = models
    with pytest.raises(NoFaceError, match=r"^Face Parameters from Photo: No face found in image 2 of 2"):
        face_parameters_from_photos([astronaut_bgr, black_image], analyzer, landmark_model, smirk)
    with pytest.raises(NoFaceError, match=r"^Identity photo: No face found in image 1 of 1"):
        face_parameters_from_photos([black_image], analyzer, landmark_model, smirk, role="Identity photo")
