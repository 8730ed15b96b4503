"""The generic head's moving parts: the jaw and the upper eyelids, as smooth skinning weights, and its 68 landmarks.

Frame and units as ``head_anatomy`` (mm; x to the subject's left, y up, z forward). The posing follows FLAME's
parameters as the pack passes them (``expression.vectors``): the jaw's axis-angle (radians; the first component
opens the mouth) turns the lower face about the axis through the two jaw joints, and each eyelid value (0 open ... 1
closed; the first is the subject's left eye, at +x) turns that upper lid down over the eyeball until it meets the
lower lid.

Jaw weights: 1 below the mouth slit and 0 above it where the lips are (the slit separates them, so the lips part);
beyond the mouth's corners the change spreads over the cheek; the weight fades out behind the jaw and down the neck.
Eyelid weights: 1 on the upper lid from its margin up, fading out toward the brow, round the eye and past the canthi.

Landmarks (the iBUG 68 points, in this frame): the eyes' six points lie on the lid margins (corners at the canthi,
two on each lid), the mouth's on the lips and the slit; the rest are insightface's mean 68-point face placed on the
head by the similarity that matches its eyes and mouth corners to these, then moved onto the skin.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from .head_anatomy import (
    EYE_HALF_DISTANCE,
    EYEBALL_RADIUS,
    FISSURE_HALF_WIDTH_DEG,
    LID_GAP,
    LID_THICKNESS,
    MOUTH_HALF_WIDTH,
    MOUTH_SLIT,
    MOUTH_Y,
    eye_angles,
    fissure_margins,
    head_distance,
)

JAW_PIVOT = np.array([0.0, -22.0, -70.0])   # on the axis through the jaw joints (condyles), in front of the ears
JAW_SOFTENING = 2.5          # beyond the mouth's corners the jaw weight changes over this many mm per mm sideways...
JAW_SOFTENING_DROP = 0.5     # ...about a line that falls this many mm per mm below the mouth line (the cheeks stay)
JAW_SOFTENING_REACH = 30.0   # ...up to this far beyond the corners (so nothing above y = -42 moves)
CORNER_LAG = 0.6             # the lower lip's corners move this much less than its middle...
LOWER_LIP_DEPTH = 16.0       # ...fading out over this many mm below the mouth line (the chin moves whole)
JAW_FRONT = (-60.0, 40.0)    # the weight fades from z = -60 (behind: 0) over 40 mm forward (the jaw's depth)...
JAW_LOW = (-150.0, 40.0)     # ...and from y = -150 (below: 0) over 40 mm up (the throat under the chin)
LID_FADE_DEG = 14.0          # above the upper lid's margin the lid weight fades out over this many degrees
LID_REACH = (EYEBALL_RADIUS - 2.0, EYEBALL_RADIUS + LID_GAP + LID_THICKNESS + 5.0)   # the lid moves between these
LID_REACH_FADE = 5.0         # radii, fading over this many mm beyond the outer one
LID_CORNER_FADE_DEG = 10.0   # and past the canthi over this many degrees

# iBUG 68-point indices
EYE_RIGHT_OF_IMAGE = slice(42, 48)      # the subject's left eye (x > 0)
EYE_LEFT_OF_IMAGE = slice(36, 42)
MOUTH_CORNERS = (48, 54)


def smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def jaw_weights(points: np.ndarray) -> np.ndarray:
    """[N] in 0..1: how much each point turns with the jaw."""
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    beyond_corner = np.clip(np.abs(x) - (MOUTH_HALF_WIDTH - 4.0), 0.0, JAW_SOFTENING_REACH)
    width = 0.3 + JAW_SOFTENING * beyond_corner
    below = smoothstep(0.5 - (y - MOUTH_Y + JAW_SOFTENING_DROP * beyond_corner) / width)
    # The lower lip follows the jaw less toward the mouth's corners, so the mouth opens as an oval.
    near_lip = 1.0 - smoothstep((MOUTH_Y - y) / LOWER_LIP_DEPTH)
    below = below * (1.0 - CORNER_LAG * near_lip * np.clip(np.abs(x) / MOUTH_HALF_WIDTH, 0.0, 1.0) ** 2)
    front = smoothstep((z - JAW_FRONT[0]) / JAW_FRONT[1])
    high = smoothstep((y - JAW_LOW[0]) / JAW_LOW[1])
    return below * front * high


def lid_weights(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """([N] in 0..1 for the upper lids, [N] the angle in degrees that closes the lid where each point is)."""
    lateral, elevation, distance = eye_angles(points)
    upper, lower = fissure_margins(lateral)
    middle = (upper + lower) / 2
    above = (elevation > middle) & (np.abs(lateral) < FISSURE_HALF_WIDTH_DEG + LID_CORNER_FADE_DEG)
    fade_up = 1.0 - smoothstep((elevation - upper) / LID_FADE_DEG)
    fade_side = 1.0 - smoothstep((np.abs(lateral) - FISSURE_HALF_WIDTH_DEG) / LID_CORNER_FADE_DEG)
    fade_out = 1.0 - smoothstep((distance - LID_REACH[1]) / LID_REACH_FADE)
    inside = distance > LID_REACH[0]
    weight = np.where(above & inside, fade_up * fade_side * fade_out, 0.0)
    return weight, upper - lower


def posed_points(points: np.ndarray, jaw: np.ndarray, eyelids: np.ndarray, jaw_weight: np.ndarray,
                 lid_weight: np.ndarray, lid_angle: np.ndarray) -> np.ndarray:
    """``points`` [N, 3] with the jaw turned by ``jaw`` (axis-angle, radians) and the upper lids closed by
    ``eyelids`` (left = +x eye, right = -x eye; 0..1), each by its per-point weight (linear blend skinning)."""
    out = np.array(points, np.float64)
    jaw = np.asarray(jaw, np.float64)
    if np.any(jaw != 0):
        moved = (out - JAW_PIVOT) @ Rotation.from_rotvec(jaw).as_matrix().T + JAW_PIVOT
        out = out + jaw_weight[:, None] * (moved - out)
    left, right = float(eyelids[0]), float(eyelids[1])
    if left or right:
        side_value = np.where(out[:, 0] > 0, left, right)
        angle = np.radians(side_value * lid_weight * lid_angle)          # per point: down by this angle
        centre = np.column_stack([np.sign(out[:, 0]) * EYE_HALF_DISTANCE, np.zeros(len(out)), np.zeros(len(out))])
        p = out - centre
        c, s = np.cos(angle), np.sin(angle)
        # About the eye's x axis, the lid's front (0, 0, r) going down to (0, -r sin a, r cos a).
        turned = np.column_stack([p[:, 0], c * p[:, 1] - s * p[:, 2], s * p[:, 1] + c * p[:, 2]])
        out = np.where((angle != 0)[:, None], centre + turned, out)
    return out


def onto_skin(points: np.ndarray, distance=head_distance, steps: int = 12) -> np.ndarray:
    """Points moved onto the zero level of ``distance`` by Newton steps along its numerical gradient."""
    p = np.array(points, np.float64)
    h = 0.02
    for _ in range(steps):
        value = distance(p)
        gradient = np.stack([(distance(p + h * e) - distance(p - h * e)) / (2 * h) for e in np.eye(3)], 1)
        p = p - value[:, None] * gradient / np.maximum((gradient ** 2).sum(1, keepdims=True), 1e-12)
    return p


def _lid_point(lateral_deg: float, elevation_deg: float, side: float) -> np.ndarray:
    """A point on the outside of the lids in a direction from the eyeball centre (side +1: the +x eye)."""
    radius = EYEBALL_RADIUS + LID_GAP + LID_THICKNESS
    a, e = np.radians(lateral_deg), np.radians(elevation_deg)
    local = radius * np.array([np.sin(a) * np.cos(e), np.sin(e), np.cos(a) * np.cos(e)])
    return np.array([side * (EYE_HALF_DISTANCE + local[0]), local[1], local[2]])


def eye_landmarks(side: float) -> np.ndarray:
    """[6, 3] iBUG eye points (outer corner, two upper, inner corner, two lower for the image-left eye; mirrored
    order for the other, as iBUG runs both eyes left to right in the image)."""
    corner = FISSURE_HALF_WIDTH_DEG
    laterals = np.array([corner, corner / 3, -corner / 3, -corner])      # outer ... inner (positive = toward the ear)
    upper, lower = fissure_margins(laterals)
    outer, inner = _lid_point(corner, upper[0], side), _lid_point(-corner, upper[3], side)
    up = [_lid_point(laterals[i], upper[i], side) for i in (1, 2)]
    down = [_lid_point(laterals[i], lower[i], side) for i in (2, 1)]
    points = [outer, up[0], up[1], inner, down[0], down[1]]         # image-left eye: outer corner at image left
    if side > 0:   # the +x eye (image right): iBUG starts at its inner corner (image left) and goes clockwise
        points = [inner, up[1], up[0], outer, down[1], down[0]]
    return np.array(points)


def mouth_landmarks() -> np.ndarray:
    """[20, 3] iBUG mouth points 48..67: the outer lip contour (48 and 54 the corners, where the slit ends) and the
    inner one along the slit's edges, on the lips' front."""
    half = MOUTH_HALF_WIDTH
    edge = MOUTH_SLIT + 0.3
    outer = [(-half, 0.0), (-0.6 * half, 5.0), (-0.25 * half, 7.0), (0.0, 6.5), (0.25 * half, 7.0),
             (0.6 * half, 5.0), (half, 0.0),                                          # 48..54: corner, upper lip
             (0.6 * half, -5.5), (0.25 * half, -8.0), (0.0, -8.5), (-0.25 * half, -8.0), (-0.6 * half, -5.5)]
    inner = [(-0.85 * half, 0.0), (-0.3 * half, edge), (0.0, edge), (0.3 * half, edge), (0.85 * half, 0.0),
             (0.3 * half, -edge), (0.0, -edge), (-0.3 * half, -edge)]                 # 60..67
    starts = np.array([[x, MOUTH_Y + dy, 40.0] for x, dy in outer + inner])
    return _front_surface(starts)


def _front_surface(starts: np.ndarray) -> np.ndarray:
    """Where lines from ``starts`` straight back (-z) first meet the skin."""
    out = []
    for start in starts:
        zs = np.arange(start[2], -60.0, -0.05)
        line = np.column_stack([np.full_like(zs, start[0]), np.full_like(zs, start[1]), zs])
        value = head_distance(line)
        first = int(np.argmax(value < 0))
        out.append(line[max(first - 1, 0)] + [0.0, 0.0, -0.025])
    return np.array(out)


def head_landmarks(mean_face: np.ndarray) -> np.ndarray:
    """[68, 3] landmarks in the head's frame (mm, y up) from insightface's mean face (its frame: y down)."""
    eyes_mouth = np.vstack([eye_landmarks(-1.0), eye_landmarks(1.0), mouth_landmarks()])   # 36..67
    target = eyes_mouth[[0, 3, 6, 9]]                 # the four eye corners carry the similarity, with the mouth...
    mean = mean_face * [1.0, -1.0, 1.0]
    source = mean[[36, 39, 42, 45]]
    source = np.vstack([source, (mean[48] + mean[54]) / 2])
    target = np.vstack([target, (eyes_mouth[12] + eyes_mouth[18]) / 2])
    scale, turn, shift = similarity(source[:, :2], target[:, :2])
    placed = np.column_stack([mean[:, :2] @ (scale * turn).T + shift, scale * mean[:, 2]])
    placed[:, 2] += 60.0                               # well in front of the face: then straight back onto the skin
    out = np.empty((68, 3))
    out[:36] = onto_skin(_front_surface(placed[:36]))
    out[36:] = eyes_mouth
    return out


def similarity(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares 2D similarity (Umeyama): target ~ scale * turn @ source + shift."""
    mu_s, mu_t = source.mean(0), target.mean(0)
    a, b = source - mu_s, target - mu_t
    u, sigma, vt = np.linalg.svd(b.T @ a)
    d = np.sign(np.linalg.det(u @ vt))
    fix = np.diag([1.0, d])
    turn = u @ fix @ vt
    scale = float(np.trace(np.diag(sigma) @ fix) / (a ** 2).sum())
    return scale, turn, mu_t - scale * turn @ mu_s


def similarity_3d(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares 3D similarity (Umeyama 1991): target ~ scale * turn @ source + shift."""
    mu_s, mu_t = source.mean(0), target.mean(0)
    a, b = source - mu_s, target - mu_t
    u, sigma, vt = np.linalg.svd(b.T @ a)
    fix = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    turn = u @ fix @ vt
    scale = float(np.trace(np.diag(sigma) @ fix) / (a ** 2).sum())
    return scale, turn, mu_t - scale * turn @ mu_s
