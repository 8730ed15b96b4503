"""Pose hints from FLAME: the reference's recipe on FLAME parameters (docs/pose_hints.md, 'Rebuilding the hint with
SMIRK and FLAME').

With a photo (``params.crop`` set: SMIRK ran on the FFHQ-aligned reference) the head is projected by SMIRK's camera
and the crop's inverse, exactly as the reference's EMOCA decode does (``camera.emoca_placement``). Without one
(typed angles) it is placed as FFHQ alignment would place a photo of it (``camera.ffhq_frame``): from its eyes and
mouth. FLAME has no landmarks without DECA's (licence-gated) embedding, so the eyes are FLAME's own eye joints (the
eyeball centres, found by the file's ``J_regressor``) brought forward by ``EYE_LANDMARK_DEPTH`` to where the iBUG eye
contour points sit, and the mouth is placed from them with insightface's mean 68-point face (the mouth-corner
midpoint's offset from the eyes, in units of the eye distance). Only ``image_align``'s quad uses them, and it depends
mostly on the eye distance, so this error is small next to the spread of real faces.

Both return uint8 [N, size, size, 3] hints (``emoca_render``): the whole FLAME mesh, eyeballs included.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InvalidInputError
from ..faces.landmarks import mean_shape
from .camera import (
    FLIP_Y,
    emoca_placement,
    ffhq_frame,
    framed_placement,
    framing_landmarks,
    image_coordinates,
    roll_of_flame_rotation,
    rotation_from_axis_angle,
)
from .emoca_render import HINT_SIZE, render_normals
from .face_parameters import N_SHAPE, FaceParameters
from .flame import FlameModel

ALIGNED_SIZE = 512           # the FFHQ-aligned reference SMIRK's crop is taken from (the demo aligns to 512)
EYE_LANDMARK_DEPTH = 0.1     # eyeball centre -> mean of the six iBUG eye points, in eye distances (~6 mm forward)
LEFT_EYE_JOINT, RIGHT_EYE_JOINT = 3, 4


def flame_normal_maps(flame: FlameModel, params: FaceParameters, size: int = HINT_SIZE) -> np.ndarray:
    """One hint per row of ``params``: uint8 [N, size, size, 3], background 127."""
    if not isinstance(params, FaceParameters):
        raise InvalidInputError(f"Expected FLAME parameters (FaceParameters), got {type(params).__name__}")
    vertices, _ = flame.vertices_of(params)
    vertices = vertices.double().cpu().numpy()
    faces = flame.faces.cpu().numpy()
    if params.crop is not None:
        placements = [_photo_placement(v, cam, crop, size) for v, cam, crop in
                      zip(vertices, params.camera.double().numpy(), params.crop.double().numpy())]
    else:
        placements = [framed_placement(v, frame) for v, frame in zip(vertices, ffhq_frames(flame, params, size))]
    hints = []
    for index, placement in enumerate(placements):
        hint = render_normals(placement, faces, size)
        if not (hint != 127).any():
            raise InvalidInputError(f"Face {index}: the FLAME head lies entirely outside the {size}x{size} hint "
                                    "(check the camera of the FLAME parameters).")
        hints.append(hint)
    return np.stack(hints)


def _photo_placement(vertices: np.ndarray, camera: np.ndarray, crop: np.ndarray, size: int):
    placement = emoca_placement(vertices, camera, crop)
    if size == ALIGNED_SIZE:
        return placement
    ratio = size / ALIGNED_SIZE
    return type(placement)(placement.view_vertices, placement.pixels * ratio, placement.depth * ratio)


def framing_points(flame: FlameModel, params: FaceParameters) -> np.ndarray:
    """[N, 3, 3] posed eye (image left, image right) and mouth points in FLAME's world frame (see the module)."""
    with torch.no_grad():
        joints = flame.rest_joints(params.shape, params.expression).double().cpu().numpy()   # [N, 5, 3]
    lm = mean_shape()
    mean_left, mean_right = lm[36:42].mean(0), lm[42:48].mean(0)
    mouth_offset = ((lm[48] + lm[54]) / 2 - (mean_left + mean_right) / 2) / np.linalg.norm(mean_right - mean_left)
    mouth_offset = mouth_offset @ FLIP_Y                        # insightface's y down -> FLAME's y up
    out = []
    for rest, pose in zip(joints, params.pose.double().numpy()):
        eyes = rest[[LEFT_EYE_JOINT, RIGHT_EYE_JOINT]]
        eyes = eyes[np.argsort(eyes[:, 0])]                     # image left (smaller x) first
        distance = float(np.linalg.norm(eyes[1] - eyes[0]))
        if distance < 1e-9:
            raise InvalidInputError("FLAME's two eye joints coincide: the head cannot be framed.")
        eyes = eyes + [0.0, 0.0, EYE_LANDMARK_DEPTH * distance]
        mouth = eyes.mean(0) + mouth_offset * distance
        rotation = rotation_from_axis_angle(pose)
        points = np.vstack([eyes, mouth])
        out.append((points - rest[0]) @ rotation.T + rest[0])   # rigid with the root joint (neck pose is 0)
    return np.stack(out)


def ffhq_frames(flame: FlameModel, params: FaceParameters, size: int) -> list[np.ndarray]:
    """Per face, the 2x3 map from image coordinates of the posed head to the output (typed roll kept visible)."""
    frames = []
    for points, pose in zip(framing_points(flame, params), params.pose.double().numpy()):
        image = image_coordinates(points)
        roll = roll_of_flame_rotation(rotation_from_axis_angle(pose))
        frames.append(ffhq_frame(framing_landmarks(image[0], image[1], image[2]), size, roll, roll_in_frame=True))
    return frames


def typed_face_parameters(pitch: float, yaw: float, roll: float, expression=None) -> FaceParameters:
    """FLAME parameters for a typed head pose (insightface's angles, degrees) and an optional [N, 55] expression
    (SMIRK's order: 50 expression, 2 eyelids, 3 jaw); the mean shape; no photo (``crop`` None)."""
    from ..expression.vectors import (
        EXPRESSION_DIM,
        EYELID_SLICE,
        JAW_SLICE,
        N_EXPRESSION,
        check_expression_ranges,
        validate_expression,
    )
    from ..faces.head_pose import rotation_from_angles
    from .camera import axis_angle_from_rotation, flame_rotation_from_insightface

    vector = torch.zeros(1, EXPRESSION_DIM) if expression is None else validate_expression(expression)
    check_expression_ranges(vector)   # what the Expression Adapter takes: SMIRK's ranges
    count = vector.shape[0]
    pose = axis_angle_from_rotation(flame_rotation_from_insightface(rotation_from_angles(pitch, yaw, roll)))
    return FaceParameters(shape=torch.zeros(count, N_SHAPE), expression=vector[:, :N_EXPRESSION].clone(),
                          eyelids=vector[:, EYELID_SLICE].clone(), jaw=vector[:, JAW_SLICE].clone(),
                          pose=torch.tensor(pose, dtype=torch.float32).expand(count, 3).clone(),
                          camera=torch.zeros(count, 3))
