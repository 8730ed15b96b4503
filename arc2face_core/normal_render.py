"""EMOCA-free pose hints for Arc2Face's pose ControlNet: face normal maps rendered from 68 3D landmarks.

The ControlNet was trained on EMOCA renders of the face-only FLAME mesh: normals in camera space (x to image right,
y UP, z toward the camera) coloured ``n * 0.5 + 0.5`` on a background of exactly 0.5, in the FFHQ-aligned 512x512
frame of the photo. Here the face is ``face_surface.build_face_surface`` (mean shape, or a reference's own 68 points),
rotated by R, projected orthographically and framed with FFHQ's ``image_align`` formulas on its projected landmarks.

Rotation convention = insightface's ``face['pose']`` (pitch, yaw, roll in degrees): R = Rz(roll) @ Ry(yaw) @ Rx(pitch)
acting on points in insightface's frame (x right, y DOWN, z toward the camera), the inverse of
``insightface.utils.transform.matrix2angle``. So pitch > 0 turns the nose up, yaw > 0 turns it to image right, roll > 0
turns the face clockwise on screen.

Roll (``roll_in_frame``): FFHQ alignment follows the eyes, so it removes in-plane roll, and FFHQ-aligned training data
has almost none. ``False`` (for a reference PHOTO) frames the rotated face exactly as FFHQ alignment of that photo
would: roll disappears, as in the reference pipeline. ``True`` (for typed ANGLES) frames the face rendered without
roll, then turns the rendered face (and its normals) by roll about the frame centre, so the roll widget does
something; that face is tilted like nothing the ControlNet saw in training.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .errors import CorruptWeightsError, InvalidInputError, NoFaceError, WrongModelError
from .face_surface import build_face_surface, check_landmarks, mean_shape
from .faces import (DetectedFace, FaceAnalyzer, FaceChoice, _check_active_provider, _check_bgr, _check_providers,
                    _ctx_id, _load_onnx, _routed_as, parse_face_choice)
from .rasterizer import interpolate, rasterize
from .weights import LANDMARKS_3D, ModelRoots, find_weight

BACKGROUND = 0.5
LANDMARK_TASK = "landmark_3d_68"
ROTATION_TOLERANCE = 1e-4


# ------------------------------------------------------------------------------------------------------- angles

def rotation_from_angles(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """R = Rz(roll) @ Ry(yaw) @ Rx(pitch), angles in degrees: the inverse of insightface's ``matrix2angle``."""
    values = [pitch, yaw, roll]
    if not all(isinstance(v, (int, float, np.floating, np.integer)) and math.isfinite(v) for v in values):
        raise InvalidInputError(f"pitch, yaw and roll must be finite numbers (degrees), got {values!r}.")
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
    r = np.asarray(rotation, np.float64)
    if r.shape != (3, 3) or not np.isfinite(r).all():
        raise InvalidInputError(f"A rotation must be a finite 3x3 matrix, got shape {r.shape}.")
    if np.abs(r @ r.T - np.eye(3)).max() > ROTATION_TOLERANCE or np.linalg.det(r) < 0:
        raise InvalidInputError("The 3x3 matrix is not a rotation (it must be orthonormal with determinant +1).")
    return r


# ------------------------------------------------------------------------------------------------------ framing

def ffhq_quad(points_2d: np.ndarray) -> np.ndarray:
    """FFHQ ``image_align``'s crop quad from 68 2D landmarks: [top-left, bottom-left, bottom-right, top-right]."""
    lm = np.asarray(points_2d, np.float64)[:, :2]
    eye_left, eye_right = lm[36:42].mean(0), lm[42:48].mean(0)
    eye_avg, eye_to_eye = (eye_left + eye_right) * 0.5, eye_right - eye_left
    mouth_avg = (lm[48] + lm[54]) * 0.5
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def quad_to_square(quad: np.ndarray, size: int) -> np.ndarray:
    """2x3 affine map sending quad[0] to (0, 0), quad[1] to (0, size) and quad[3] to (size, 0) (pixel corners)."""
    edges = np.column_stack([quad[3] - quad[0], quad[1] - quad[0]])
    linear = size * np.linalg.inv(edges)
    return np.column_stack([linear, -linear @ quad[0]])


def _frame(points_2d: np.ndarray, roll: float, size: int, roll_in_frame: bool) -> np.ndarray:
    """The 2x3 map from the rotated face's (x, y) to output pixels (see the module docstring on roll)."""
    if not roll_in_frame:
        return quad_to_square(ffhq_quad(points_2d), size)
    turn = _turn(math.radians(roll))
    unrolled = points_2d @ turn                      # each point turned by -roll: the face as rendered without roll
    frame = _homogeneous(quad_to_square(ffhq_quad(unrolled), size))
    centre = np.array([[1, 0, size / 2], [0, 1, size / 2], [0, 0, 1]])
    spin = np.eye(3)
    spin[:2, :2] = turn
    unspin = np.eye(3)
    unspin[:2, :2] = turn.T
    return (centre @ spin @ np.linalg.inv(centre) @ frame @ unspin)[:2]


