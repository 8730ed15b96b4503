"""FLAME parameters of a photo's face with SMIRK, framed as the pose ControlNet's hints were.

The reference made each hint from the *FFHQ-aligned* pose reference: it aligns the photo to 512 px from 68 landmarks
(``image_align``), then the face model crops the aligned image itself and regresses pose, expression and camera there;
the render is mapped back through that crop into the aligned frame (docs/pose_hints.md, 'From two photos to a hint';
the same with SMIRK: docs/pose_hints.md, 'Rebuilding the hint with SMIRK and FLAME'). Here, per photo:

1. insightface finds the face ("largest" or an index) and 1k3d68 its 68 landmarks;
2. ``image_align`` makes the 512 FFHQ-aligned photo; the landmarks are carried into it by the same similarity;
3. SMIRK's own 224 crop of the aligned photo (MediaPipe's 478 points when available, else the 68 landmarks) → its
   3x3 matrix ``T`` (aligned 512 pixels → crop pixels) is recorded as ``FaceParameters.crop``;
4. SMIRK's encoders read the crop: pose, camera and shape from the RGB crop, as SMIRK was trained; the expression from
   the crop in ``channel_order`` (``bgr`` = the Arc2Face Expression Adapter demo).

The identity's shape comes from a second call on the identity photo (``FaceParameters.with_shape_of``), as the
reference takes only the shape from the identity photo.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch

from ..errors import InvalidInputError
from ..expression.smirk import CHANNEL_ORDERS, SmirkEncoder
from ..expression.smirk_crop import choose_crop, warp_crop
from ..expression.vectors import N_EXPRESSION, N_EYELID
from ..faces.align import align_detected_face
from ..faces.analysis import FaceAnalyzer, FaceChoice
from ..faces.ffhq import DEFAULT_OUTPUT_SIZE, quad_to_square
from ..faces.head_pose import estimate_head_pose
from .face_parameters import FaceParameters


@dataclass(frozen=True)
class PhotoParameters:
    """What SMIRK read from a batch of photos, and what it looked at."""

    params: FaceParameters       # one row per photo; ``crop`` = aligned 512 → SMIRK 224 similarity
    aligned: list[np.ndarray]    # the FFHQ-aligned photos, 512x512x3 uint8 RGB
    crops: torch.Tensor          # [N, 3, 224, 224] RGB 0..1: what the pose and shape encoders saw
    crop_notes: list[str]        # per photo: which landmarks made the crop (MediaPipe or insightface 68)


def landmarks_in_aligned(points: np.ndarray, quad: np.ndarray, size: int = DEFAULT_OUTPUT_SIZE) -> np.ndarray:
    """Photo landmarks (pixel centres) → the aligned image's pixel centres.

    ``image_align`` hands PIL ``quad + 0.5`` (pixel corners), so a photo point p sits at corner coordinate p + 0.5 and
    lands at ``quad_to_square(quad, size) @ (p, 1)`` in corner coordinates of the output, i.e. 0.5 less in centres.
    """
    affine = quad_to_square(np.asarray(quad, np.float64), size)
    xy = np.asarray(points, np.float64)[:, :2]
    return xy @ affine[:, :2].T + affine[:, 2] - 0.5


def face_parameters_from_photos(images_bgr: Sequence[np.ndarray], analyzer: FaceAnalyzer, landmark_model: Any,
                                smirk: SmirkEncoder, face: FaceChoice = "largest", channel_order: str = "bgr",
                                landmarker: Optional[Any] = None,
                                role: str = "Face Parameters from Photo") -> PhotoParameters:
    """FLAME parameters of one face per photo (see the module docstring). ``landmarker``: a MediaPipe face landmarker
    (faces/mediapipe_landmarks.py) for SMIRK's own crop, or None for the 68-point crop.

    Raises NoFaceError naming the photo that has no (such) face, beginning with ``role`` (what the photo is for).
    """
    order = str(channel_order).strip().lower()
    if order not in CHANNEL_ORDERS:
        raise InvalidInputError(f"channel_order must be one of {CHANNEL_ORDERS}, got {channel_order!r}.")
    if not len(images_bgr):
        raise InvalidInputError("No photos to read face parameters from.")
    missing = [p for p in ("pose", "shape", "expression") if p not in smirk.parts]
    if missing:
        raise InvalidInputError(f"Face parameters need all of SMIRK's encoders; this one lacks {missing}.")
    count = len(images_bgr)
    aligned, matrices, crops, expression_crops, notes = [], [], [], [], []
    for index, image in enumerate(images_bgr):
        head = estimate_head_pose(image, analyzer, landmark_model, face, image_index=index, image_count=count,
                                  role=role)
        rgb = np.ascontiguousarray(image[..., ::-1])
        alignment = align_detected_face(rgb, head.landmarks[:, :2], role=role, image_index=index, image_count=count)
        points = landmarks_in_aligned(head.landmarks, alignment.quad)
        crop = choose_crop(alignment.image, points, landmarker)
        aligned.append(alignment.image)
        matrices.append(crop.matrix)
        notes.append(crop.note)
        crops.append(warp_crop(alignment.image, crop.matrix, "rgb"))
        expression_crops.append(crops[-1].flip(0) if order == "bgr" else crops[-1])
    crops_rgb = torch.stack(crops)
    out = smirk.encode(crops_rgb, torch.stack(expression_crops))
    expression = out["expression"]
    params = FaceParameters(
        shape=out["shape"], expression=expression[:, :N_EXPRESSION].contiguous(),
        eyelids=expression[:, N_EXPRESSION:N_EXPRESSION + N_EYELID].contiguous(),
        jaw=expression[:, N_EXPRESSION + N_EYELID:].contiguous(), pose=out["pose"], camera=out["camera"],
        crop=torch.from_numpy(np.stack(matrices)).float())
    return PhotoParameters(params=params, aligned=aligned, crops=crops_rgb, crop_notes=notes)
