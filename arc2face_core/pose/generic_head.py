"""The generic adult head for pose hints without FLAME: built once in code, posed per call (jaw, eyelids).

The head is a closed surface meshed from the signed-distance description of ``head_anatomy`` (published head and
face measurements; no FLAME data), plus two eyeballs seen through the eyelid openings (``head_mesh``). Its jaw and
upper eyelids move by skinning weights (``head_rig``), in the frame it was built in (y up, as FLAME's).

The head is kept in millimetres in insightface's head frame (x to image right, y DOWN, z toward the camera: the frame
of the 68-point landmarks and of typed angles), the faces wound outward once y is flipped up (FLAME's frame, where
the renderer works). Pitch 0 means what it means for insightface's pose: the head is turned about x, once, by the
angle that best lays its landmarks (eye corners, nose, mouth corners, chin) on insightface's 68-point mean face
(``REST_POINTS``; a few degrees, chin up). Building takes a few seconds and is done once per process; posing is a few
array operations on the vertices the jaw or lids move.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidInputError
from .head_rig import head_landmarks, jaw_weights, lid_weights, posed_points, similarity_3d

Y_DOWN = np.diag([1.0, -1.0, 1.0])        # the head's own frame (y up) <-> insightface's (y down)
REST_POINTS = [27, 28, 29, 30, 31, 33, 35, 36, 39, 42, 45, 48, 54, 8]


@dataclass(frozen=True)
class GenericHead:
    """The head mesh in insightface's frame (frontal, upright, mm) and what moves it."""

    vertices: np.ndarray      # [V, 3] float64
    faces: np.ndarray         # [F, 3] int64, wound outward once y is flipped up
    landmarks: np.ndarray     # [68, 3] iBUG landmarks on the head (for FFHQ framing)
    parts: dict               # name -> slice of ``faces``: "head", "right_eye" (image left), "left_eye"
    jaw_weight: np.ndarray    # [V] 0..1
    lid_weight: np.ndarray    # [V] 0..1 (upper lids)
    lid_angle: np.ndarray     # [V] degrees that close the lid at each vertex
    landmark_weights: tuple   # the same three for the landmarks
    rest: np.ndarray          # [3, 3] the head's own frame (y up, as built) -> insightface's: own @ rest.T

    def to_own(self, points: np.ndarray) -> np.ndarray:
        """Points in insightface's frame -> the frame the head was built in (mm, y up), where the rig works."""
        return np.asarray(points, np.float64) @ self.rest

    def posed(self, jaw=None, eyelids=None) -> tuple[np.ndarray, np.ndarray]:
        """(vertices, landmarks) with the jaw turned by ``jaw`` (FLAME's jaw axis-angle, radians, in FLAME's frame:
        ``[0]`` > 0 opens the mouth) and the upper lids closed by ``eyelids`` ((left, right) in FLAME's naming, the
        subject's own; 0 open ... 1 closed). None: as built."""
        jaw = np.zeros(3) if jaw is None else checked_numbers(jaw, 3, "jaw")
        lids = np.zeros(2) if eyelids is None else np.clip(checked_numbers(eyelids, 2, "eyelids"), 0.0, 1.0)
        if not (jaw.any() or lids.any()):
            return self.vertices, self.landmarks
        # FLAME's frame (y up) is the head's own frame: the rig works there; only the moves come back (so what the
        # jaw and lids leave alone stays exactly where it was).
        own_vertices, own_landmarks = self.to_own(self.vertices), self.to_own(self.landmarks)
        moved = posed_points(own_vertices, jaw, lids, self.jaw_weight, self.lid_weight, self.lid_angle)
        moved_landmarks = posed_points(own_landmarks, jaw, lids, *self.landmark_weights)
        return (self.vertices + (moved - own_vertices) @ self.rest.T,
                self.landmarks + (moved_landmarks - own_landmarks) @ self.rest.T)


def checked_numbers(values, count: int, name: str) -> np.ndarray:
    array = np.asarray(values, np.float64).reshape(-1)
    if array.shape != (count,) or not np.isfinite(array).all():
        raise InvalidInputError(f"The generic head's {name} must be {count} finite numbers, got {values!r}.")
    return array.copy()


def build_generic_head() -> GenericHead:
    """The generic head (built on first use, then shared: its arrays are read-only)."""
    return _head()


@functools.lru_cache(maxsize=1)
def _head() -> GenericHead:
    from ..faces.landmarks import mean_shape
    from .head_mesh import eyeballs, mesh_surface

    parts, vertices, faces, start = {}, [], [], 0
    meshes = [("head", mesh_surface())] + list(zip(("right_eye", "left_eye"), eyeballs()))
    for name, (v, f) in meshes:
        parts[name] = slice(sum(len(x) for x in faces), sum(len(x) for x in faces) + len(f))
        vertices.append(v)
        faces.append(f + start)
        start += len(v)
    up = np.vstack(vertices)
    landmarks = head_landmarks(mean_shape())
    jaw, (lid, angle) = jaw_weights(up), lid_weights(up)
    head_faces = parts["head"]
    eye_vertices = np.unique(np.vstack(faces)[slice(head_faces.stop, None)])
    jaw[eye_vertices], lid[eye_vertices] = 0.0, 0.0         # the eyeballs stay where they are
    landmark_weights = (jaw_weights(landmarks), *lid_weights(landmarks))
    rest = _rest_turn(landmarks @ Y_DOWN, mean_shape()) @ Y_DOWN
    head = GenericHead(vertices=up @ rest.T, faces=np.vstack(faces), landmarks=landmarks @ rest.T, parts=parts,
                       jaw_weight=jaw, lid_weight=lid, lid_angle=angle, landmark_weights=landmark_weights, rest=rest)
    for array in (head.vertices, head.faces, head.landmarks, head.jaw_weight, head.lid_weight, head.lid_angle,
                  head.rest, *landmark_weights):
        array.flags.writeable = False
    return head


def _rest_turn(landmarks: np.ndarray, mean_face: np.ndarray) -> np.ndarray:
    """The turn about x (insightface's frame) that best lays the head's landmarks on the mean face's: its pitch only
    (the head is left-right symmetric, so the other two angles are noise)."""
    _, turn, _ = similarity_3d(landmarks[REST_POINTS], mean_face[REST_POINTS])
    angle = np.arctan2(turn[2, 1], turn[1, 1])
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
