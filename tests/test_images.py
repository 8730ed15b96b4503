"""ComfyUI IMAGE <-> uint8 BGR conversions (arc2face_core.images)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from arc2face_core.errors import InvalidInputError
from arc2face_core.images import bgr_uint8_to_image, to_bgr_uint8_batch


def _all_values_image() -> np.ndarray:
    """A 2x256x3 uint8 RGB image holding every value 0..255 in every channel, channels differing."""
    ramp = np.arange(256, dtype=np.uint8)
    return np.stack([np.stack([ramp, ramp[::-1], np.roll(ramp, 7)], axis=-1)] * 2)


def test_uint8_loaded_image_round_trips_exactly_as_bgr():
    rgb = _all_values_image()
    comfy = torch.from_numpy(rgb.astype(np.float32) / 255.0)[None]   # what LoadImage produces
    (bgr,) = to_bgr_uint8_batch(comfy)
    assert bgr.dtype == np.uint8 and bgr.shape == (2, 256, 3) and bgr.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(bgr, rgb[..., ::-1])


def test_batch_gives_one_array_per_image_and_numpy_input_works():
    rgb = _all_values_image()
    batch = np.stack([rgb, rgb[::-1]]).astype(np.float32) / 255.0
    out = to_bgr_uint8_batch(batch)
    assert len(out) == 2
    np.testing.assert_array_equal(out[1], rgb[::-1][..., ::-1])


def test_single_image_without_batch_axis():
    rgb = _all_values_image()
    out = to_bgr_uint8_batch(torch.from_numpy(rgb.astype(np.float32) / 255.0))
    assert len(out) == 1
    np.testing.assert_array_equal(out[0], rgb[..., ::-1])


def test_values_are_rounded_and_clipped():
    values = torch.tensor([-0.5, 0.0, 0.4 / 255, 0.6 / 255, 254.4 / 255, 1.0, 1.7]).reshape(1, 1, 7, 1)
    (bgr,) = to_bgr_uint8_batch(values)
    np.testing.assert_array_equal(bgr[0, :, 0], [0, 0, 0, 1, 254, 255, 255])


def test_grey_grey_alpha_and_rgba():
    rgb = _all_values_image()
    grey = rgb[..., :1].astype(np.float32) / 255.0
    alpha = np.full_like(grey, 0.25)
    for image in (grey, np.concatenate([grey, alpha], axis=-1)):
        (bgr,) = to_bgr_uint8_batch(image[None])
        np.testing.assert_array_equal(bgr, np.repeat(rgb[..., :1], 3, axis=-1))
    rgba = np.concatenate([rgb.astype(np.float32) / 255.0, alpha], axis=-1)
    (bgr,) = to_bgr_uint8_batch(rgba[None])
    np.testing.assert_array_equal(bgr, rgb[..., ::-1])


def test_uint8_arrays_are_taken_as_0_to_255():
    rgb = _all_values_image()
    (bgr,) = to_bgr_uint8_batch(rgb[None])
    np.testing.assert_array_equal(bgr, rgb[..., ::-1])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_float_dtypes(dtype):
    rgb = _all_values_image()
    comfy = torch.from_numpy(rgb.astype(np.float32) / 255.0)[None].to(dtype)
    (bgr,) = to_bgr_uint8_batch(comfy)
    # half precision cannot hold every k/255 exactly; it still lands on the nearest level
    np.testing.assert_array_equal(bgr, rgb[..., ::-1])


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (torch.zeros(0, 8, 8, 3), "empty"),
        (torch.zeros(8, 8), "shape"),
        (torch.zeros(1, 1, 8, 8, 3), "shape"),
        (torch.zeros(1, 8, 8, 5), "5 channels"),
        (torch.zeros(1, 0, 8, 3), "no pixels"),
        (torch.zeros(1, 8, 0, 3), "no pixels"),
        (torch.zeros(1, 8, 8, 3, dtype=torch.int32), "dtype"),
        (np.zeros((1, 8, 8, 3), bool), "dtype"),
        ([[0.0, 1.0]], "list"),
    ],
)
def test_invalid_inputs(images, message):
    with pytest.raises(InvalidInputError, match=message):
        to_bgr_uint8_batch(images)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values_name_the_image(bad):
    images = torch.rand(3, 4, 4, 3)
    images[1, 2, 2, 0] = bad
    with pytest.raises(InvalidInputError, match="Image 2 of 3 contains NaN or infinite"):
        to_bgr_uint8_batch(images)


def test_crops_back_to_comfy_image():
    rgb = _all_values_image()
    bgr = [np.ascontiguousarray(rgb[..., ::-1]), np.ascontiguousarray(rgb[::-1, :, ::-1])]
    image = bgr_uint8_to_image(bgr)
    assert image.dtype == torch.float32 and image.device.type == "cpu" and image.shape == (2, 2, 256, 3)
    np.testing.assert_array_equal(image[0].numpy(), rgb.astype(np.float32) / 255.0)
    assert [np.array_equal(a, b) for a, b in zip(to_bgr_uint8_batch(image), bgr)] == [True, True]


def test_crops_back_refuses_mixed_sizes_and_empty_lists():
    with pytest.raises(InvalidInputError, match="one size"):
        bgr_uint8_to_image([np.zeros((4, 4, 3), np.uint8), np.zeros((5, 4, 3), np.uint8)])
    with pytest.raises(InvalidInputError, match="No images to stack"):
        bgr_uint8_to_image([])
    with pytest.raises(InvalidInputError, match="Expected uint8 BGR images"):
        bgr_uint8_to_image([np.zeros((4, 4, 3), np.float32)])
