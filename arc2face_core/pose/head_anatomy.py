"""The generic adult head as a signed-distance function, built from published head and face measurements.

Units are millimetres in the head's own frame: x to the subject's left (image right when the face looks at the
camera), y UP, z forward (toward the camera); the origin is midway between the two eyeball centres. The sizes with a
source (its name in the comment) are adult measurements from the publications listed in
``docs/pose_without_emoca.md`` ("The generic head: sources"), within their published ranges; the rest (curvatures,
fillets, the ear's bowl, the neck's lean) are design choices. Nothing comes from FLAME or its renders.

The head is one smooth solid: a rounded cranium, the face as a height field in front of it (``face_height``: forehead,
brows, lids over the eyeballs, cheeks, nose, lips, chin), the lower jaw, a neck leaning forward and reaching well
below the frame, two ears with a bowl; carved into it an almond-shaped opening through each eye's lids, a mouth slit
between the lips into a closed pocket, two nostril pits. The eyeballs are separate spheres (``EYEBALL_RADIUS``), seen
through the openings.
"""

from __future__ import annotations

import numpy as np

from .face_height import face_distance, face_height
from .sdf import ellipsoid, rounded_egg, smooth_intersect, smooth_subtract, smooth_union

# --- eyes (Dodgson 2004; Bekerman et al. 2014; Farkas 1994)
EYE_HALF_DISTANCE = 32.0        # eyeball centres +-x: interpupillary distance 64 mm (adults: mean 63.4, 95% 56-71)
EYEBALL_RADIUS = 12.0           # eyeball diameter 24 mm (adult axial length ~23.7, transverse ~24.2)
LID_GAP = 0.8                   # between the eyeball and the inside of the lids
LID_THICKNESS = 1.2             # eyelid skin over the eyeball
FISSURE_UP_DEG = 20.0           # upper lid margin above the eye's centre, degrees seen from the eyeball centre...
FISSURE_DOWN_DEG = 17.0         # ...lower margin below it: an opening ~9 mm high (Farkas 1994: ps-pi ~10)
FISSURE_HALF_WIDTH_DEG = 70.0   # the canthi, 26 mm apart seen from the front (Farkas 1994: en-ex ~30)
CANTHAL_TILT_DEG = 4.0          # the outer corner a little higher than the inner one
# --- cranium (ANSUR II: head breadth, head length, tragion to top of head)
CRANIUM_CENTRE = (0.0, 20.0, -80.0)
CRANIUM_AXES_POSITIVE = (79.0, 86.0, 82.0)     # semi-axes: sideways, up, forward (the face field makes the forehead)
CRANIUM_AXES_NEGATIVE = (79.0, 105.0, 95.0)    # sideways, down, backward
CRANIUM_POWER = 2.3                            # 2: an ellipsoid; more: flatter on top, fuller at the shoulders
# --- face: a height field z = h(x, y) in front of the skull (see face_height), and the jaw's underside
JAW = ((0.0, -72.0, -40.0), (54.0, 38.0, 52.0))
FACE_BOTTOM, FACE_BOTTOM_RISE, FACE_HALF_WIDTH = -110.0, 25.0, 50.0   # the jaw's lower border seen from the front
FACE_VOLUME = ((0.0, -15.0, -30.0), (72.0, 105.0, 75.0))   # the face field is kept inside this
MOUTH_Y, MOUTH_HALF_WIDTH = -64.0, 26.0     # the mouth line and its corners (mouth width 52 mm: ch-ch 50-55)
MOUTH_SLIT = 0.9                            # half height of the slit between the lips
MOUTH_SLIT_BACK = 8.0                       # the slit reaches back to z = 8 (lips ~10 mm deep) into the mouth:
MOUTH_CAVITY = ((0.0, -64.0, -2.0), (20.0, 6.0, 11.0))   # a closed pocket behind the lips, seen when the jaw opens
# --- nose (Farkas 1994: nasal height n-sn, width al-al, tip protrusion sn-prn)
NOSTRIL = ((6.0, -33.5, 22.5), (3.2, 3.0, 5.5))
# --- ears (Farkas 1994: ear length, width, protrusion)
EAR_CENTRE = (75.0, -31.0, -82.0)          # mirrored to -x
EAR_AXES = (4.5, 31.0, 17.0)               # thickness, half length (62 mm), half width (34 mm)
EAR_TILT_DEG = 15.0                         # the top leans back
EAR_FLARE_DEG = 40.0                        # the back edge stands out from the head
EAR_BOWL = ((6.5, -3.0, 1.0), (5.5, 21.0, 12.0))   # carved into the outer face: centre and semi-axes in the ear's frame
# --- neck (ANSUR II: neck circumference)
NECK_TOP, NECK_BOTTOM = (0.0, 10.0, -65.0), (0.0, -215.0, -135.0)   # leaning forward ~17 degrees
NECK_AXES = (55.0, 58.0)                    # x, z semi-axes (ANSUR II: neck circumference; this ~355 mm)

