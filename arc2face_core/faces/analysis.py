"""Face analysis for Arc2Face: insightface's detector plus Arc2Face's own ``arcface.onnx`` recogniser.

Step 1 of the ID conditioning, as in the reference code: detect on the BGR image at det_size 640, take the largest box,
align the 112x112 crop from the 5 keypoints, run ``arcface.onnx`` and L2-normalise the 512-d output.

Only the two files needed are loaded, each through ``insightface.model_zoo.get_model`` (which picks SCRFD or
ArcFaceONNX from the graph's shapes). ``FaceAnalysis`` is avoided on purpose: it opens every ``.onnx`` in the folder
and can download packs. The calls used (``get_model``, ``prepare``, ``detect(img, max_num=0)``, ``norm_crop``,
``get_feat``) mean the same in insightface 0.7.3 and 2.x.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
import torch

from ..errors import CorruptWeightsError, InvalidInputError, NoFaceError, WrongModelError
from ..images import bgr_uint8_to_image, to_bgr_uint8_batch
from ..weights import DETECTOR, HF_URL, ModelRoots, find_arcface_recogniser, find_weight
from .onnx_models import check_active_provider, check_providers, ctx_id, load_onnx, provider_names, routed_as

EMBED_DIM = 512
CROP_SIZE = 112
DET_THRESH = 0.5            # insightface's FaceAnalysis default, used by the reference code
MIN_EMBED_NORM = 1e-6       # a real ArcFace output has norm ~20; anything near 0 is a broken model
RECOGNISER_CHUNK = 32       # crops per recogniser call, to bound memory on big batches

FaceChoice = Union[str, int]   # "largest", or a face index counted left to right


@dataclass(frozen=True)
class DetectedFace:
    """One detected face, in the pixel coordinates of the image it was found in."""

    bbox: np.ndarray   # [4] float32: x1, y1, x2, y2
    kps: np.ndarray    # [5, 2] float32: left eye, right eye, nose, left and right mouth corner
    score: float

    @property
    def area(self) -> float:
        """Box area, computed as the reference code does: (x2 - x1) * (y2 - y1)."""
        return float((self.bbox[2] - self.bbox[0]) * (self.bbox[3] - self.bbox[1]))

    @property
    def center_x(self) -> float:
        return float(self.bbox[0] + self.bbox[2]) / 2.0


@dataclass(frozen=True)
class EmbedResult:
    """ArcFace embeddings of a batch, one row per image, and what they were computed from."""

    embeds: torch.Tensor             # [B, 512] float32, CPU, every row L2-normalised
    crops: torch.Tensor              # [B, 112, 112, 3] float32 RGB 0..1: the aligned faces (ComfyUI IMAGE)
    faces: list[DetectedFace]        # the face chosen in each image


@dataclass(frozen=True)
class FoundFaces:
    """The largest face of each image of a batch where there is one (``found`` per image; the others skipped)."""

    embeds: torch.Tensor             # [M, 512] float32 unit rows, M = number of images with a face
    found: list[bool]                # per image
    crops: list[np.ndarray]          # M aligned 112x112 uint8 BGR crops (what the recogniser saw)


def _check_detector(model: Any, path: Path) -> None:
    if getattr(model, "taskname", None) != "detection":
        raise WrongModelError(
            f"{path} is not a face detector: insightface reads it as {routed_as(model)}. It must be antelopev2's "
            f"scrfd_10g_bnkps.onnx; put the right file there ({DETECTOR.where_to_get()})."
        )
    if not getattr(model, "use_kps", False):
        raise WrongModelError(
            f"{path} is a face detector without the 5 facial keypoints that face alignment needs. Use antelopev2's "
            "scrfd_10g_bnkps.onnx."
        )


def _check_recogniser(model: Any, path: Path) -> None:
    if getattr(model, "taskname", None) != "recognition":
        raise WrongModelError(
            f"{path} is not a face recogniser: insightface reads it as {routed_as(model)}. It must be Arc2Face's "
            f"arcface.onnx from {HF_URL}."
        )
    size = tuple(model.input_size)
    dim = model.output_shape[-1] if model.output_shape else None
    batch = model.input_shape[0]
    if size != (CROP_SIZE, CROP_SIZE) or (isinstance(dim, int) and dim != EMBED_DIM) or len(model.output_shape) != 2:
        raise WrongModelError(
            f"{path} takes {size[0]}x{size[1]} faces and returns {model.output_shape}; Arc2Face's arcface.onnx takes "
            f"112x112 faces and returns [batch, 512]. Download arcface.onnx from {HF_URL}."
        )
    if isinstance(batch, int) and batch != 1:
        raise WrongModelError(f"{path} has a fixed batch size of {batch}; the recogniser must take 1 or any number.")


def _check_det_size(det_size: Any) -> int:
    if isinstance(det_size, bool) or not isinstance(det_size, (int, np.integer)):
        raise InvalidInputError(f"det_size must be an integer, got {det_size!r}.")
    if not 64 <= det_size <= 4096 or det_size % 32:
        raise InvalidInputError(f"det_size must be a multiple of 32 between 64 and 4096 (default 640), got {det_size}.")
    return int(det_size)


class FaceAnalyzer:
    """A loaded face detector (SCRFD) and Arc2Face recogniser (``arcface.onnx``).

    Build it with ``load_face_analyzer``; it holds the two ONNX Runtime sessions and nothing else, so dropping the
    object frees them.
    """

    def __init__(self, detector: Any, recogniser: Any, *, detector_path: Path, recogniser_path: Path,
                 providers: Sequence[Any], det_size: int = 640) -> None:
        self.detector = detector
        self.recogniser = recogniser
        self.detector_path = Path(detector_path)
        self.recogniser_path = Path(recogniser_path)
        self.providers = list(providers)
        self.det_size = _check_det_size(det_size)
        # A symbolic batch axis (a string or None) takes all crops at once; a fixed one takes them one by one.
        self.batched_recognition = not isinstance(recogniser.input_shape[0], int)

    def __repr__(self) -> str:
        return (f"FaceAnalyzer(detector={self.detector_path.name}, recogniser={self.recogniser_path.name}, "
                f"providers={provider_names(self.providers)}, det_size={self.det_size})")

    def detect_faces(self, image_bgr: np.ndarray) -> list[DetectedFace]:
        """All faces in one uint8 BGR ``H x W x 3`` image, ordered left to right by box centre."""
        check_bgr(image_bgr)
        bboxes, kpss = self.detector.detect(image_bgr, max_num=0)
        if kpss is None:
            raise WrongModelError(f"{self.detector_path} returned no facial keypoints; use scrfd_10g_bnkps.onnx.")
        faces = [DetectedFace(bbox=np.asarray(b[:4], np.float32), kps=np.asarray(k, np.float32), score=float(b[4]))
                 for b, k in zip(bboxes, kpss)]
        return sorted(faces, key=lambda face: face.center_x)

    def align(self, image_bgr: np.ndarray, face: DetectedFace) -> np.ndarray:
        """The 112x112 BGR crop aligned from the face's 5 keypoints to ArcFace's template (insightface's norm_crop)."""
        from insightface.utils import face_align

        return face_align.norm_crop(image_bgr, landmark=face.kps, image_size=CROP_SIZE)

    def embed(self, images: Any, face: FaceChoice = "largest") -> EmbedResult:
        """ArcFace embeddings, one per image: ``images`` is a ComfyUI IMAGE (tensor/array ``[B,H,W,C]``, RGB 0..1)
        or a list of uint8 BGR arrays. ``face`` is ``"largest"`` or an index counted left to right (0 = leftmost).

        Raises ``NoFaceError`` naming the image when it has no face (or fewer than ``face + 1``); never returns a
        zero or made-up embedding.
        """
        choice = parse_face_choice(face)
        bgr_images = _as_bgr_list(images)
        count = len(bgr_images)
        chosen = [self.choose_face(img, choice, i, count) for i, img in enumerate(bgr_images)]
        crops = [self.align(img, f) for img, f in zip(bgr_images, chosen)]
        raw = self._recognise(crops)
        embeds = _normalise(raw, self.recogniser_path)
        return EmbedResult(embeds=embeds, crops=bgr_uint8_to_image(crops), faces=chosen)

    def embed_where_found(self, images: Any) -> tuple[torch.Tensor, list[bool]]:
        """The largest face's embedding of every image that has a face: (unit rows [M, 512], found per image).

        Unlike ``embed``, an image without a face is skipped rather than an error: the identity check scores it.
        """
        found = self.analyse_where_found(images)
        return found.embeds, found.found

    def analyse_where_found(self, images: Any) -> "FoundFaces":
        """``embed_where_found`` with the aligned 112x112 crops the embeddings were computed from (a dataset's
        training crops: the face ArcFace saw, detected and aligned once)."""
        crops, found = [], []
        for image in _as_bgr_list(images):
            faces = self.detect_faces(image)
            found.append(bool(faces))
            if faces:
                crops.append(self.align(image, max(faces, key=lambda f: f.area)))
        if not crops:
            return FoundFaces(torch.empty(0, EMBED_DIM), found, [])
        return FoundFaces(_normalise(self._recognise(crops), self.recogniser_path), found, crops)

    def choose_face(self, image_bgr: np.ndarray, choice: str | int, index: int, count: int) -> DetectedFace:
        """The chosen face of image ``index`` (of ``count``, for messages), or NoFaceError naming that image."""
        faces = self.detect_faces(image_bgr)
        height, width = image_bgr.shape[:2]
        where = f"image {index + 1} of {count} ({width}x{height} pixels)"
        if not faces:
            raise NoFaceError(
                f"No face found in {where}. Use a photo where the face is clearer, larger and turned towards the "
                "camera, or crop the image closer around the face; a different photo of the person also works."
            )
        if choice == "largest":
            return max(faces, key=lambda f: f.area)   # first of equal areas, counting left to right
        if choice >= len(faces):
            raise NoFaceError(
                f"Face index {choice} asked for in {where}, but only {len(faces)} face(s) were found there "
                f"(indices 0 to {len(faces) - 1}, counted left to right). Use 'largest' or a smaller index."
            )
        return faces[choice]

    def _recognise(self, crops: list[np.ndarray]) -> np.ndarray:
        step = RECOGNISER_CHUNK if self.batched_recognition else 1
        parts = [np.asarray(self.recogniser.get_feat(crops[i:i + step])) for i in range(0, len(crops), step)]
        raw = np.concatenate(parts, axis=0)
        if raw.shape != (len(crops), EMBED_DIM):
            raise WrongModelError(
                f"{self.recogniser_path} returned an output of shape {raw.shape} for {len(crops)} face(s); "
                f"Arc2Face needs one 512-d vector per face. Use arcface.onnx from {HF_URL}."
            )
        return raw


def _normalise(raw: np.ndarray, path: Path) -> torch.Tensor:
    """L2-normalise each row (in float64, then float32); refuse NaN/inf or ~zero vectors."""
    raw = raw.astype(np.float64)
    count = raw.shape[0]
    for i, row in enumerate(raw):
        if not np.isfinite(row).all():
            raise CorruptWeightsError(
                f"{path} returned NaN/inf for the face in image {i + 1} of {count}. The file may be corrupt (delete "
                "it and download it again), or the execution provider misbehaves (try CPU)."
            )
        if np.linalg.norm(row) < MIN_EMBED_NORM:
            raise CorruptWeightsError(
                f"{path} returned an all-zero embedding for the face in image {i + 1} of {count}; a real ArcFace "
                f"never does. The file is probably damaged: delete it and download it again from {HF_URL}."
            )
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    return torch.from_numpy(unit.astype(np.float32))


def check_bgr(image: Any) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        what = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise InvalidInputError(f"Expected a uint8 BGR image of shape H x W x 3, got a {what}.")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InvalidInputError(f"The image has no pixels (shape {image.shape}).")


def _as_bgr_list(images: Any) -> list[np.ndarray]:
    if isinstance(images, (list, tuple)):
        if not images:
            raise InvalidInputError("The image batch is empty: connect at least one image.")
        for image in images:
            check_bgr(image)
        return [np.ascontiguousarray(image) for image in images]
    return to_bgr_uint8_batch(images)


def parse_face_choice(face: Any) -> str | int:
    """``"largest"``, or a face index >= 0 (an int or a string of digits, as a node widget may send it)."""
    if isinstance(face, str):
        text = face.strip().lower()
        if text == "largest":
            return "largest"
        if text.isdigit():
            return int(text)
    elif isinstance(face, (int, np.integer)) and not isinstance(face, bool) and face >= 0:
        return int(face)
    raise InvalidInputError(f"face must be 'largest' or a face index 0, 1, 2... (left to right), got {face!r}.")


def load_face_analyzer(roots: ModelRoots, providers: Sequence[Any], det_size: int = 640, download: bool = False,
                       *, provider_options: Any = None, strict_providers: bool = False) -> FaceAnalyzer:
    """Find and load the detector (``insightface/models/antelopev2/scrfd_10g_bnkps.onnx``) and Arc2Face's
    ``arcface.onnx`` with the given ONNX Runtime providers.

    ``download`` lets a missing ``arcface.onnx`` be fetched from Hugging Face; the detector is never downloaded and
    insightface itself never downloads anything here. Both files are located before either is loaded, so a missing
    file is reported first (``WeightsNotFoundError``, ``WrongModelError`` for a lone glintr100.onnx).
    ``strict_providers``: raise ``ProviderError`` when ONNX Runtime cannot start the first requested provider
    (otherwise it silently runs on the next one, which is logged as a warning).
    """
    det_size = _check_det_size(det_size)
    check_providers(providers)
    detector_path = find_weight(DETECTOR, roots.insightface, download=download)
    recogniser_path = find_arcface_recogniser(roots.arc2face, roots.insightface, download=download)

    context = ctx_id(providers)
    detector = load_onnx(detector_path, providers, provider_options)
    _check_detector(detector, detector_path)
    check_active_provider(detector, detector_path, providers, strict_providers)
    # Exactly one detection size: insightface 2.x would otherwise run its default 128 + 640 multi-scale pass.
    detector.prepare(context, input_size=(det_size, det_size), det_thresh=DET_THRESH)

    recogniser = load_onnx(recogniser_path, providers, provider_options)
    _check_recogniser(recogniser, recogniser_path)
    recogniser.prepare(context)
    return FaceAnalyzer(detector, recogniser, detector_path=detector_path, recogniser_path=recogniser_path,
                        providers=providers, det_size=det_size)
