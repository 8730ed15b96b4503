"""Head pose: rotations from and to insightface's (pitch, yaw, roll), and the pose of a face in a photo."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import CorruptWeightsError, InvalidInputError, NoFaceError, WrongModelError
from ..validation import finite_number, float_array
from .analysis import DetectedFace, FaceAnalyzer, FaceChoice, check_bgr, parse_face_choice
from .landmarks import LANDMARK_TASK, mean_shape
from .onnx_models import routed_as

ROTATION_TOLERANCE = 1e-4


def rotation_from_angles(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """R = Rz(roll) @ Ry(yaw) @ Rx(pitch), angles in degrees: the inverse of insightface's ``matrix2angle``."""
    values = [finite_number(v, f"{name} (degrees)") for name, v in (("pitch", pitch), ("yaw", yaw), ("roll", roll))]
    (cx, cy, cz), (sx, sy, sz) = np.cos(np.radians(values)), np.sin(np.radians(values))
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def angles_from_rotation(rotation: np.ndarray) -> tuple[float, float, float]:
    """(pitch, yaw, roll) in degrees, decomposed exactly as insightface's ``matrix2angle`` does."""
    r = check_rotation(rotation)
    sy = math.hypot(r[0, 0], r[1, 0])
    if sy >= 1e-6:
        pitch, yaw, roll = math.atan2(r[2, 1], r[2, 2]), math.atan2(-r[2, 0], sy), math.atan2(r[1, 0], r[0, 0])
    else:   # yaw at +-90 degrees: pitch and roll are one axis, insightface puts it all in pitch
        pitch, yaw, roll = math.atan2(-r[1, 2], r[1, 1]), math.atan2(-r[2, 0], sy), 0.0
    return math.degrees(pitch), math.degrees(yaw), math.degrees(roll)


def check_rotation(rotation: Any) -> np.ndarray:
    """A proper 3x3 rotation matrix as float64, or InvalidInputError."""
    r = float_array(rotation, "A rotation")
    if r.shape != (3, 3) or not np.isfinite(r).all():
        raise InvalidInputError(f"A rotation must be a finite 3x3 matrix, got shape {r.shape}.")
    if np.abs(r @ r.T - np.eye(3)).max() > ROTATION_TOLERANCE or np.linalg.det(r) < 0:
        raise InvalidInputError("The 3x3 matrix is not a rotation (it must be orthonormal with determinant +1).")
    return r


@dataclass(frozen=True)
class HeadPose:
    """Head pose of one face in a photo, fitted as insightface does (landmarks ~ scale * R @ mean + t), with R the
    nearest proper rotation (see ``rotation_from_affine``)."""

    rotation: np.ndarray      # [3, 3] R, orthonormal with determinant +1
    pitch: float              # degrees, R's angles (= insightface's face['pose'][0] for a rigid face)
    yaw: float
    roll: float
    landmarks: np.ndarray     # [68, 3] float32: 1k3d68's landmarks in image pixels (face['landmark_3d_68'])
    canonical: np.ndarray     # [68, 3] float64: the face's own shape, pose and scale removed (mean shape's frame)
    face: DetectedFace