# Fillets (mm): how softly the parts meet.
BLEND_HEAD, BLEND_FACE, BLEND_EAR, BLEND_NECK = 14.0, 8.0, 6.0, 22.0


def mirrored(points: np.ndarray) -> np.ndarray:
    """The points with x made non-negative (the head is left-right symmetric)."""
    out = points.copy()
    out[:, 0] = np.abs(out[:, 0])
    return out


def eyeball_centres() -> np.ndarray:
    """[2, 3]: image-left eye (x < 0) first."""
    return np.array([[-EYE_HALF_DISTANCE, 0.0, 0.0], [EYE_HALF_DISTANCE, 0.0, 0.0]])


def eye_angles(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seen from the nearer eyeball centre: (lateral angle, elevation angle, distance), angles in degrees, lateral
    positive toward the ear."""
    p = mirrored(points) - [EYE_HALF_DISTANCE, 0.0, 0.0]
    lateral = np.degrees(np.arctan2(p[:, 0], p[:, 2]))
    elevation = np.degrees(np.arctan2(p[:, 1], np.hypot(p[:, 0], p[:, 2])))
    return lateral, elevation, np.linalg.norm(p, axis=1)


def fissure_margins(lateral: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Elevations (degrees) of the upper and lower lid margins at a lateral angle: an almond closing at the canthi."""
    t = np.clip(lateral / FISSURE_HALF_WIDTH_DEG, -1.0, 1.0)
    shape = np.maximum(1.0 - t * t, 0.0) ** 0.7          # an almond: pointed at the corners
    middle = CANTHAL_TILT_DEG * t / 2
    return middle + FISSURE_UP_DEG * shape, middle - FISSURE_DOWN_DEG * shape


def _fissure_cut(points: np.ndarray) -> np.ndarray:
    """The opening through the lids: inside an almond of directions from the eyeball centre, within the lids."""
    lateral, elevation, distance = eye_angles(points)
    upper, lower = fissure_margins(lateral)
    in_angle = np.maximum.reduce([elevation - upper, lower - elevation, np.abs(lateral) - FISSURE_HALF_WIDTH_DEG])
    radius = EYEBALL_RADIUS + LID_GAP
    reach = distance - (radius + LID_THICKNESS + 6.0)
    inner = EYEBALL_RADIUS * 0.7 - distance          # the pocket ends inside the eyeball, away from the cone's apex
    return np.maximum.reduce([np.radians(in_angle) * radius, reach, inner])


def _ear(points: np.ndarray) -> np.ndarray:
    p = mirrored(points) - EAR_CENTRE
    tilt, flare = np.radians(EAR_TILT_DEG), np.radians(EAR_FLARE_DEG)
    # Into the ear's frame: undo the flare (about y: the back, -z, swings outward, +x), then the tilt (about x).
    c, s = np.cos(flare), np.sin(flare)
    p = p @ np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])
    c, s = np.cos(tilt), np.sin(tilt)
    p = p @ np.array([[1, 0, 0], [0, c, s], [0, -s, c]])
    pinna = ellipsoid(p, (0.0, 0.0, 0.0), EAR_AXES)
    bowl = ellipsoid(p, EAR_BOWL[0], EAR_BOWL[1])
    return smooth_subtract(pinna, bowl, 2.0)


