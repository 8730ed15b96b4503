"""Pose hints without FLAME: the generic head of ``generic_head``, rendered as EMOCA renders FLAME.

The head (built once from published adult head and face measurements; eyeballs behind eyelid openings, a jaw that
opens, upper lids that close) is posed (jaw, eyelids), rotated by R, framed as FFHQ alignment frames a photo (its
eyes' and mouth corners' landmarks give ``image_align``'s quad, see ``camera``) and drawn by ``emoca_render``: the
whole mesh, z-buffered, barycentric unit vertex normals (not renormalised) times coverage,
``uint8(clamp(n*0.5+0.5)*255)`` on 127 grey. With a reference photo's own 68 landmarks (``own_shape``) the head is
first shaped like that face: its jaw opening, eyelids and the rest of its shape.

Rotation convention = insightface's ``face['pose']`` (pitch, yaw, roll in degrees): R = Rz(roll) @ Ry(yaw) @ Rx(pitch)
acting on points in insightface's frame (x right, y DOWN, z toward the camera). So pitch > 0 turns the nose up,
yaw > 0 turns it to image right, roll > 0 turns the face clockwise on screen. ``roll_in_frame``: False (a photo)
frames like FFHQ alignment, which removes roll; True (typed angles) keeps the typed roll visible (``camera``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import InvalidInputError
from ..faces.analysis import FaceAnalyzer, FaceChoice
from ..faces.head_pose import HeadPose, angles_from_rotation, check_rotation, estimate_head_pose
from ..validation import MAX_PIXELS_SIDE, positive_int
from .camera import FLIP_Y, ffhq_frame, framed_placement
from .emoca_render import BACKGROUND_VALUE, HINT_SIZE, render_normals
from .face_parameters import FaceParameters
from .generic_head import build_generic_head


@dataclass(frozen=True)
class NormalRender:
    """A rendered pose hint and where the face landed in it."""

    image: np.ndarray          # [size, size, 3] uint8 RGB: n*0.5+0.5 truncated, background exactly 127
    landmarks_2d: np.ndarray   # [68, 2] projected landmarks in output pixels (pixel (r, c) centre = (c+.5, r+.5))
    transform: np.ndarray      # [2, 3] rotated head's image coordinates (x, y down) -> output pixels (a similarity)

    @property
    def covered(self) -> np.ndarray:
        """[size, size] bool: pixels the head covers."""
        return (self.image != BACKGROUND_VALUE).any(-1)


def render_generic_head(landmarks: np.ndarray | None = None, rotation: np.ndarray | None = None,
                        size: int = HINT_SIZE, *, roll_in_frame: bool = False, jaw=None,
                        eyelids=None) -> NormalRender:
    """The generic-head hint. ``landmarks``: a frontal, upright 68-point 3D shape in insightface's frame (e.g.
    ``HeadPose.canonical``) to shape the head like, or None for the generic head as built. ``rotation``: R in
    insightface's frame (None = frontal). ``jaw`` (FLAME's jaw axis-angle, radians) and ``eyelids`` ((left, right),
    0 open ... 1 closed): the expression's, added to what ``landmarks`` show."""
    size = positive_int(size, "size", upper=MAX_PIXELS_SIDE)
    rotation = np.eye(3) if rotation is None else check_rotation(rotation)
    head = build_generic_head()
    if landmarks is None:
        # Framed by the head at rest, as the FLAME path frames typed angles: an expression moves the face, not the
        # frame.
        vertices, points = head.posed(jaw, eyelids)
        framing = head.landmarks
    else:
        from .own_shape import shaped_like

        vertices, points = shaped_like(head, landmarks, jaw, eyelids)
        framing = points                    # the photo's face, as its FFHQ alignment frames it
    posed = vertices @ rotation.T
    points = points @ rotation.T
    frame = ffhq_frame((framing @ rotation.T)[:, :2], size, angles_from_rotation(rotation)[2], roll_in_frame)
    placement = framed_placement(posed @ FLIP_Y, frame)      # FLAME's frame (y up): the hint's normals
    image = render_normals(placement, head.faces, size)
    return NormalRender(image=image, landmarks_2d=points[:, :2] @ frame[:, :2].T + frame[:, 2], transform=frame)


