"""MediaPipe's FaceLandmarker (478 points), the landmarks SMIRK and the Arc2Face demo crop a face with.

Optional: it needs the ``mediapipe`` package and ``face_landmarker.task`` (weights.FACE_LANDMARKER). With both, SMIRK's
crop is made exactly as SMIRK makes it; without, from insightface's 68 points (expression/smirk_crop.py), and the
caller is told which was used. Settings as SMIRK's ``utils/mediapipe_utils.py`` and Arc2Face's ``exp_utils.py``: one
face, detection and presence confidence 0.1, an RGB ``mp.Image``, points returned as (x * width, y * height, z). The
blendshape and transformation-matrix outputs the reference also asks for do not change the landmarks and are not
computed here.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..errors import CorruptWeightsError, InvalidInputError, MissingPackageError, WeightsNotFoundError
from ..weights import FACE_LANDMARKER, find_weight

NUM_POINTS = 478
CONFIDENCE = 0.1        # min_face_detection_confidence and min_face_presence_confidence in the reference

CROP_LANDMARKS = ["auto", "mediapipe", "insightface 68"]


class MediaPipeFaceLandmarker:
    """One loaded ``face_landmarker.task`` (IMAGE running mode, one face, confidences 0.1)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        mp = import_mediapipe()
        from mediapipe.tasks import python as mp_tasks
        from mediapipe.tasks.python import vision

        options = vision.FaceLandmarkerOptions(
            base_options=mp_tasks.BaseOptions(model_asset_path=str(self.path)), num_faces=1,
            min_face_detection_confidence=CONFIDENCE, min_face_presence_confidence=CONFIDENCE)
        try:
            self._detector = vision.FaceLandmarker.create_from_options(options)
        except (RuntimeError, ValueError, OSError) as exc:
            raise CorruptWeightsError(
                f"MediaPipe could not load {self.path} ({exc}). Is it face_landmarker.task? Delete it and "
                f"{FACE_LANDMARKER.where_to_get()}.") from exc
        self._mp = mp

    def detect(self, image_rgb: np.ndarray) -> Optional[np.ndarray]:
        """The 478 points [478, 3] (x, y in pixels, MediaPipe's relative z) of the face MediaPipe finds, or None."""
        image = check_rgb(image_rgb)
        result = self._detector.detect(self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=image))
        if not result.face_landmarks:
            return None
        return landmarks_to_pixels(result.face_landmarks[0], image.shape[1], image.shape[0])


def landmarks_to_pixels(normalised: Sequence[Any], width: int, height: int) -> np.ndarray:
    """MediaPipe's normalised landmarks (objects with x, y, z) → [N, 3] float64 (x * width, y * height, z)."""
    points = np.array([[p.x * width, p.y * height, p.z] for p in normalised], np.float64)
    if points.shape != (NUM_POINTS, 3):
        raise CorruptWeightsError(f"MediaPipe returned {points.shape[0]} landmarks instead of {NUM_POINTS}: is the "
                                  "model file face_landmarker.task (the face mesh with irises)?")
    return points


def check_rgb(image: Any) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        what = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise InvalidInputError(f"MediaPipe needs a uint8 RGB image H x W x 3, got a {what}.")
    return np.ascontiguousarray(image)


def mediapipe_installed() -> bool:
    return importlib.util.find_spec("mediapipe") is not None


def import_mediapipe() -> Any:
    try:
        import mediapipe
    except ImportError as exc:
        raise MissingPackageError(
            f"MediaPipe's landmarks were asked for, but the mediapipe package does not import ({exc}). Install it "
            "(pip install mediapipe) into the Python that runs ComfyUI, or choose the insightface 68-point crop."
        ) from exc
    return mediapipe


@functools.lru_cache(maxsize=2)
def _load_cached(path: str, mtime_ns: int, size: int) -> MediaPipeFaceLandmarker:
    return MediaPipeFaceLandmarker(path)


def load_face_landmarker(path: str | Path) -> MediaPipeFaceLandmarker:
    """The landmarker for ``path``, loaded once (reloaded when the file changes)."""
    stat = Path(path).stat()
    return _load_cached(str(path), stat.st_mtime_ns, stat.st_size)


@dataclass(frozen=True)
class LandmarkerChoice:
    """Which landmarks SMIRK's crop comes from, and why (for the user)."""

    landmarker: Optional[MediaPipeFaceLandmarker]   # None: insightface's 68 points
    reason: str


def choose_crop_landmarker(arc2face_roots: Sequence[str | Path], mode: str = "auto") -> LandmarkerChoice:
    """``auto``: MediaPipe when both the package and face_landmarker.task are there, else the 68-point crop (the reason
    says what is missing); ``mediapipe``: MediaPipe or an error that says what to install; ``insightface 68``: never
    MediaPipe."""
    mode = str(mode).strip().lower()
    if mode not in CROP_LANDMARKS:
        raise InvalidInputError(f"crop_landmarks must be one of {CROP_LANDMARKS}, got {mode!r}.")
    if mode == "insightface 68":
        return LandmarkerChoice(None, "insightface 68 points (chosen)")
    if mode == "auto" and not mediapipe_installed():
        return LandmarkerChoice(None, "insightface 68 points: the mediapipe package is not installed")
    try:
        path = find_weight(FACE_LANDMARKER, arc2face_roots)
    except WeightsNotFoundError:
        if mode == "mediapipe":
            raise
        return LandmarkerChoice(None, "insightface 68 points: face_landmarker.task was not found "
                                      f"({FACE_LANDMARKER.where_to_get()})")
    return LandmarkerChoice(load_face_landmarker(path), f"MediaPipe 478 points ({path}), as SMIRK")
