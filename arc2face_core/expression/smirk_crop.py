"""The 224x224 crop SMIRK reads: from MediaPipe's 478 points as SMIRK makes it, or from insightface's 68 landmarks.

SMIRK's ``crop_face`` (and the Arc2Face demo's copy): the box of the landmarks, side ``(w + h) / 2``, square side
``int(side * 1.4)`` around the box centre, a similarity transform sending that square's top-left, bottom-left and
top-right corners to (0, 0), (0, 223) and (223, 0); skimage ``warp`` (bilinear, black outside the photo) truncated to
uint8, then ``/255``. With MediaPipe (faces/mediapipe_landmarks.py) the box is that of all 478 points; without, the
box of the 68 points with its top raised to where MediaPipe's mesh ends (``FOREHEAD_EXTENSION``). ``choose_crop``
picks the first when a landmarker is given and says which one it used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

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
MEDIAPIPE_POINTS = 478


def _check_points(landmarks: Any, count: int, what: str) -> np.ndarray:
    array = np.asarray(landmarks.detach().cpu() if isinstance(landmarks, torch.Tensor) else landmarks, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] != count or array.shape[1] not in (2, 3):
        raise InvalidInputError(
            f"Expected {count} {what} as an array [{count}, 2] (x, y in pixels) or [{count}, 3], got shape "
            f"{array.shape}.")
    if not np.isfinite(array).all():
        raise InvalidInputError(f"The {what} contain NaN or infinite values.")
    return array[:, :2]


def _check_landmarks(landmarks: Any) -> np.ndarray:
    return _check_points(landmarks, 68, "face landmarks")


def smirk_face_box(landmarks68: Any) -> tuple[float, float, float, float]:
    """(left, right, top, bottom) of the face as MediaPipe's mesh would span it, from 68 landmarks.

    The box of the 68 points with its top raised by ``FOREHEAD_EXTENSION`` x its height (brows to chin).
    """
    points = _check_landmarks(landmarks68)
    left, right = float(points[:, 0].min()), float(points[:, 0].max())
    top, bottom = float(points[:, 1].min()), float(points[:, 1].max())
    top -= FOREHEAD_EXTENSION * (bottom - top)
    return left, right, top, bottom


def crop_transform_from_box(left: float, right: float, top: float, bottom: float, scale: float = CROP_SCALE,
                            size: int = CROP_SIZE):
    """SMIRK's ``crop_face`` for a landmark box: the similarity (skimage) from image pixels to the ``size`` crop."""
    from skimage.transform import estimate_transform

    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise InvalidInputError(f"scale must be a positive number, got {scale!r}.")
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


def smirk_crop_transform(landmarks68: Any, scale: float = CROP_SCALE, size: int = CROP_SIZE):
    """The crop transform from insightface's 68 landmarks (box corrected to MediaPipe's, see FOREHEAD_EXTENSION)."""
    return crop_transform_from_box(*smirk_face_box(landmarks68), scale=scale, size=size)


def mediapipe_crop_transform(points478: Any, scale: float = CROP_SCALE, size: int = CROP_SIZE):
    """The crop transform exactly as SMIRK makes it: the box of all 478 MediaPipe points (x, y in pixels)."""
    points = _check_points(points478, MEDIAPIPE_POINTS, "MediaPipe face landmarks")
    return crop_transform_from_box(float(points[:, 0].min()), float(points[:, 0].max()), float(points[:, 1].min()),
                                   float(points[:, 1].max()), scale=scale, size=size)


@dataclass(frozen=True)
class SmirkCrop:
    """Where SMIRK's crop of one face comes from: ``matrix`` (3x3, photo pixels → crop pixels) and the landmarks."""

    matrix: np.ndarray
    source: str      # "mediapipe" or "insightface 68"
    note: str        # what a user reads: which landmarks, and why when MediaPipe was wanted but not used


def choose_crop(image_rgb_uint8: np.ndarray, landmarks68: Any, landmarker: Optional[Any] = None) -> SmirkCrop:
    """SMIRK's crop for the face whose 68 landmarks are given: MediaPipe's when a landmarker is given and finds that
    face (SMIRK's own crop), else the 68-point crop. ``landmarker.detect(rgb)`` returns [478, 3] points or None."""
    box = smirk_face_box(landmarks68)
    if landmarker is not None:
        points = find_mediapipe_face(image_rgb_uint8, box, landmarker)
        if points is not None:
            return SmirkCrop(mediapipe_crop_transform(points).params, "mediapipe", "MediaPipe 478 points")
        note = "insightface 68 points (MediaPipe found no face there)"
    else:
        note = "insightface 68 points"
    return SmirkCrop(crop_transform_from_box(*box).params, "insightface 68", note)


