"""FFHQ ``image_align`` (faces/ffhq.py): the aligned square checked against hand-worked geometry.

Expected values are worked out by hand from the FFHQ recipe (docs/pose_hints.md, 'FFHQ alignment') for faces whose
quad is easy to write down, and read back from photos that encode their own pixel coordinates, so no test reuses the
code it checks.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from arc2face_core.errors import InvalidInputError
from arc2face_core.faces.ffhq import image_align
from builders.onnx_faces import astronaut_rgb
from builders.onnx_landmarks import posed_mean_shape


def face_landmarks(centre=(128.0, 100.0), half_eyes=20.0, eyes_to_mouth=50.0, half_mouth=15.0, roll=0.0):
    """68 iBUG points of which image_align reads the eyes (36-47) and mouth corners (48, 54); the rest lie on the
    face centre. Upright: eyes at centre +- half_eyes in x, mouth corners eyes_to_mouth lower; ``roll`` (radians)
    turns the whole face about ``centre``."""
    points = np.tile(np.asarray(centre, np.float64), (68, 1))
    cx, cy = centre
    # each eye: six points round the eye centre, so their mean is the centre itself
    ring = np.array([[-4, 0], [-2, -2], [2, -2], [4, 0], [2, 2], [-2, 2]], np.float64)
    points[36:42] = ring + (cx - half_eyes, cy)
    points[42:48] = ring + (cx + half_eyes, cy)
    points[48] = (cx - half_mouth, cy + eyes_to_mouth)
    points[54] = (cx + half_mouth, cy + eyes_to_mouth)
    c, s = math.cos(roll), math.sin(roll)
    turn = np.array([[c, -s], [s, c]])
    return (points - centre) @ turn.T + centre


def coordinate_photo(size: int = 256) -> np.ndarray:
    """A photo whose red channel is each pixel's x and green its y (blue 128): it tells where a pixel came from."""
    ys, xs = np.mgrid[:size, :size]
    return np.stack([xs, ys, np.full_like(xs, 128)], axis=-1).astype(np.uint8)


def hand_worked_quad(centre, half_eyes, eyes_to_mouth, roll=0.0):
    """For the symmetric face above: x = (2*he + em) along the eyes, normalised and scaled to
    max(4*he, 1.8*em) = s; y = s along the face's down; c = eye centre + 0.1 * em down."""
    s = max(4 * half_eyes, 1.8 * eyes_to_mouth)
    right = np.array([math.cos(roll), math.sin(roll)])
    down = np.array([-math.sin(roll), math.cos(roll)])
    c = np.asarray(centre) + 0.1 * eyes_to_mouth * down
    return np.stack([c - s * right - s * down, c - s * right + s * down, c + s * right + s * down,
                     c + s * right - s * down])


def sampled_positions(quad, size):
    """Photo coordinates each output pixel centre shows: output corner-coordinates (j+.5, i+.5) spread over the quad."""
    t = (np.arange(size) + 0.5) / size
    across, down = quad[3] - quad[0], quad[1] - quad[0]
    return quad[0] + t[None, :, None] * across + t[:, None, None] * down


@pytest.mark.parametrize("roll", [0.0, math.radians(25.0), math.radians(-40.0)])
def test_every_output_pixel_shows_the_photo_point_the_quad_puts_there(roll):
    """The quad (side 2 * max(4 * 10, 1.8 * 25) = 90 px) lies inside the photo, so no padding: each output pixel
    holds the coordinates of the photo point the hand-worked quad assigns it. PIL's 8-bit bilinear transform
    truncates instead of rounding (as in the reference), which shifts a ramp by half a level on average."""
    landmarks = face_landmarks(centre=(128.0, 128.0), half_eyes=10.0, eyes_to_mouth=25.0, roll=roll)
    quad = hand_worked_quad((128.0, 128.0), 10.0, 25.0, roll)
    result = image_align(coordinate_photo(), landmarks, 512)
    np.testing.assert_allclose(result.quad, quad, atol=1e-9)
    assert result.image.shape == (512, 512, 3) and result.image.dtype == np.uint8
    expected = sampled_positions(quad, 512) - 0.5   # PIL's truncation
    inner = np.zeros((512, 512), bool)
    inner[3:-3, 3:-3] = True                        # LANCZOS at the output's own edges sees a one-sided kernel
    error = np.abs(result.image[..., :2].astype(np.float64) - expected)[inner]
    assert error.max() <= 0.65, error.max()
    assert np.abs(result.image[..., 2].astype(int) - 128).max() == 0


def test_a_wrong_quad_would_be_seen():
    """The geometry check can fail: the same photo aligned on a face shifted by one pixel is off by ~6 levels."""
    shifted = image_align(coordinate_photo(), face_landmarks(centre=(129.0, 128.0), half_eyes=10.0,
                                                            eyes_to_mouth=25.0), 512)
    expected = sampled_positions(hand_worked_quad((128.0, 128.0), 10.0, 25.0), 512) - 0.5
    assert np.abs(shifted.image[3:-3, 3:-3, 0] - expected[3:-3, 3:-3, 0]).min() > 0.35