def render_normal_map(landmarks: np.ndarray | None = None, rotation: np.ndarray | None = None,
                      size: int = HINT_SIZE, *, roll_in_frame: bool = False, jaw=None, eyelids=None) -> np.ndarray:
    """The generic-head hint alone: float32 [size, size, 3] RGB in 0..1 (uint8 / 255, so the background is 127/255)."""
    return render_generic_head(landmarks, rotation, size, roll_in_frame=roll_in_frame, jaw=jaw,
                               eyelids=eyelids).image.astype(np.float32) / 255


def generic_normal_maps(params: FaceParameters, size: int = HINT_SIZE) -> np.ndarray:
    """One generic-head hint per row of FLAME parameters: the head pose, the jaw and the eyelids (the generic head has
    no identity shape and no other expression). Without a photo (``crop`` None) a typed roll stays visible.
    uint8 [N, size, size, 3]."""
    from .camera import rotation_from_axis_angle

    if not isinstance(params, FaceParameters):
        raise InvalidInputError(f"Expected FLAME parameters (FaceParameters), got {type(params).__name__}")
    roll_in_frame = params.crop is None
    hints = []
    for pose, jaw, eyelids in zip(params.pose.double().numpy(), params.jaw.double().numpy(),
                                  params.eyelids.double().numpy()):
        rotation = FLIP_Y @ rotation_from_axis_angle(pose) @ FLIP_Y     # FLAME's frame -> insightface's
        hints.append(render_generic_head(None, rotation, size, roll_in_frame=roll_in_frame, jaw=jaw,
                                         eyelids=eyelids).image)
    return np.stack(hints)


def typed_normal_maps(pitch: float, yaw: float, roll: float, expression=None, size: int = HINT_SIZE) -> np.ndarray:
    """Normal Map from Angles without FLAME: the generic head at a typed pose (insightface's angles, degrees; the
    typed roll kept visible), one hint per row of an optional [N, 55] expression (its jaw and eyelids). uint8
    [N, size, size, 3]; one hint without an expression."""
    from ..expression.vectors import EYELID_SLICE, JAW_SLICE, validate_expression
    from ..faces.head_pose import rotation_from_angles

    rotation = rotation_from_angles(pitch, yaw, roll)
    if expression is None:
        return render_generic_head(None, rotation, size, roll_in_frame=True).image[None]
    rows = validate_expression(expression).double().numpy()
    return np.stack([render_generic_head(None, rotation, size, roll_in_frame=True, jaw=row[JAW_SLICE],
                                         eyelids=row[EYELID_SLICE]).image for row in rows])


def normal_maps_from_photos(images_bgr: Sequence[np.ndarray], analyzer: FaceAnalyzer, landmark_model: Any,
                            face: FaceChoice = "largest", *, own_shape: bool = False,
                            size: int = HINT_SIZE) -> tuple[np.ndarray, list[HeadPose]]:
    """One generic-head hint per photo: the head pose of its face (and, with ``own_shape``, the head shaped like its
    68 landmarks: its jaw opening, eyelids and face shape), framed like FFHQ alignment of that photo. Returns
    (float32 [B, size, size, 3] in 0..1, poses)."""
    if not len(images_bgr):
        raise InvalidInputError("No photos were given.")
    poses = [estimate_head_pose(image, analyzer, landmark_model, face, image_index=i, image_count=len(images_bgr))
             for i, image in enumerate(images_bgr)]
    hints = [render_normal_map(pose.canonical if own_shape else None, pose.rotation, size) for pose in poses]
    return np.stack(hints), poses