def _turn(angle: float) -> np.ndarray:
    """2D rotation in image coordinates (y down): positive angles turn clockwise on screen, like insightface's roll."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]])


def _homogeneous(affine: np.ndarray) -> np.ndarray:
    return np.vstack([affine, [0.0, 0.0, 1.0]])


# ------------------------------------------------------------------------------------------------------- render

@dataclass(frozen=True)
class NormalRender:
    """A rendered pose hint and where the face landed in it."""

    image: np.ndarray          # [size, size, 3] float32 RGB 0..1: n * 0.5 + 0.5, background exactly 0.5
    coverage: np.ndarray       # [size, size] float32: fraction of the pixel covered by the face (0 or 1 without AA)
    landmarks_2d: np.ndarray   # [68, 2] projected landmarks in output pixels (pixel (r, c) centre = (c+.5, r+.5))
    transform: np.ndarray      # [2, 3] rotated face (x, y) -> output pixels (a similarity)


def render_face_normals(landmarks: np.ndarray | None = None, rotation: np.ndarray | None = None, size: int = 512, *,
                        roll_in_frame: bool = False, supersample: int = 1) -> NormalRender:
    """Render the face normal hint.

    ``landmarks``: a frontal, upright 68-point 3D shape in insightface's frame (e.g. ``HeadPose.canonical``), or
    None for insightface's mean shape. ``rotation``: R (None = frontal). ``supersample``: render at ``size * k`` and
    average k x k blocks (anti-aliased edges); pixels no sample of the face reaches stay exactly 0.5.
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 16 <= size <= 4096:
        raise InvalidInputError(f"size must be an integer between 16 and 4096, got {size!r}.")
    if isinstance(supersample, bool) or not isinstance(supersample, (int, np.integer)) or not 1 <= supersample <= 8:
        raise InvalidInputError(f"supersample must be an integer from 1 to 8, got {supersample!r}.")
    rotation = np.eye(3) if rotation is None else check_rotation(rotation)
    surface = build_face_surface(None if landmarks is None else check_landmarks(landmarks))
    points = surface.landmarks @ rotation.T
    frame = _frame(points[:, :2], angles_from_rotation(rotation)[2], size, roll_in_frame)
    # The frame is a similarity: its in-plane turn applies to the normals too, its scale to depth.
    scale = math.sqrt(abs(np.linalg.det(frame[:, :2])))
    camera = np.eye(3)
    camera[:2, :2] = frame[:, :2] / scale
    camera = camera @ rotation
    vertices = surface.vertices @ rotation.T
    screen = np.column_stack([(vertices[:, :2] @ frame[:, :2].T + frame[:, 2]) * supersample, vertices[:, 2] * scale])
    big = size * supersample
    fragments = rasterize(screen, surface.triangles, big, big, cull_back_faces=True)
    normals = interpolate(fragments, surface.triangles, surface.normals @ camera.T)
    covered = fragments.covered
    normals[covered] /= np.linalg.norm(normals[covered], axis=1, keepdims=True)
    normals[..., 1] *= -1.0                      # insightface's y points down, the hint's y points up
    colour = np.where(covered[..., None], normals * 0.5 + 0.5, BACKGROUND)
    coverage = covered.astype(np.float64)
    if supersample > 1:
        colour = colour.reshape(size, supersample, size, supersample, 3).mean(axis=(1, 3))
        coverage = coverage.reshape(size, supersample, size, supersample).mean(axis=(1, 3))
    return NormalRender(image=np.clip(colour, 0.0, 1.0).astype(np.float32), coverage=coverage.astype(np.float32),
                        landmarks_2d=points[:, :2] @ frame[:, :2].T + frame[:, 2], transform=frame)


def render_normal_map(landmarks: np.ndarray | None = None, rotation: np.ndarray | None = None, size: int = 512, *,
                      roll_in_frame: bool = False, supersample: int = 1) -> np.ndarray:
    """The hint image alone: float32 [size, size, 3] RGB 0..1 (see ``render_face_normals``)."""
    return render_face_normals(landmarks, rotation, size, roll_in_frame=roll_in_frame,
                               supersample=supersample).image


# ----------------------------------------------------------------------------------------------- pose from photo