def test_a_face_near_the_border_is_padded_with_the_photo_not_black():
    """The quad leaves the photo: FFHQ reflects, blurs and fades to the median colour; a uniform photo stays uniform."""
    photo = np.full((200, 200, 3), (90, 140, 200), np.uint8)
    result = image_align(photo, face_landmarks(centre=(30.0, 40.0)), 256)
    assert np.abs(result.image.astype(int) - (90, 140, 200)).max() <= 1


def test_padding_never_shows_black_outside_a_two_tone_photo():
    """Reflection, blur and the fade to the median only mix the photo's own colours: every output value lies between
    the two tones (without padding, PIL would fill the part of the quad outside the photo with black)."""
    photo = np.full((200, 200, 3), 200, np.uint8)
    photo[:, :100] = 40
    result = image_align(photo, face_landmarks(centre=(20.0, 100.0), half_eyes=15.0, eyes_to_mouth=40.0), 256)
    assert result.quad[:, 0].min() < 0                  # the face's square does leave the photo
    assert result.image.min() >= 39 and result.image.max() <= 201
    unpadded = image_align(photo, face_landmarks(centre=(20.0, 100.0), half_eyes=15.0, eyes_to_mouth=40.0), 256,
                           enable_padding=False)
    assert unpadded.image.min() == 0                    # the negative control: black where the photo ends


def test_a_big_face_is_shrunk_first_and_lands_where_the_quad_says():
    """qsize 2 * 720 px for a 512 output: shrink by 2 first (FFHQ), then the same geometry."""
    photo = np.full((1800, 1800, 3), 60, np.uint8)
    centre = np.array([900.0, 800.0])
    photo[796:805, 896:905] = (255, 0, 0)                     # a red dot on the eye centre
    landmarks = face_landmarks(centre=tuple(centre), half_eyes=160.0, eyes_to_mouth=400.0)
    result = image_align(photo, landmarks, 512)
    s = max(4 * 160.0, 1.8 * 400.0)                           # 720
    expected = np.array([256.0, (0.5 - 0.1 * 400.0 / (2 * s)) * 512]) - 0.5   # pixel-centre coordinates
    red = (result.image[..., 0] > 150) & (result.image[..., 1] < 100)
    ys, xs = np.nonzero(red)
    assert red.sum() > 0
    np.testing.assert_allclose([xs.mean(), ys.mean()], expected, atol=0.75)


def test_the_astronaut_aligns_to_an_upright_face():
    """A real photo with landmarks from insightface's mean face posed on it: the eyes end up level and centred."""
    landmarks = posed_mean_shape(np.eye(3))[:, :2]
    result = image_align(astronaut_rgb(), landmarks, 512)
    assert result.image.shape == (512, 512, 3)
    assert result.image.std() > 20   # photo content, not a flat fill
    # where the eyes land: through the quad's square, by hand from the quad's corners
    eyes = np.stack([landmarks[36:42].mean(0), landmarks[42:48].mean(0)])
    q = result.quad
    across, down = q[3] - q[0], q[1] - q[0]
    uv = np.linalg.solve(np.column_stack([across, down]), (eyes - q[0]).T).T * 512
    # FFHQ's x axis mixes eye-to-eye with the eye-to-mouth normal, so the mean face's eyes end up nearly (not
    # exactly) level; centred within a few pixels
    assert abs(uv[0, 1] - uv[1, 1]) < 3.0 and abs((uv[0, 0] + uv[1, 0]) / 2 - 256) < 3.0


@pytest.mark.parametrize("image, landmarks, message", [
    (np.zeros((64, 64, 3), np.float32), face_landmarks(), "uint8 RGB photo"),
    (np.zeros((64, 64), np.uint8), face_landmarks(), "uint8 RGB photo"),
    (np.zeros((64, 64, 3), np.uint8), np.zeros((5, 2)), r"68 landmarks in iBUG order.*got shape \(5, 2\)"),
    (np.zeros((64, 64, 3), np.uint8), np.full((68, 2), np.nan), "NaN"),
    (np.zeros((64, 64, 3), np.uint8), np.full((68, 2), 30.0), "degenerate"),
    (np.zeros((64, 64, 3), np.uint8), "68 points", "68 landmarks"),
])
def test_bad_inputs_are_clear_errors(image, landmarks, message):
    with pytest.raises(InvalidInputError, match=message):
        image_align(image, landmarks)


def test_bad_sizes_are_clear_errors():
    with pytest.raises(InvalidInputError, match="output_size must be a whole number"):
        image_align(coordinate_photo(), face_landmarks(), 0)
    with pytest.raises(InvalidInputError, match="transform_size must be a whole number"):
        image_align(coordinate_photo(), face_landmarks(), 512, transform_size=True)