def find_mediapipe_face(image_rgb_uint8: np.ndarray, box: tuple[float, float, float, float], landmarker: Any,
                        retry_region: float = 2.0) -> Optional[np.ndarray]:
    """MediaPipe's 478 points of the face in ``box`` (left, right, top, bottom), or None.

    The whole photo first, as the reference runs it. MediaPipe returns one face; when that face's centre is outside
    the box (another person), it looks again in a region ``retry_region`` box-sides wide around the box.
    """
    left, right, top, bottom = box
    points = landmarker.detect(image_rgb_uint8)
    if points is not None and _centre_inside(points, box):
        return points
    side = max(right - left, bottom - top) * retry_region
    cx, cy = (left + right) / 2, (top + bottom) / 2
    height, width = image_rgb_uint8.shape[:2]
    x0, y0 = max(int(cx - side / 2), 0), max(int(cy - side / 2), 0)
    x1, y1 = min(int(math.ceil(cx + side / 2)), width), min(int(math.ceil(cy + side / 2)), height)
    if (x0, y0, x1, y1) == (0, 0, width, height) or x1 - x0 < 2 or y1 - y0 < 2:
        return None
    points = landmarker.detect(np.ascontiguousarray(image_rgb_uint8[y0:y1, x0:x1]))
    if points is None:
        return None
    points = points.copy()
    points[:, 0] += x0
    points[:, 1] += y0
    return points if _centre_inside(points, box) else None


def _centre_inside(points: np.ndarray, box: tuple[float, float, float, float]) -> bool:
    left, right, top, bottom = box
    cx = (points[:, 0].min() + points[:, 0].max()) / 2
    cy = (points[:, 1].min() + points[:, 1].max()) / 2
    return bool(left <= cx <= right and top <= cy <= bottom)


def warp_crop(image_rgb_uint8: np.ndarray, matrix: np.ndarray, channel_order: str = "rgb") -> torch.Tensor:
    """The ``[3, 224, 224]`` float32 crop (0..1) for a 3x3 photo → crop matrix, as SMIRK warps it."""
    from skimage.transform import AffineTransform, warp

    order = _check_order(channel_order)
    image = _check_image(image_rgb_uint8)
    tform = AffineTransform(matrix=np.asarray(matrix, np.float64))
    crop = warp(image, tform.inverse, output_shape=(CROP_SIZE, CROP_SIZE), preserve_range=True).astype(np.uint8)
    if order == "bgr":
        crop = crop[..., ::-1]
    return torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1).float() / 255.0


def crop_for_smirk(image_rgb_uint8: np.ndarray, landmarks68: Any, channel_order: str = "bgr") -> torch.Tensor:
    """The SMIRK input for one face from its 68 landmarks: ``[3, 224, 224]`` float32, values 0..1.

    ``image_rgb_uint8``: ``H x W x 3`` uint8 RGB. ``channel_order``: ``"bgr"`` (default) reproduces the Arc2Face
    demo, which swaps the crop's channels before SMIRK; ``"rgb"`` is what SMIRK's own demo gives it.
    """
    _check_order(channel_order)
    _check_image(image_rgb_uint8)
    return warp_crop(image_rgb_uint8, smirk_crop_transform(landmarks68).params, channel_order)


def _check_order(channel_order: str) -> str:
    order = str(channel_order).strip().lower()
    if order not in CHANNEL_ORDERS:
        raise InvalidInputError(f"channel_order must be one of {CHANNEL_ORDERS}, got {channel_order!r}.")
    return order


def _check_image(image: Any) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        what = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise InvalidInputError(f"Expected a uint8 RGB image of shape H x W x 3, got a {what}.")
    return image


def crops_for_smirk(images_rgb_uint8: Sequence[np.ndarray], landmarks: Sequence[Any],
                    channel_order: str = "bgr") -> torch.Tensor:
    """``crop_for_smirk`` for a batch: one landmark set per image → ``[N, 3, 224, 224]``."""
    if len(images_rgb_uint8) != len(landmarks):
        raise InvalidInputError(f"{len(images_rgb_uint8)} images but {len(landmarks)} landmark sets.")
    if not images_rgb_uint8:
        raise InvalidInputError("No images to crop.")
    return torch.stack([crop_for_smirk(img, lmk, channel_order) for img, lmk in zip(images_rgb_uint8, landmarks)])
