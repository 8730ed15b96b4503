"""The generic head shaped like a reference photo's face: its 68 landmarks' jaw opening, eyelids and shape.

The photo's landmarks come frontal and upright (``HeadPose.canonical``: pose and scale removed, in insightface's mean
face's units). What makes that face differ from insightface's mean face is carried over to the generic head:

1. ``Δ``: the photo's points minus the mean face's, after a similarity that lays the photo's eye corners and nose on
   the mean's (so only the shape differs), scaled and turned into the head's millimetres by the similarity that lays
   the mean face's eye corners and nose on the head's own landmarks;
2. the mouth: how much further apart the lips are than the mean face's (upper against lower lip points, outer and
   inner contour, averaged) opens the jaw by the angle that moves the lower lip that far down (its lever from the
   jaw joint), at most ``MAX_JAW``;
3. the eyes: how much lower each eye's opening (its upper against its lower lid points) is than the mean face's
   closes that upper lid by the same fraction;
4. the rest of ``Δ`` (what the jaw and lids did not already do) bends the head smoothly: a 3D polyharmonic spline
   (kernel ``r``, with an affine part) through the landmarks' remaining displacements, held at zero on points round
   the back of the head and the neck, so the skull and neck keep their shape.

A face shaped exactly like the mean face gives the generic head unchanged.
"""

from __future__ import annotations

import numpy as np

from ..faces.landmarks import check_landmarks, mean_shape
from .generic_head import GenericHead, checked_numbers
from .head_rig import JAW_PIVOT, similarity_3d

STABLE = [27, 28, 29, 30, 31, 33, 35, 36, 39, 42, 45]      # nose and eye corners: they carry the similarities
LIP_PAIRS = ((51, 57), (50, 58), (52, 56), (62, 66), (61, 67), (63, 65))   # upper lip point, the one below it
EYE_PAIRS = {"right": ((37, 41), (38, 40)), "left": ((43, 47), (44, 46))}   # FLAME's naming: the subject's own eyes
MAX_JAW = 0.6                # radians: a human jaw rarely opens further (``expression.vectors``)
ANCHOR_COUNT = 48            # points held still round the back of the head and the neck
SPLINE_SMOOTHING = 1e-3


def shaped_like(head: GenericHead, landmarks: np.ndarray, jaw=None, eyelids=None) -> tuple[np.ndarray, np.ndarray]:
    """(vertices, landmarks) of ``head`` shaped like the face of ``landmarks`` (frontal, upright, insightface's frame),
    with the expression's ``jaw`` and ``eyelids`` added."""
    photo = check_landmarks(landmarks)
    mean = mean_shape()
    scale, turn, shift = similarity_3d(photo[STABLE], mean[STABLE])
    photo = photo @ (scale * turn).T + shift                      # laid on the mean face
    to_head_scale, to_head_turn, _ = similarity_3d(mean[STABLE], head.landmarks[STABLE])
    delta = (photo - mean) @ (to_head_scale * to_head_turn).T     # mm, insightface's frame
    jaw_total = np.zeros(3) if jaw is None else checked_numbers(jaw, 3, "jaw")
    lids_total = np.zeros(2) if eyelids is None else checked_numbers(eyelids, 2, "eyelids")
    jaw_total[0] += _jaw_opening(head, delta)
    lids_total = np.clip(lids_total + _lid_closing(head, delta), 0.0, 1.0)
    vertices, posed_landmarks = head.posed(jaw_total, lids_total)
    residual = head.landmarks + delta - posed_landmarks
    if np.abs(residual).max() < 1e-9:
        return vertices, posed_landmarks
    anchors = _anchors(head)
    centres = np.vstack([posed_landmarks, anchors])
    values = np.vstack([residual, np.zeros_like(anchors)])
    spline = _fit_spline(centres, values)
    return vertices + _spline_at(spline, centres, vertices), posed_landmarks + residual


def _jaw_opening(head: GenericHead, delta: np.ndarray) -> float:
    """Radians: how much further apart the lips are (y down: the lower lip's extra drop) over the lower lip's lever."""
    gap = float(np.mean([delta[lower, 1] - delta[upper, 1] for upper, lower in LIP_PAIRS]))
    if gap <= 0:
        return 0.0
    lip = head.to_own(head.landmarks[66:67])[0]                    # the head's own frame (y up)
    lever = float(np.hypot(lip[1] - JAW_PIVOT[1], lip[2] - JAW_PIVOT[2]))
    return float(min(np.arctan2(gap, lever), MAX_JAW))


def _lid_closing(head: GenericHead, delta: np.ndarray) -> np.ndarray:
    """(left, right) in 0..1: how much of each eye's opening the photo's lids have closed."""
    out = []
    for side in ("left", "right"):
        opening = np.mean([head.landmarks[low, 1] - head.landmarks[up, 1] for up, low in EYE_PAIRS[side]])
        change = np.mean([delta[low, 1] - delta[up, 1] for up, low in EYE_PAIRS[side]])
        out.append(np.clip(-change / max(opening, 1e-9), 0.0, 1.0))
    return np.array(out)


def _anchors(head: GenericHead) -> np.ndarray:
    """Points on the back half of the head, over the crown and down the neck (insightface's frame: z toward the
    camera, y down)."""
    v = head.vertices[np.unique(head.faces[head.parts["head"]])]
    back = v[(v[:, 2] < -60.0) | (v[:, 1] > 130.0) | (v[:, 1] < -55.0)]
    order = np.lexsort((back[:, 2], back[:, 1], back[:, 0]))
    return back[order[np.linspace(0, len(order) - 1, ANCHOR_COUNT).astype(int)]]


def _fit_spline(centres: np.ndarray, values: np.ndarray) -> np.ndarray:
    n = len(centres)
    kernel = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
    system = np.zeros((n + 4, n + 4))
    system[:n, :n] = kernel + SPLINE_SMOOTHING * np.eye(n)
    affine = np.column_stack([np.ones(n), centres])
    system[:n, n:], system[n:, :n] = affine, affine.T
    rhs = np.vstack([values, np.zeros((4, values.shape[1]))])
    return np.linalg.solve(system, rhs)


def _spline_at(coefficients: np.ndarray, centres: np.ndarray, points: np.ndarray) -> np.ndarray:
    n = len(centres)
    out = np.column_stack([np.ones(len(points)), points]) @ coefficients[n:]
    for start in range(0, len(points), 20000):   # bounded memory
        block = points[start:start + 20000]
        kernel = np.linalg.norm(block[:, None] - centres[None], axis=-1)
        out[start:start + 20000] += kernel @ coefficients[:n]
    return out