def head_distance(points: np.ndarray) -> np.ndarray:
    """Signed distance (mm, approximately) to the head's skin, eyeballs excluded: < 0 inside."""
    points = np.asarray(points, np.float64)
    sym = mirrored(points)
    skull = rounded_egg(points, CRANIUM_CENTRE, CRANIUM_AXES_POSITIVE, CRANIUM_AXES_NEGATIVE, CRANIUM_POWER)
    skull = smooth_union(skull, ellipsoid(points, *JAW), BLEND_HEAD)
    # The face: behind the height field, above the jaw's lower border, in front of the ears.
    face = face_distance(points)
    x, y = points[:, 0], points[:, 1]
    border = FACE_BOTTOM + FACE_BOTTOM_RISE * (x / FACE_HALF_WIDTH) ** 2
    face = smooth_intersect(face, (border - y) / np.sqrt(1.0 + (2 * FACE_BOTTOM_RISE * x / FACE_HALF_WIDTH ** 2) ** 2),
                            BLEND_FACE)
    face = smooth_intersect(face, ellipsoid(points, *FACE_VOLUME), BLEND_HEAD)
    d = smooth_union(skull, face, BLEND_HEAD)
    d = smooth_union(d, _ear(points), BLEND_EAR)
    d = smooth_union(d, _neck(points), BLEND_NECK)
    # Openings: the eyelid fissures, the mouth slit, the nostrils.
    d = smooth_subtract(d, _fissure_cut(points), 0.8)
    d = smooth_subtract(d, _mouth_cut(points), 0.6)
    d = smooth_subtract(d, ellipsoid(sym, *NOSTRIL), 1.0)
    return d


def _mouth_cut(points: np.ndarray) -> np.ndarray:
    """A thin slit between the lips, from corner to corner, reaching back from the lips' front (less deep toward the
    corners, where it ends) into the mouth behind them."""
    p = points - [0.0, MOUTH_Y, 0.0]
    t = np.clip(np.abs(p[:, 0]) / MOUTH_HALF_WIDTH, 0.0, 1.0)
    lips = face_height(points[:, 0], np.full(len(points), MOUTH_Y))
    back = lips + 1.0 - (lips + 1.0 - MOUTH_SLIT_BACK) * np.sqrt(np.maximum(1.0 - t ** 4, 0.0))
    slit = np.maximum.reduce([np.abs(p[:, 0]) - MOUTH_HALF_WIDTH, np.abs(p[:, 1]) - MOUTH_SLIT, back - p[:, 2]])
    return np.minimum(slit, ellipsoid(points, *MOUTH_CAVITY))


def _neck(points: np.ndarray) -> np.ndarray:
    """An elliptic column leaning forward (its axis from ``NECK_BOTTOM`` up to ``NECK_TOP``), rounded at both ends."""
    top, bottom = np.asarray(NECK_TOP), np.asarray(NECK_BOTTOM)
    along = np.clip((points[:, 1] - bottom[1]) / (top[1] - bottom[1]), 0.0, 1.0)
    p = points - (bottom + along[:, None] * (top - bottom))
    radial = np.hypot(p[:, 0] / NECK_AXES[0], p[:, 2] / NECK_AXES[1]) - 1.0
    scale = min(NECK_AXES)
    side = radial * scale
    below = bottom[1] - points[:, 1]          # > 0 under the bottom
    above = points[:, 1] - top[1]             # > 0 over the top (inside the head there)
    return smooth_intersect(smooth_intersect(side, below, 20.0), above, 20.0)
