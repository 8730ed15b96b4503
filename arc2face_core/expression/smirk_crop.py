"""The 224x224 crop SMIRK reads, made from insightface's 68 landmarks instead of MediaPipe's face mesh.

See smirk.py for the whole recipe; this module is steps 1-3 (box, warp, channel order, /255).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import InvalidInputError
from .smirk import CHANNEL_ORDERS, CROP_SCALE, CROP_SIZE

# MediaPipe's face mesh reaches up the forehead; the 68-point box stops at the brows. SMIRK's box is the mesh's, so the
# top of the 68-point box is raised by this fraction of its height (brow top to chin).
#
# How 0.16 was measured: MediaPipe's legacy FaceMesh (mediapipe 0.10.14 from PyPI, refine_landmarks=True: the same
# 478 points as the FaceLandmarker task the reference uses) on skimage's astronaut, insightface's Tom_Hanks_54745.png
# and three faces of insightface's t1.jpg, each also mirrored (10 runs, 5 people). For each face the box of all 478
# points was compared with the box of the 68 mesh points that stand for the iBUG/dlib 68 (the widely used mapping
# 162, 234, 93, ... for the jaw, 71, 63, 105, 66, 107 / 336, 296, 334, 293, 301 for the brows, ...):
#   - bottom: identical in every run (the chin, mesh point 152, is both boxes' lowest point);
#   - left/right: the mesh box is wider by 0.5% of the width on average (at most 2.4%): left as is;
#   - top: the mesh box is higher by 0.10..0.21 of the 68-point box height (per person 0.10, 0.13, 0.17, 0.18, 0.20;
#     mean of the 10 runs 0.16).
# With 0.16 the 1.4x crop lands within 2.1% (of its side) of the mesh-based crop's centre and within 2.5% of its size
# on all five faces; without the correction it was up to 6.5% off centre and 9% too small. insightface's 1k3d68 points
# are not exactly those mesh points (its brows may sit slightly differently), so the match is approximate.
FOREHEAD_EXTENSION = 0.16


def _check_landmarks(landmarks: Any) -> np.ndarray:
    array = np.asarray(landmarks.detach().cpu() if isinstance(landmarks, torch.Tensor) else landmarks, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] != 68 or array.shape[1] not in (2, 3):
        raise InvalidInputError(
            f"Expected 68 face landmarks as an array [68, 2] (x, y in pixels) or [68, 3], got shape {array.shape}.")
    if not np.isfinite(array).all():
        raise InvalidInputError("The face landmarks contain NaN or infinite values.")
    return array[:, :2]


def smirk_face_box(landmarks68: Any) -> tuple[float, float, float, float]:
    """(left, right, top, bottom) of the face as MediaPipe's mesh would span it, from 68 landmarks.

    The box of the 68 points with its top raised by ``FOREHEAD_EXTENSION`` x its height (brows to chin).
    """
    points = _check_landmarks(landmarks68)
    left, right = float(points[:, 0].min()), float(points[:, 0].max())
    top, bottom = float(points[:, 1].min()), float(points[:, 1].max())
    top -= FOREHEAD_EXTENSION * (bottom - top)
    return left, right, top, bottom


def smirk_crop_transform(landmarks68: Any, scale: float = CROP_SCALE, size: int = CROP_SIZE):
    """The similarity transform (skimage) from image pixels to SMIRK's ``size x size`` crop, as SMIRK's crop_face."""
    from skimage.transform import estimate_transform

    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise InvalidInputError(f"scale must be a positive number, got {scale!r}.")
    left, right, top, bottom = smirk_face_box(landmarks68)
    old_size = (right - left + bottom - top) / 2
    center_x, center_y = right - (right - left) / 2.0, bottom - (bottom - top) / 2.0
    side = int(old_size * scale)
    if side <= 0:
        raise InvalidInputError("The face landmarks span no area; they cannot place a crop.")
    half = side / 2
    src = np.array([[center_x - half, center_y - half], [center_x - half, center_y + half],
                    [center_x + half, center_y - half]])
    dst = np.array([[0, 0], [0, size - 1], [size - 1, 0]])
    return estimate_transform("similarity", src, dst)


def crop_for_smirk(image_rgb_uint8: np.ndarray, landmarks68: Any, channel_order: str = "bgr") -> torch.Tensor:
    """The SMIRK input for one face: ``[3, 224, 224]`` float32, values 0..1.

    ``image_rgb_uint8``: ``H x W x 3`` uint8 RGB. ``channel_order``: ``"bgr"`` (default) reproduces the Arc2Face
    demo, which swaps the crop's channels before SMIRK; ``"rgb"`` is what SMIRK's own demo gives it.
    """
    from skimage.transform import warp

    order = str(channel_order).strip().lower()
    if order not in CHANNEL_ORDERS:
        raise InvalidInputError(f"channel_order must be one of {CHANNEL_ORDERS}, got {channel_order!r}.")
    image = image_rgb_uint8
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        what = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise InvalidInputError(f"Expected a uint8 RGB image of shape H x W x 3, got a {what}.")
    tform = smirk_crop_transform(landmarks68)
    crop = warp(image, tform.inverse, output_shape=(CROP_SIZE, CROP_SIZE), preserve_range=True).astype(np.uint8)
    if order == "bgr":
        crop = crop[..., ::-1]
    return torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1).float() / 255.0


def crops_for_smirk(images_rgb_uint8: Sequence[np.ndarray], landmarks: Sequence[Any],
                    channel_order: str = "bgr") -> torch.Tensor:
    """``crop_for_smirk`` for a batch: one landmark set per image → ``[N, 3, 224, 224]``."""
    if len(images_rgb_uint8) != len(landmarks):
        raise InvalidInputError(f"{len(images_rgb_uint8)} images but {len(landmarks)} landmark sets.")
    if not images_rgb_uint8:
        raise InvalidInputError("No images to crop.")
    return torch.stack([crop_for_smirk(img, lmk, channel_order) for img, lmk in zip(images_rgb_uint8, landmarks)])
