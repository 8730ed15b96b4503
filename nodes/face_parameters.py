"""FLAME face parameters from a photo with SMIRK's whole encoder: what the FLAME normal map and the Expression Adapter
are made from."""

from __future__ import annotations

import logging

from .faces import FACE_CHOICES
from .model_cache import cached_patcher, file_key

CATEGORY = "Arc2Face"
CHANNEL_ORDERS = {"bgr (Arc2Face demo)": "bgr", "rgb (SMIRK demo)": "rgb"}
CROP_LANDMARKS = {"auto (MediaPipe if installed)": "auto", "mediapipe (as SMIRK)": "mediapipe",
                  "insightface 68": "insightface 68"}
CROP_LANDMARKS_TOOLTIP = (
    "Which landmarks place SMIRK's 224 crop. MediaPipe's 478 points (needs the mediapipe package and "
    "models/arc2face/smirk/face_landmarker.task) crop exactly as SMIRK and the Arc2Face demo do; insightface's 68 "
    "points (antelopev2's 1k3d68.onnx, always there) approximate that crop. auto: MediaPipe when both are there, else "
    "68 points; the console says which was used.")
log = logging.getLogger("arc2face")

_SMIRK_CACHE: dict = {}   # the whole SMIRK encoder (~26 MB), keyed by the file's identity; ComfyUI manages its device


def smirk_patcher(path):
    """SMIRK's three encoders as one ModelPatcher, loaded once per file (reloaded when the file changes)."""
    from ..arc2face_core.expression.smirk import load_smirk

    return cached_patcher(_SMIRK_CACHE, file_key(path), lambda: load_smirk(path))


def crop_landmarker(roots, choice: str):
    """The MediaPipe landmarker the crop choice asks for (or None), logged so the user knows which crop was made."""
    from ..arc2face_core.errors import InvalidInputError
    from ..arc2face_core.faces.mediapipe_landmarks import choose_crop_landmarker

    if choice not in CROP_LANDMARKS:
        raise InvalidInputError(f"crop_landmarks must be one of {list(CROP_LANDMARKS)}, got {choice!r}")
    chosen = choose_crop_landmarker(roots.arc2face, CROP_LANDMARKS[choice])
    log.info("Arc2Face: SMIRK crop from %s", chosen.reason)
    return chosen.landmarker


class Arc2FaceFaceParametersFromPhoto:
    DESCRIPTION = (
        "Reads a face's FLAME 2020 parameters with SMIRK's whole encoder (models/arc2face/smirk/SMIRK_em1.pt): shape "
        "300, expression 50, eyelids 2, jaw 3, head pose 3 and camera 3. As the reference made the pose ControlNet's "
        "hints, the photo is first FFHQ-aligned to 512 px (insightface's 68 landmarks), then SMIRK reads its own 224 "
        "crop of the aligned face; the crop is recorded so the FLAME render lands in the aligned frame. Use it on the "
        "pose reference (pose, expression, camera) and on the identity photo (its shape) for Normal Map from FLAME; "
        "the expression output feeds the Expression Adapter. One row per photo.")
    CATEGORY = CATEGORY
    FUNCTION = "read"
    RETURN_TYPES = ("ARC2FACE_FACE_PARAMS", "ARC2FACE_EXPRESSION", "IMAGE", "IMAGE")
    RETURN_NAMES = ("params", "expression", "aligned", "crops")
    OUTPUT_TOOLTIPS = (
        "FLAME parameters, one row per photo, with the aligned-512 -> SMIRK-crop transform, for Normal Map from FLAME.",
        "The 55-d expression (50 + eyelids 2 + jaw 3) the Expression Adapter takes: the same values as in params.",
        "The FFHQ-aligned photos (512x512): the frame the pose hint is drawn in.",
        "SMIRK's 224x224 crops of the aligned photos (RGB), for preview.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "arcface": ("ARCFACE", {"tooltip": "From Arc2Face ArcFace Loader (its face detector is used)."}),
                "image": ("IMAGE", {"tooltip": "Photo(s) of the face to read: the pose/expression reference, or the "
                                               "identity photo for its shape."}),
                "face": (list(FACE_CHOICES), {"default": "largest", "tooltip": (
                    "Which face when a photo shows several: the largest, or an index from the left (0 = leftmost).")}),
                "channel_order": (list(CHANNEL_ORDERS), {"default": "bgr (Arc2Face demo)", "tooltip": (
                    "Channel order of the crop the expression encoder reads: the Arc2Face demo feeds it BGR (as the "
                    "Expression Adapter was used there), SMIRK's own demo RGB. Pose, camera and shape are always "
                    "read from RGB, as SMIRK was trained.")}),
            },
            "optional": {
                "crop_landmarks": (list(CROP_LANDMARKS), {"default": "auto (MediaPipe if installed)",
                                                          "tooltip": CROP_LANDMARKS_TOOLTIP}),
            },
        }

    def read(self, arcface, image, face: str, channel_order: str,
             crop_landmarks: str = "auto (MediaPipe if installed)"):
        from ..arc2face_core.errors import InvalidInputError
        from ..arc2face_core.faces.landmarks import landmark_model_for
        from ..arc2face_core.images import to_bgr_uint8_batch
        from ..arc2face_core.pose.smirk_photo import face_parameters_from_photos
        from ..arc2face_core.weights import SMIRK, find_weight
        from .comfy_internals import model_management as mm
        from .comfy_paths import model_roots

        if channel_order not in CHANNEL_ORDERS:
            raise InvalidInputError(f"channel_order must be one of {list(CHANNEL_ORDERS)}, got {channel_order!r}")
        roots = model_roots()
        landmarker = crop_landmarker(roots, crop_landmarks)
        smirk = smirk_patcher(find_weight(SMIRK, roots.arc2face))
        mm.load_models_gpu([smirk])
        result = face_parameters_from_photos(to_bgr_uint8_batch(image), arcface, landmark_model_for(arcface, roots),
                                             smirk.model, face, CHANNEL_ORDERS[channel_order], landmarker)
        for index, note in enumerate(result.crop_notes):
            log.info("Arc2Face: Face Parameters from Photo, photo %d: SMIRK crop from %s", index, note)
        aligned = _to_image(result.aligned).to(mm.intermediate_device())
        crops = result.crops.movedim(1, -1).to(mm.intermediate_device())
        return (result.params, result.params.expression_vector(), aligned, crops)


def _to_image(rgb_arrays):
    import numpy as np
    import torch

    return torch.from_numpy(np.stack(rgb_arrays).astype(np.float32) / 255.0)


NODE_CLASS_MAPPINGS = {"Arc2FaceFaceParametersFromPhoto": Arc2FaceFaceParametersFromPhoto}
NODE_DISPLAY_NAME_MAPPINGS = {"Arc2FaceFaceParametersFromPhoto": "Face Parameters from Photo (SMIRK)"}
