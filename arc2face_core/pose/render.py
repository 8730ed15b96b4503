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
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import InvalidInputError
from ..faces.analysis import FaceAnalyzer, FaceChoice
from ..faces.ffhq import ffhq_quad, quad_to_square
from ..faces.head_pose import HeadPose, angles_from_rotation, check_rotation, estimate_head_pose
from .face_surface import build_face_surface, check_landmarks
from .rasterizer import interpolate, rasterize

BACKGROUND = 0.5


# ------------------------------------------------------------------------------------------------------- angles


# ------------------------------------------------------------------------------------------------------ framing


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


# ---------------------------------------------------------------------------------------------- photos → hints


def normal_maps_from_photos(images_bgr: Sequence[np.ndarray], analyzer: FaceAnalyzer, landmark_model: Any,
                            face: FaceChoice = "largest", *, own_shape: bool = False,
                            size: int = 512) -> tuple[np.ndarray, list[HeadPose]]:
    """One hint per photo: the head pose of its face (and, with ``own_shape``, its 68-point shape and expression
    instead of the mean face), framed like FFHQ alignment of that photo. Returns ([B, size, size, 3], poses)."""
    poses = [estimate_head_pose(image, analyzer, landmark_model, face, image_index=i, image_count=len(images_bgr))
             for i, image in enumerate(images_bgr)]
    hints = [render_normal_map(pose.canonical if own_shape else None, pose.rotation, size) for pose in poses]
    return np.stack(hints), poses
