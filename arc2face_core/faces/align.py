"""FFHQ alignment of the chosen face of photos, as Arc2Face's expression demo prepares its input: 68 landmarks, then
``image_align`` to a square (the demo uses FAN's landmarks; here antelopev2's 1k3d68 gives the same 68 iBUG points).
The aligned photo is then the ArcFace input and the Reference Adapter's reference."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import NoFaceError
from .analysis import FaceAnalyzer, FaceChoice
from .ffhq import DEFAULT_OUTPUT_SIZE, image_align
from .head_pose import estimate_head_pose


def align_faces(images_bgr: Sequence[np.ndarray], analyzer: FaceAnalyzer, landmark_model: Any,
                face: FaceChoice = "largest", size: int = DEFAULT_OUTPUT_SIZE) -> np.ndarray:
    """The FFHQ-aligned square of the chosen face of each photo: uint8 RGB [B, size, size, 3].

    ``face`` is ``"largest"`` or an index counted left to right; a photo without (such) a face is a NoFaceError
    naming it.
    """
    aligned = []
    for index, image in enumerate(images_bgr):
        try:
            pose = estimate_head_pose(image, analyzer, landmark_model, face, image_index=index,
                                      image_count=len(images_bgr))
        except NoFaceError as exc:   # the landmark step words its errors for a pose reference
            raise NoFaceError("Face Align: " + str(exc).removeprefix("Pose reference: ")) from None
        rgb = np.ascontiguousarray(image[..., ::-1])
        aligned.append(image_align(rgb, pose.landmarks[:, :2], output_size=size).image)
    return np.stack(aligned)