@dataclass(frozen=True)
class HeadPose:
    """Head pose of one face in a photo, estimated as insightface does (landmarks ~ scale * R @ mean + t)."""

    rotation: np.ndarray      # [3, 3] R
    pitch: float              # degrees, = insightface's face['pose'][0]
    yaw: float
    roll: float
    landmarks: np.ndarray     # [68, 3] float32: 1k3d68's landmarks in image pixels (face['landmark_3d_68'])
    canonical: np.ndarray     # [68, 3] float64: the face's own shape, pose and scale removed (mean shape's frame)
    face: DetectedFace


def load_landmark_model(roots: ModelRoots, providers: Sequence[Any], *, provider_options: Any = None,
                        strict_providers: bool = False) -> Any:
    """Find and load antelopev2's ``1k3d68.onnx`` (insightface's ``Landmark``); never downloads anything."""
    _check_providers(providers)
    path = find_weight(LANDMARKS_3D, roots.insightface)
    model = _load_onnx(path, providers, provider_options)
    if getattr(model, "taskname", None) != LANDMARK_TASK:
        raise WrongModelError(
            f"{path} is not insightface's 3D face landmark model: insightface reads it as {_routed_as(model)}. It "
            f"must be antelopev2's 1k3d68.onnx (68 3D landmarks); {LANDMARKS_3D.where_to_get()}."
        )
    _check_active_provider(model, path, providers, strict_providers)
    model.prepare(_ctx_id(providers))
    return model


def estimate_head_pose(image_bgr: np.ndarray, analyzer: FaceAnalyzer, landmark_model: Any,
                       face: FaceChoice = "largest", *, image_index: int = 0, image_count: int = 1) -> HeadPose:
    """Detect the face (``"largest"`` or an index left to right), run 1k3d68 on it and fit the pose like insightface.

    Raises NoFaceError naming the image when it has no (such) face.
    """
    from insightface.app.common import Face
    from insightface.utils import transform

    choice = parse_face_choice(face)
    _check_bgr(image_bgr)
    if getattr(landmark_model, "taskname", None) != LANDMARK_TASK:
        raise WrongModelError(f"The landmark model must be insightface's 1k3d68 ({LANDMARK_TASK}), got "
                              f"{_routed_as(landmark_model)}.")
    try:
        detected = analyzer._choose(image_bgr, choice, image_index, image_count)   # faces.py's face choice
    except NoFaceError as exc:
        raise NoFaceError(f"Pose reference: {exc}") from None
    record = Face(bbox=detected.bbox, kps=detected.kps, det_score=detected.score)
    points = landmark_model.get(image_bgr, record)
    if not np.isfinite(points).all():
        raise CorruptWeightsError(f"{landmark_model.model_file} returned NaN/inf landmarks: the file may be corrupt.")
    # insightface's own steps (Landmark.get), on the same float32 arrays, so the angles equal face['pose'].
    affine = transform.estimate_affine_matrix_3d23d(landmark_model.mean_lmk, points)
    scale, rotation, _ = transform.P2sRt(affine)
    pitch, yaw, roll = transform.matrix2angle(rotation)
    return HeadPose(rotation=np.asarray(rotation, np.float64), pitch=float(pitch), yaw=float(yaw), roll=float(roll),
                    landmarks=np.asarray(points), canonical=canonical_shape(points, affine, rotation, scale),
                    face=detected)


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


# ---------------------------------------------------------------------------------------------- photos → hints

# 1k3d68 sessions loaded on demand for an analyzer, freed with it (the ARCFACE loader loads only what embedding needs).
_LANDMARK_MODELS: "weakref.WeakKeyDictionary[FaceAnalyzer, Any]" = weakref.WeakKeyDictionary()


def landmark_model_for(analyzer: FaceAnalyzer, roots: ModelRoots) -> Any:
    """The 1k3d68 model for ``analyzer``'s providers, loaded the first time a pose is asked of it."""
    if analyzer not in _LANDMARK_MODELS:
        _LANDMARK_MODELS[analyzer] = load_landmark_model(roots, analyzer.providers)
    return _LANDMARK_MODELS[analyzer]


def normal_maps_from_photos(images_bgr: Sequence[np.ndarray], analyzer: FaceAnalyzer, landmark_model: Any,
                            face: FaceChoice = "largest", *, own_shape: bool = False,
                            size: int = 512) -> tuple[np.ndarray, list[HeadPose]]:
    """One hint per photo: the head pose of its face (and, with ``own_shape``, its 68-point shape and expression
    instead of the mean face), framed like FFHQ alignment of that photo. Returns ([B, size, size, 3], poses)."""
    poses = [estimate_head_pose(image, analyzer, landmark_model, face, image_index=i, image_count=len(images_bgr))
             for i, image in enumerate(images_bgr)]
    hints = [render_normal_map(pose.canonical if own_shape else None, pose.rotation, size) for pose in poses]
    return np.stack(hints), poses
