"""FFHQ alignment of the chosen face of photos, as Arc2Face's expression demo prepares its input: 68 landmarks, then
``image_align`` to a square (the demo uses FAN's landmarks; here antelopev2's 1k3d68 gives the same 68 iBUG points).
The aligned photo is then the ArcFace input and the Reference Adapter's reference."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import InvalidInputError
from .analysis import FaceAnalyzer, FaceChoice
from .ffhq import DEFAULT_OUTPUT_SIZE, FfhqAlignment, image_align
from .head_pose import degenerate_face_error, estimate_head_pose


def align_detected_face(rgb: np.ndarray, landmarks: np.ndarray, *, role: str, image_index: int, image_count: int,
                        output_size: int = DEFAULT_OUTPUT_SIZE) -> FfhqAlignment:
    """``image_align`` of a face the detector found, with errors worded for the photo: landmarks whose eyes and mouth
    coincide mean the detector took something for a face that is none (noise, a tiny or blurred patch)."""
    try:
        return image_align(rgb, landmarks, output_size=output_size)
    except InvalidInputError as exc:
        if "degenerate" not in str(exc):
            raise
        raise degenerate_face_error(role, rgb, image_index, image_count,
                                    "its eyes and mouth nearly coincide, so they frame no face") from None


def align_faces(images_bgr: Sequence[np.ndarray], analyzer: FaceAnalyzer, landmark_model: Any,
                face: FaceChoice = "largest", size: int = DEFAULT_OUTPUT_SIZE) -> np.ndarray:
    """The FFHQ-aligned square of the chosen face of each photo: uint8 RGB [B, size, size, 3].

    ``face`` is ``"largest"`` or an index counted left to right; a photo without (such) a face is a NoFaceError
    naming it.
    """
    aligned = []
    for index, image in enumerate(images_bgr):
        pose = estimate_head_pose(image, analyzer, landmark_model, face, image_index=index,
                                  image_count=len(images_bgr), role="Face Align")
        rgb = np.ascontiguousarray(image[..., ::-1])
        aligned.append(align_detected_face(rgb, pose.landmarks[:, :2], role="Face Align", image_index=index,
                                           image_count=len(images_bgr), output_size=size).image)
    return np.stack(aligned)
