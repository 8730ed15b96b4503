"""Where a posed head lands in the 512 hint: EMOCA's camera for a photo, FFHQ alignment's framing without one.

Frames. FLAME's world (and the hint's normals): x to image right, y UP, z toward the viewer. Image coordinates: x
right, y DOWN, in pixels of the output with pixel corners at integers (pixel (row i, col j) is sampled at
(j + 0.5, i + 0.5)). insightface's head frame (typed angles, 68-point shapes): x right, y down, z toward the camera;
a rotation R there is ``FLIP_Y @ R @ FLIP_Y`` in FLAME's world.

With a photo, the reference's decode: SMIRK's orthographic camera ``[s, tx, ty]`` gives the 224
crop's NDC ``x_c = s(X + tx)``, ``y_c = -s(Y + ty)``, ``z_c = -sZ``; crop pixels are ``(x_c/2 + 1/2)·224`` (the
reference multiplies by 224 although its crop maps the box onto 0..223: copied as is); the crop's inverse similarity
``T⁻¹`` takes them to the FFHQ-aligned image's pixels ``(u, v)``, which are this module's image coordinates because
pytorch3d samples pixel (i, j) at NDC ``((2j+1)/W - 1, (2i+1)/H - 1)`` of the flipped vertices. The depth kept by the
z-buffer is the largest ``sZ``. Normals are not turned by ``T`` (the reference renders world normals). The facts, with
the reference's lines: docs/pose_hints.md, 'Projection'; the pixel convention: docs/pose_hints.md, 'Rasterisation'.

Without a photo, the head is placed as FFHQ alignment would place a photo of it: ``image_align``'s quad from the
projected eyes and mouth, mapped onto the output square (the eyes and mouth land where ``image_align`` puts them;
for a frontal face the eyes are ``size/4`` apart on the row ``0.4·size`` or so, depending on the face's proportions).
The in-plane turn of that map is applied to the head in 3D, so the normals turn with the picture. Typed roll
(``roll_in_frame``) is kept visible: the head is framed as without roll, then the frame is turned by the roll about
its centre (FFHQ alignment would remove roll; its training faces are upright).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidInputError
from ..faces.ffhq import ffhq_quad, quad_to_square
from ..faces.head_pose import angles_from_rotation, check_rotation

CROP_SIZE = 224             # SMIRK's / EMOCA's crop: x_c in [-1, 1] -> 0..224 (sic, see the module docstring)
FLIP_Y = np.diag([1.0, -1.0, 1.0])


@dataclass(frozen=True)
class Placement:
    """A head in the output: view-frame vertices (y up; their normals are the hint's), pixels and depth."""

    view_vertices: np.ndarray   # [V, 3] the mesh as the normals are taken (FLAME's world frame, maybe turned in-plane)
    pixels: np.ndarray          # [V, 2] image coordinates of each vertex
    depth: np.ndarray           # [V] larger = nearer the viewer


# --------------------------------------------------------------------------------------------- rotations

def flame_rotation_from_insightface(rotation: np.ndarray) -> np.ndarray:
    """R in FLAME's world (y up) for an insightface-frame R (y down)."""
    return FLIP_Y @ check_rotation(rotation) @ FLIP_Y


def axis_angle_from_rotation(rotation: np.ndarray) -> np.ndarray:
    """FLAME's axis-angle (radians) of a rotation matrix."""
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(check_rotation(rotation)).as_rotvec()


def rotation_from_axis_angle(axis_angle: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_rotvec(np.asarray(axis_angle, np.float64)).as_matrix()


def roll_of_flame_rotation(rotation: np.ndarray) -> float:
    """insightface's roll (degrees) of a FLAME-frame rotation."""
    return angles_from_rotation(FLIP_Y @ rotation @ FLIP_Y)[2]


# ------------------------------------------------------------------------------------------ with a photo

def check_camera(camera: np.ndarray, crop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    camera, crop = np.asarray(camera, np.float64), np.asarray(crop, np.float64)
    if camera.shape != (3,) or crop.shape != (3, 3) or not (np.isfinite(camera).all() and np.isfinite(crop).all()):
        raise InvalidInputError(f"A camera is [s, tx, ty] with a 3x3 crop transform, got {camera.shape} and "
                                f"{crop.shape} (or NaN/inf)")
    if camera[0] <= 0:
        raise InvalidInputError(f"The camera scale s = {camera[0]:.4g} is not positive: the head would be mirrored or "
                                "vanish. SMIRK's scale is positive for every face it sees.")
    if abs(np.linalg.det(crop[:2, :2])) < 1e-12 or np.abs(crop[2] - [0, 0, 1]).max() > 1e-9:
        raise InvalidInputError("The crop transform is not an invertible 2D similarity (last row must be 0 0 1).")
    return camera, crop


def emoca_placement(vertices: np.ndarray, camera: np.ndarray, crop: np.ndarray) -> Placement:
    """The reference's projection of FLAME world vertices [V, 3] into the aligned image (docs/pose_hints.md,
    'Projection')."""
    camera, crop = check_camera(camera, crop)
    s, tx, ty = camera
    x_c = s * (vertices[:, 0] + tx)
    y_c = -s * (vertices[:, 1] + ty)
    crop_pixels = np.column_stack([(x_c / 2 + 0.5) * CROP_SIZE, (y_c / 2 + 0.5) * CROP_SIZE, np.ones(len(x_c))])
    aligned = crop_pixels @ np.linalg.inv(crop).T
    return Placement(view_vertices=vertices, pixels=aligned[:, :2], depth=s * vertices[:, 2])


# --------------------------------------------------------------------------------------- without a photo

def framing_landmarks(eye_left: np.ndarray, eye_right: np.ndarray, mouth: np.ndarray) -> np.ndarray:
    """A [68, 2] array with only what ``image_align`` reads filled: eyes (36..47, image left first) and the mouth
    corners (48, 54; both at the mouth centre, whose midpoint is all it uses)."""
    points = np.zeros((68, 2))
    points[36:42], points[42:48], points[48], points[54] = eye_left[:2], eye_right[:2], mouth[:2], mouth[:2]
    return points


def ffhq_frame(landmarks_2d: np.ndarray, size: int, roll: float = 0.0, roll_in_frame: bool = False) -> np.ndarray:
    """The 2x3 map from image coordinates of the posed head to the output: FFHQ's quad onto the square. With
    ``roll_in_frame``, the head's ``roll`` (degrees, clockwise on screen) is kept (see the module docstring)."""
    if not roll_in_frame:
        return _checked(quad_to_square(ffhq_quad(landmarks_2d), size))
    turn = _turn(math.radians(roll))
    frame = np.vstack([_checked(quad_to_square(ffhq_quad(landmarks_2d @ turn), size)), [0.0, 0.0, 1.0]])
    centre = np.array([[1, 0, size / 2], [0, 1, size / 2], [0, 0, 1.0]])
    spin, unspin = np.eye(3), np.eye(3)
    spin[:2, :2], unspin[:2, :2] = turn, turn.T
    return (centre @ spin @ np.linalg.inv(centre) @ frame @ unspin)[:2]


def _checked(frame: np.ndarray) -> np.ndarray:
    if not np.isfinite(frame).all():
        raise InvalidInputError("The eyes and mouth of the head coincide on screen, so it cannot be framed.")
    return frame


def _turn(angle: float) -> np.ndarray:
    """2D rotation in image coordinates (y down): positive angles turn clockwise on screen, like insightface's roll."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]])


def framed_placement(vertices: np.ndarray, frame: np.ndarray) -> Placement:
    """FLAME-frame vertices [V, 3] placed by an image-coordinate similarity ``frame`` (2x3): its turn is applied to the
    head in 3D (so the normals turn too), its scale and shift make the pixels; depth scales with it."""
    linear = frame[:, :2]
    scale = math.sqrt(abs(np.linalg.det(linear)))
    if scale < 1e-12 or not np.allclose(linear @ linear.T, scale ** 2 * np.eye(2), atol=1e-9 * scale ** 2):
        raise InvalidInputError("The framing is not a similarity (a turn, a scale and a shift).")
    turn_image = linear / scale                       # acts on (x, y down)
    turn_view = np.eye(3)
    turn_view[:2, :2] = FLIP_Y[:2, :2] @ turn_image @ FLIP_Y[:2, :2]
    view = vertices @ turn_view.T
    pixels = np.column_stack([view[:, 0], -view[:, 1]]) * scale + frame[:, 2]
    return Placement(view_vertices=view, pixels=pixels, depth=view[:, 2] * scale)


def image_coordinates(points: np.ndarray) -> np.ndarray:
    """Orthographic image coordinates (x right, y down) of FLAME-frame points."""
    return np.column_stack([points[..., 0], -points[..., 1]])