def estimate_head_pose(image_bgr: np.ndarray, analyzer: FaceAnalyzer, landmark_model: Any,
                       face: FaceChoice = "largest", *, image_index: int = 0, image_count: int = 1,
                       role: str = "Pose reference") -> HeadPose:
    """Detect the face (``"largest"`` or an index left to right), run 1k3d68 on it and fit the pose like insightface.

    Raises NoFaceError naming the image when it has no (such) face; ``role`` says what the photo is for (the node or
    option that asked), at the start of that message.
    """
    from insightface.app.common import Face
    from insightface.utils import transform

    choice = parse_face_choice(face)
    check_bgr(image_bgr)
    if getattr(landmark_model, "taskname", None) != LANDMARK_TASK:
        raise WrongModelError(f"The landmark model must be insightface's 1k3d68 ({LANDMARK_TASK}), got "
                              f"{routed_as(landmark_model)}.")
    try:
        detected = analyzer.choose_face(image_bgr, choice, image_index, image_count)
    except NoFaceError as exc:
        raise NoFaceError(f"{role}: {exc}") from None
    record = Face(bbox=detected.bbox, kps=detected.kps, det_score=detected.score)
    points = landmark_model.get(image_bgr, record)
    if not np.isfinite(points).all():
        raise CorruptWeightsError(f"{landmark_model.model_file} returned NaN/inf landmarks: the file may be corrupt.")
    # insightface's own fit (Landmark.get), on the same float32 arrays; for a rigid face the angles equal face['pose'].
    affine = transform.estimate_affine_matrix_3d23d(landmark_model.mean_lmk, points)
    try:
        scale, rotation = rotation_from_affine(affine)
        canonical = canonical_shape(points, affine, rotation, scale)
    except NoFaceError as exc:
        raise degenerate_face_error(role, image_bgr, image_index, image_count, str(exc)) from None
    pitch, yaw, roll = angles_from_rotation(rotation)
    return HeadPose(rotation=rotation, pitch=pitch, yaw=yaw, roll=roll, landmarks=np.asarray(points),
                    canonical=canonical, face=detected)


def degenerate_face_error(role: str, image: np.ndarray, image_index: int, image_count: int,
                          detail: str) -> NoFaceError:
    """The error for a detected face whose landmarks frame no face: the detector took something else (noise, a tiny or
    blurred patch) for one. Worded for the user of ``role`` (a node or an option), naming the image."""
    height, width = image.shape[:2]
    return NoFaceError(
        f"{role}: the face found in image {image_index + 1} of {image_count} ({width}x{height} pixels) is not a usable "
        f"face: {detail.rstrip('.')}. The detector probably took something else for a face; use a photo where the "
        "face is clear, larger and turned towards the camera.")


def rotation_from_affine(affine: np.ndarray) -> tuple[float, np.ndarray]:
    """(scale, R) of the affine fit ``points ~ A @ mean + t``: R is the rotation nearest to A's first two rows.

    insightface's ``P2sRt`` normalises those two rows separately and crosses them, which is a rotation only when the
    landmarks are an exact rigid copy of the mean shape; a real face (an open mouth, landmark noise) gives rows that
    are not quite orthogonal. The nearest proper rotation (the orthogonal polar factor, by SVD) of the normalised rows
    stacked over a zero row keeps insightface's convention (the third row follows from the first two, so the z
    direction of the landmark model does not matter) and equals ``P2sRt``'s R whenever that one is a rotation.
    """
    rows = np.asarray(affine, np.float64)[:2, :3]
    norms = np.linalg.norm(rows, axis=1)
    if rows.shape != (2, 3) or not np.isfinite(rows).all() or not (norms > 1e-12).all():
        raise NoFaceError("The face's 3D landmarks are degenerate (no head pose fits them).")
    u, _, vt = np.linalg.svd(np.vstack([rows / norms[:, None], np.zeros(3)]))
    rotation = u @ np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))]) @ vt
    return float(norms.mean()), rotation


def canonical_shape(points: np.ndarray, affine: np.ndarray, rotation: np.ndarray, scale: float) -> np.ndarray:
    """The landmarks with the fitted pose undone (R^T applied, scale divided out), then moved and scaled to the mean
    shape's centroid and RMS size, so they can replace the mean shape in ``render_face_normals``."""
    centred = np.asarray(points, np.float64) - np.asarray(points, np.float64).mean(0)
    rotation = np.asarray(rotation, np.float64)
    if np.dot(np.asarray(affine, np.float64)[2, :3], rotation[2]) < 0:
        centred[:, 2] *= -1.0     # a model whose z points away from the camera: bring it to the mean shape's
    frontal = centred @ rotation / float(scale)
    reference = mean_shape()
    target = reference - reference.mean(0)
    frontal *= math.sqrt((target ** 2).sum() / max((frontal ** 2).sum(), 1e-30))
    if not np.isfinite(frontal).all():
        raise NoFaceError("The face's 3D landmarks are degenerate (they collapse to a point).")
    return frontal + reference.mean(0)
