"""Conversions between ComfyUI IMAGE data and the uint8 BGR arrays OpenCV/insightface work on.

A ComfyUI IMAGE is a float tensor ``[B, H, W, C]``, RGB, values 0..1, C usually 3. ComfyUI makes it from 8-bit files
as ``uint8 / 255``, so ``round(x * 255)`` gives back the file's exact pixels; the face detector and recogniser then
see what the reference code (``cv2.imread``) sees.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from .errors import InvalidInputError

_EXPECTED = "a ComfyUI IMAGE: [batch, height, width, channels] with 1-4 channels (RGB values 0..1)"


def _as_numpy(images: Any) -> np.ndarray:
    """A view (no copy where possible) of a torch tensor or array-like as numpy."""
    if isinstance(images, torch.Tensor):
        tensor = images.detach().cpu()
        if tensor.dtype in (torch.float16, torch.bfloat16):
            tensor = tensor.float()   # numpy has no bfloat16
        return tensor.numpy()
    if isinstance(images, np.ndarray):
        return images
    raise InvalidInputError(f"Expected {_EXPECTED}, got a {type(images).__name__}.")


def _check_batch(array: np.ndarray) -> np.ndarray:
    if array.ndim == 3:            # one image without its batch axis
        array = array[None]
    if array.ndim != 4:
        raise InvalidInputError(f"Expected {_EXPECTED}, got an array of shape {tuple(array.shape)}.")
    batch, height, width, channels = array.shape
    if batch == 0:
        raise InvalidInputError("The image batch is empty: connect at least one image.")
    if height == 0 or width == 0:
        raise InvalidInputError(f"The images have no pixels (height {height}, width {width}).")
    if channels not in (1, 2, 3, 4):
        raise InvalidInputError(
            f"Expected {_EXPECTED}; got {channels} channels (shape {tuple(array.shape)}). "
            "A MASK or a latent is not an image: connect an IMAGE output."
        )
    if array.dtype != np.uint8 and not np.issubdtype(array.dtype, np.floating):
        raise InvalidInputError(f"Image values must be floats 0..1 (or uint8 0..255), got dtype {array.dtype}.")
    return array


def _to_uint8(image: np.ndarray, index: int, batch: int) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if not np.isfinite(image).all():
        raise InvalidInputError(
            f"Image {index + 1} of {batch} contains NaN or infinite values; check the node that produced it."
        )
    scaled = np.rint(image.astype(np.float32, copy=False) * np.float32(255.0))
    return np.clip(scaled, 0, 255).astype(np.uint8)


def _to_three_channels(image: np.ndarray) -> np.ndarray:
    """Grey -> grey x3; grey+alpha -> grey x3; RGBA -> RGB (alpha dropped, as cv2.imread does by default)."""
    channels = image.shape[-1]
    if channels in (1, 2):
        return np.repeat(image[..., :1], 3, axis=-1)
    return image[..., :3]


def to_bgr_uint8_batch(images: Any) -> list[np.ndarray]:
    """Turn a ComfyUI IMAGE (torch tensor or numpy array) into B contiguous uint8 BGR ``H x W x 3`` arrays.

    Accepts ``[B, H, W, C]`` or a single ``[H, W, C]``; C = 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA).
    Float values are clipped to 0..1 and scaled with ``round(x * 255)``; uint8 input is taken as 0..255 already.
    Raises ``InvalidInputError`` for an empty batch, a wrong shape or dtype, or NaN/inf values.
    """
    array = _check_batch(_as_numpy(images))
    batch = array.shape[0]
    out = []
    for index in range(batch):   # one image at a time: no float copy of the whole batch
        rgb = _to_three_channels(_to_uint8(array[index], index, batch))
        out.append(np.ascontiguousarray(rgb[..., ::-1]))
    return out


def bgr_uint8_to_image(images: Sequence[np.ndarray]) -> torch.Tensor:
    """Stack uint8 BGR ``H x W x 3`` arrays of one size into a ComfyUI IMAGE: float32 ``[B, H, W, 3]`` RGB 0..1, CPU."""
    if len(images) == 0:
        raise InvalidInputError("No images to stack.")
    shapes = {tuple(image.shape) for image in images}
    if len(shapes) != 1:
        raise InvalidInputError(f"Images to stack must all have one size, got {sorted(shapes)}.")
    shape = shapes.pop()
    if len(shape) != 3 or shape[2] != 3 or any(image.dtype != np.uint8 for image in images):
        raise InvalidInputError(f"Expected uint8 BGR images of shape H x W x 3, got {shape}.")
    rgb = np.stack([image[..., ::-1] for image in images]).astype(np.float32) / np.float32(255.0)
    return torch.from_numpy(rgb)


def read_rgb_file(path) -> np.ndarray:
    """A photo file as uint8 RGB ``H x W x 3``, turned upright by its EXIF orientation (as ComfyUI's LoadImage)."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as image:
            return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    except OSError as exc:  # missing file, not an image (PIL's UnidentifiedImageError), truncated file
        raise InvalidInputError(f"Cannot read the image {path}: {exc}") from exc
