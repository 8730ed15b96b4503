"""The front of the generic face as a height field z = h(x, y), from soft-tissue profile and face measurements.

Frame and units as ``head_anatomy`` (mm; x to the subject's left, y up, z forward; origin midway between the eyeball
centres). ``h`` is a smooth midline profile ``MIDLINE`` (forehead, glabella, the face under the nose, lips' base,
chin) bent back (about a parabola of radius ``WRAP`` at the middle, turning back faster toward the sides) whose radius shrinks from the forehead to the chin (the face is
flatter at the brow than at the jaw), plus local smooth bumps (C2, compact support): brow, orbital hollows, cheeks,
nose (a ridge from the nasion to the tip whose height and width follow the nose's profile), nose wings, lips and
chin. The eyelids are a separate sphere round each eyeball (``head_anatomy``) that this field is blended with.
"""

from __future__ import annotations

import numpy as np

EYE_CENTRE_X = 32.0          # eyeball centres (``head_anatomy``): the lids lie on a sphere round them...
LID_RADIUS = 14.0            # ...of the eyeball's radius plus the gap and the lids' skin
LID_BLEND = 4.0              # mm over which the lids join the face
# Midline profile without nose or lips: (y, z) control points, a monotone cubic through them.
MIDLINE = ((100.0, -45.0), (80.0, -10.0), (60.0, 6.0), (40.0, 14.0), (26.0, 18.0), (16.0, 19.5), (0.0, 14.0),
           (-20.0, 15.0), (-45.0, 16.5), (-58.0, 17.5), (-65.0, 16.0), (-85.0, 11.0), (-100.0, 12.0), (-112.0, 2.0), (-130.0, -20.0))
# Horizontal radius of the face's curvature at heights y (forehead, eyes, cheeks, mouth, chin).
WRAP = ((90.0, 90.0), (20.0, 90.0), (0.0, 86.0), (-30.0, 78.0), (-65.0, 64.0), (-100.0, 51.0), (-130.0, 46.0))
WRAP_TURN = 1.0              # the face turns back faster beyond this fraction of the wrap radius
# Bumps: (centre x, centre y, radius x, radius y, height mm); mirrored ones are given for x >= 0.
MIRRORED_BUMPS = (
    (30.0, 16.0, 34.0, 15.0, 1.5),       # brow ridge over each eye
    (31.0, -12.0, 22.0, 11.0, 1.5),      # under the eye: the lower lid runs into the cheek
    (42.0, -32.0, 24.0, 22.0, 2.0),      # cheekbone
    (13.0, -32.5, 9.5, 7.5, 2.0),        # nose wing (ala)
)
BUMPS = (
    (0.0, -57.0, 24.0, 8.0, 2.5),        # upper lip
    (0.0, -70.0, 22.0, 8.0, 3.5),        # lower lip
    (0.0, -97.0, 20.0, 14.0, 6.0),       # chin
    (0.0, 7.0, 12.0, 6.0, -2.5),         # the nasion: the nose's root in a shallow dip under the glabella
)
# Nose ridge: its height above the face and half width, along y (nasion at y = 8, tip at -26, subnasale at -39);
# the tip ends about 20 mm in front of the subnasale (Farkas 1994: nasal tip protrusion sn-prn).
NOSE_HEIGHT = ((12.0, 0.0), (8.0, 4.2), (0.0, 9.0), (-7.0, 13.2), (-17.0, 17.4), (-24.0, 21.6), (-28.0, 21.6),
               (-32.0, 16.8), (-36.0, 7.2), (-39.0, 0.0))
NOSE_HALF_WIDTH = ((12.0, 14.0), (0.0, 16.0), (-20.0, 17.0), (-30.0, 18.0), (-42.0, 18.0))


def _monotone(points) -> "object":
    from scipy.interpolate import PchipInterpolator

    table = np.array(sorted(points))
    return PchipInterpolator(table[:, 0], table[:, 1], extrapolate=True)


_MIDLINE, _WRAP = _monotone(MIDLINE), _monotone(WRAP)
_NOSE_HEIGHT, _NOSE_WIDTH = _monotone(NOSE_HEIGHT), _monotone(NOSE_HALF_WIDTH)


def bump(u: np.ndarray) -> np.ndarray:
    """(1 - u²)³ inside the unit radius, 0 outside: smooth (C2) and flat at its rim."""
    t = np.clip(1.0 - u * u, 0.0, None)
    return t * t * t


def _elliptic(x, y, cx, cy, rx, ry) -> np.ndarray:
    return np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)


def face_height(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """z of the face's front at (x, y), mm."""
    radius = _WRAP(np.clip(y, -130.0, 90.0))
    ax = np.abs(x)
    turn = (ax / (WRAP_TURN * radius)) ** 4
    z = _MIDLINE(np.clip(y, -130.0, 95.0)) - ax * ax / (2 * radius) * (1.0 + turn)
    for cx, cy, rx, ry, height in MIRRORED_BUMPS:
        z = z + height * bump(_elliptic(ax, y, cx, cy, rx, ry))
    for cx, cy, rx, ry, height in BUMPS:
        z = z + height * bump(_elliptic(x, y, cx, cy, rx, ry))
    z = _with_lids(z, ax, y)
    inside_nose = (y < 12.0) & (y > -39.0)
    width = _NOSE_WIDTH(np.clip(y, -39.0, 12.0))
    ridge = np.where(inside_nose, _NOSE_HEIGHT(np.clip(y, -39.0, 12.0)), 0.0)
    across = np.clip(1.0 - (ax / width) ** 2, 0.0, None)
    return z + np.maximum(ridge, 0.0) * across * across      # (1 - u²)²: the nose's sides slope into the cheeks


def _with_lids(z: np.ndarray, ax: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The face raised over each eyeball to the lids' sphere (radius ``LID_RADIUS`` about the eyeball's centre),
    joined by a smooth maximum of the two heights over ``LID_BLEND`` mm: lids that sink into the face round them."""
    r2 = LID_RADIUS ** 2 - (ax - EYE_CENTRE_X) ** 2 - y ** 2
    lid = np.sign(r2) * np.sqrt(np.abs(r2))          # beyond the sphere's rim: continues downward, far below the face
    h = np.clip(LID_BLEND - np.abs(z - lid), 0.0, None) / LID_BLEND
    return np.maximum(z, lid) + h * h * LID_BLEND / 4


def face_distance(points: np.ndarray, step: float = 0.05) -> np.ndarray:
    """Signed distance estimate to the height field (< 0 behind it): (z - h) / sqrt(1 + |grad h|²)."""
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    h = face_height(x, y)
    dx = (face_height(x + step, y) - face_height(x - step, y)) / (2 * step)
    dy = (face_height(x, y + step) - face_height(x, y - step)) / (2 * step)
    return (z - h) / np.sqrt(1.0 + dx * dx + dy * dy)
