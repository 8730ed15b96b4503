"""Expressions from photos: insightface finds the face and its 68 landmarks, SMIRK reads the FLAME expression.

The crop is SMIRK's own (MediaPipe's 478 points) when a MediaPipe landmarker is given and finds the chosen face, as the
reference makes it on the photo itself; otherwise from antelopev2's 1k3d68 landmarks with SMIRK's forehead correction
(smirk_crop.FOREHEAD_EXTENSION).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch

from ..errors import InvalidInputError
from ..faces.analysis import FaceAnalyzer, FaceChoice
from ..faces.head_pose import estimate_head_pose
from .smirk import CHANNEL_ORDERS, ExpressionEncoder
from .smirk_crop import choose_crop, warp_crop


def expressions_from_photos(images_bgr: Sequence[np.ndarray], analyzer: FaceAnalyzer, landmark_model: Any,
                            encoder: ExpressionEncoder, face: FaceChoice = "largest",
                            channel_order: str = "bgr", landmarker: Optional[Any] = None,
                            notes: Optional[list[str]] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One 55-d expression per photo ([B, 55] float32) and the SMIRK crops it saw ([B, 3, 224, 224], 0..1).

    ``landmarker``: a MediaPipe face landmarker (faces/mediapipe_landmarks.py) or None. ``notes``, when given, gets
    one line per photo saying which landmarks made its crop. Raises NoFaceError naming the photo that has no (such)
    face.
    """
    order = str(channel_order).strip().lower()
    if order not in CHANNEL_ORDERS:
        raise InvalidInputError(f"channel_order must be one of {CHANNEL_ORDERS}, got {channel_order!r}.")
    if not len(images_bgr):
        raise InvalidInputError("No images to crop.")
    count = len(images_bgr)
    crops = []
    for index, image in enumerate(images_bgr):
        landmarks = estimate_head_pose(image, analyzer, landmark_model, face, image_index=index,
                                       image_count=count, role="Expression from Photo").landmarks[:, :2]
        rgb = np.ascontiguousarray(image[..., ::-1])
        crop = choose_crop(rgb, landmarks, landmarker)
        if notes is not None:
            notes.append(crop.note)
        crops.append(warp_crop(rgb, crop.matrix, order))
    crops_tensor = torch.stack(crops)
    return encoder.encode(crops_tensor), crops_tensor
