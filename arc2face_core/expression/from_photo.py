"""Expressions from photos: insightface finds the face and its 68 landmarks, SMIRK reads the FLAME expression.

The reference crops with MediaPipe's landmarks; here the box comes from antelopev2's 1k3d68 landmarks with SMIRK's
forehead correction (smirk_crop.FOREHEAD_EXTENSION), so MediaPipe is not needed.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from ..faces.analysis import FaceAnalyzer, FaceChoice
from ..faces.head_pose import estimate_head_pose
from .smirk import ExpressionEncoder
from .smirk_crop import crops_for_smirk


def expressions_from_photos(images_bgr: Sequence[np.ndarray], analyzer: FaceAnalyzer, landmark_model: Any,
                            encoder: ExpressionEncoder, face: FaceChoice = "largest",
                            channel_order: str = "bgr") -> tuple[torch.Tensor, torch.Tensor]:
    """One 55-d expression per photo ([B, 55] float32) and the SMIRK crops it saw ([B, 3, 224, 224], 0..1).

    Raises NoFaceError naming the photo that has no (such) face.
    """
    count = len(images_bgr)
    landmarks = [estimate_head_pose(image, analyzer, landmark_model, face, image_index=i, image_count=count)
                 .landmarks[:, :2] for i, image in enumerate(images_bgr)]
    rgb = [np.ascontiguousarray(image[..., ::-1]) for image in images_bgr]
    crops = crops_for_smirk(rgb, landmarks, channel_order)
    return encoder.encode(crops), crops
