"""A generic whole head built in code, for pose hints without FLAME: cranium, ears and neck around the face surface.

The ControlNet saw the whole FLAME head (scalp, ears, neck). Without FLAME the pack builds a stand-in from the smooth
face surface of ``face_surface`` (a height field through 68 landmarks: insightface's mean face or a photo's own):

* **Head**: one closed surface, star-shaped about ``O``, the midpoint of jaw points 0 and 16 (beside the ears, at eye
  height). Along each direction ``d`` its radius blends the face surface (where the ray from ``O`` meets the height
  field) and an ellipsoidal cranium about ``O``: weight 1 inside the face outline, falling smoothly to 0 over a band
  outside it (measured on the stereographic chart of directions about +z), so face and scalp join without a seam.
* **Ears**: flattened ellipsoids on either side, behind and a little below ``O``, turned out at the back.
* **Neck**: an open elliptic tube under the head, reaching well below the frame (FLAME's neck is open there too).

Proportions come from the landmarks: ``W`` = half the distance between jaw points 0 and 16 (the head's half width at
the ears) and ``m`` = the eye-to-mouth distance (FFHQ's; ~6.6 cm on an adult). The constants below are in those units,
chosen from adult head measurements (eye line to vertex ~11.5 cm, glabella to back of the head ~19.5 cm, neck
~12 cm wide, ears ~6 cm tall): a generic adult head, not anyone's. Coordinates are insightface's (x right, y DOWN,
z toward the camera); the faces of every part wind outward in FLAME's frame (y up), where the renderer works.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidInputError
from ..faces.landmarks import check_landmarks, mean_shape
from .camera import FLIP_Y
from .face_surface import build_face_surface, eye_to_mouth, points_in_polygon
from .flame import outward_faces

# Cranium (an ellipsoid about O, with different reaches up/down and front/back), in m (eye-to-mouth) or W units.
CRANIUM_WIDTH = 1.0          # x semi-axis, W
CRANIUM_UP = 1.75            # up to the vertex, m
CRANIUM_DOWN_FRONT = 2.1     # down under the jaw, m
CRANIUM_DOWN_BACK = 1.3      # down at the back (the nape), m
CRANIUM_FRONT = 1.42         # forward, m (the forehead above the face outline)
CRANIUM_BACK = 1.56          # backward, m (the back of the head)
BLEND_BAND = 0.2             # face -> cranium blend width across the face outline, stereographic chart units...
BLEND_INSIDE = 0.1           # ...of which this much lies inside it (face and cranium meet there at equal radii)
CRANIUM_FIT_BAND = 0.2       # the cranium meets the face outline's radius, fading back to the ellipsoid over this
# Ears: centre offsets from O (x outward from the head's side in W, y down and z back in m), semi-axes in m.
EAR_CENTRE = (0.1, 0.15, 0.3)
EAR_AXES = (0.09, 0.43, 0.26)        # thickness, height, front-to-back
EAR_FLARE_DEGREES = 20.0             # the back of the ear stands out from the head
# Neck: an elliptic tube, axes in W (x) and m (z), top and bottom in m below O, centre shifted back in m.
NECK_RADII = (0.72, 0.9)
NECK_SPAN = (0.3, 4.0)
NECK_BACK = 0.1

RINGS, SEGMENTS = 120, 240           # head mesh: latitudes x longitudes (~29k vertices)
OUTLINE_SAMPLES = 240                # face outline samples for the blend
EAR_RINGS, EAR_SEGMENTS = 16, 24
NECK_RINGS, NECK_SEGMENTS = 12, 96


@dataclass(frozen=True)
class GenericHead:
    """The head mesh in insightface's frame (frontal, upright) and the landmarks it was built around."""

    vertices: np.ndarray     # [V, 3] float64
    faces: np.ndarray        # [F, 3] int64, wound outward once y is flipped up
    landmarks: np.ndarray    # [68, 3] the face's landmarks (for FFHQ framing)
    parts: dict              # name -> slice of ``faces``: "head", "left_ear", "right_ear", "neck"


def build_generic_head(landmarks: np.ndarray | None = None) -> GenericHead:
    """The whole head around the face surface of ``landmarks`` (frontal, upright; None = insightface's mean face)."""
    if landmarks is None:
        return _mean_head()
    return _build(check_landmarks(landmarks))


@functools.lru_cache(maxsize=1)
def _mean_head() -> GenericHead:
    head = _build(mean_shape())
    for array in (head.vertices, head.faces, head.landmarks):
        array.flags.writeable = False   # shared by every caller
    return head


def _build(points: np.ndarray) -> GenericHead:
    surface = build_face_surface(points)
    origin = (points[0] + points[16]) / 2
    half_width = float(np.linalg.norm(points[16, :2] - points[0, :2])) / 2
    m = eye_to_mouth(points)
    if half_width < 0.5 * m or half_width > 3 * m:
        raise InvalidInputError("The landmarks do not look like a frontal face: the jaw ends are too close together "
                                "or too far apart for the eye-to-mouth distance.")
    parts, meshes = {}, []
    head = _head(surface, origin, half_width, m)
    meshes.append(head)
    for side, name in ((-1, "left_ear"), (1, "right_ear")):
        meshes.append(_ear(origin, half_width, m, side))
    meshes.append(_neck(origin, half_width, m))
    vertices, faces, start = [], [], 0
    for name, (v, f) in zip(("head", "left_ear", "right_ear", "neck"), meshes):
        parts[name] = slice(sum(len(x) for x in faces), sum(len(x) for x in faces) + len(f))
        faces.append(outward_faces(v * FLIP_Y.diagonal(), f) + start)
        vertices.append(v)
        start += len(v)
    return GenericHead(vertices=np.vstack(vertices), faces=np.vstack(faces), landmarks=points.copy(), parts=parts)


# ---------------------------------------------------------------------------------------------------- head

def _directions(rings: int, segments: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit directions of a latitude-longitude sphere (poles at -y = up and +y = down; longitude 0 = +z, the front)
    and its outward-wound faces."""
    lat = np.linspace(-np.pi / 2, np.pi / 2, rings + 1)[1:-1]
    lon = np.linspace(-np.pi, np.pi, segments, endpoint=False)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    ring = np.stack([np.cos(la) * np.sin(lo), np.sin(la), np.cos(la) * np.cos(lo)], -1).reshape(-1, 3)
    directions = np.vstack([[0.0, -1.0, 0.0], ring, [0.0, 1.0, 0.0]])
    return directions, _sphere_faces(rings, segments)


def _sphere_faces(rings: int, segments: int) -> np.ndarray:
    """Faces of the latitude-longitude grid above (wound outward later, per part)."""
    top, bottom = 0, 1 + (rings - 1) * segments
    s = np.arange(segments)
    s1 = (s + 1) % segments
    at = lambda r, k: 1 + r * segments + k   # noqa: E731
    faces = [np.stack([np.full(segments, top), at(0, s), at(0, s1)], 1),
             np.stack([np.full(segments, bottom), at(rings - 2, s1), at(rings - 2, s)], 1)]
    r = np.arange(rings - 2)[:, None]
    faces.append(np.stack([at(r, s), at(r + 1, s), at(r, s1)], -1).reshape(-1, 3))
    faces.append(np.stack([at(r + 1, s), at(r + 1, s1), at(r, s1)], -1).reshape(-1, 3))
    return np.vstack(faces)


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _cranium_radius(d: np.ndarray, half_width: float, m: float) -> np.ndarray:
    back_to_front = _smoothstep((d[:, 2] + 0.4) / 0.8)
    down = CRANIUM_DOWN_BACK + (CRANIUM_DOWN_FRONT - CRANIUM_DOWN_BACK) * back_to_front
    b = np.where(d[:, 1] < 0, CRANIUM_UP, down) * m
    c = (CRANIUM_BACK + (CRANIUM_FRONT - CRANIUM_BACK) * _smoothstep((d[:, 2] + 0.3) / 0.6)) * m
    a = CRANIUM_WIDTH * half_width
    return 1.0 / np.sqrt((d[:, 0] / a) ** 2 + (d[:, 1] / b) ** 2 + (d[:, 2] / c) ** 2)


def _chart(d: np.ndarray) -> np.ndarray:
    """Stereographic chart of directions about +z (the front): the front is (0, 0), the sides are at distance 1."""
    return d[:, :2] / (1.0 + d[:, 2:3])


def _face_radius(height, origin: np.ndarray, d: np.ndarray, near: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where the ray ``origin + t d`` first meets the height field (z above -> below the ray), searched from
    0.3 to 2 times ``near`` (the cranium's radius along the ray); found = False if it does not within that."""
    ts = np.linspace(0.3, 2.0, 18)[None, :] * near[:, None]

    def gap(t: np.ndarray, rows: np.ndarray) -> np.ndarray:   # > 0 once the ray is in front of the surface
        points = origin + t[:, None] * d[rows]
        return points[:, 2] - height(points[:, :2])

    rows = np.arange(len(d))
    samples = np.stack([gap(t, rows) for t in ts.T], 1)
    crossed = (samples[:, :-1] <= 0) & (samples[:, 1:] > 0)
    found = crossed.any(1) & (samples[:, 0] <= 0)
    first = crossed.argmax(1)
    low, high = ts[rows, first], ts[rows, first + 1]
    rows = np.flatnonzero(found)
    low, high = low[rows], high[rows]
    for _ in range(18):
        mid = (low + high) / 2
        behind = gap(mid, rows) <= 0
        low, high = np.where(behind, mid, low), np.where(behind, high, mid)
    radius = np.zeros(len(d))
    radius[rows] = (low + high) / 2
    return radius, found


def _head(surface, origin: np.ndarray, half_width: float, m: float) -> tuple[np.ndarray, np.ndarray]:
    directions, faces = _directions(RINGS, SEGMENTS)
    radius = _cranium_radius(directions, half_width, m)
    outline = _resample_closed(surface.outline, OUTLINE_SAMPLES)
    outline_3d = np.column_stack([outline, surface.height(outline)]) - origin
    outline_chart = _chart(outline_3d / np.linalg.norm(outline_3d, axis=1, keepdims=True))
    near = np.flatnonzero(directions[:, 2] > -0.2)      # the face and its blend band lie well in front of this
    chart = _chart(directions[near])
    inside = points_in_polygon(chart, outline_chart)
    distance = _distance_to_polygon(chart, outline_chart)
    # The cranium is scaled, smoothly, to meet the face's outline at the face's own radius (the chin reaches further
    # than any ellipsoid through the forehead does), fading back to the ellipsoid over CRANIUM_FIT_BAND.
    ratio = np.linalg.norm(outline_3d, axis=1) / _cranium_radius(outline_3d / np.linalg.norm(
        outline_3d, axis=1, keepdims=True), half_width, m)
    fit = _shepard(chart, outline_chart, ratio)
    fade = np.where(inside, 1.0, 1.0 - _smoothstep(distance / CRANIUM_FIT_BAND))
    radius[near] *= 1.0 + (fit - 1.0) * fade
    signed = np.where(inside, -distance, distance)       # < 0 inside the face outline
    weight = 1.0 - _smoothstep((signed + BLEND_INSIDE) / BLEND_BAND)
    blended = near[weight > 0]
    face, found = _face_radius(surface.height, origin, directions[blended], radius[blended])
    w = weight[weight > 0] * found
    radius[blended] = w * face + (1 - w) * radius[blended]
    return origin + radius[:, None] * directions, faces


def _resample_closed(polygon: np.ndarray, count: int) -> np.ndarray:
    """``count`` points evenly spaced along a closed polygon."""
    closed = np.vstack([polygon, polygon[:1]])
    along = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(closed, axis=0), axis=1))])
    at = np.linspace(0.0, along[-1], count, endpoint=False)
    return np.column_stack([np.interp(at, along, closed[:, 0]), np.interp(at, along, closed[:, 1])])


def _shepard(points: np.ndarray, samples: np.ndarray, values: np.ndarray, power: float = 4.0) -> np.ndarray:
    """Smooth interpolation of values given at sample points: inverse-distance weights (Shepard's method)."""
    distance = np.sqrt(((points[:, None] - samples[None]) ** 2).sum(-1))
    weights = 1.0 / np.maximum(distance, 1e-9) ** power
    return (weights @ values) / weights.sum(1)


def _distance_to_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Distance from each point to the closed polygon's edges."""
    start, end = polygon, np.roll(polygon, -1, axis=0)
    edge = end - start
    t = np.einsum("pei,ei->pe", points[:, None] - start[None], edge) / np.maximum((edge ** 2).sum(1), 1e-30)
    closest = start[None] + np.clip(t, 0, 1)[..., None] * edge[None]
    return np.sqrt(((points[:, None] - closest) ** 2).sum(-1)).min(1)


# ------------------------------------------------------------------------------------------------ ears, neck

def _ear(origin: np.ndarray, half_width: float, m: float, side: int) -> tuple[np.ndarray, np.ndarray]:
    directions, faces = _directions(EAR_RINGS, EAR_SEGMENTS)
    # Local axes: x = thickness (outward), y = height, z = front-to-back; then flared about the vertical axis.
    local = directions * np.array([EAR_AXES[0], EAR_AXES[1], EAR_AXES[2]]) * m
    angle = np.radians(EAR_FLARE_DEGREES) * side
    c, s = np.cos(angle), np.sin(angle)
    turn = np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])     # the back (-z) of the ear moves outward (side * x)
    centre = origin + np.array([side * (1.0 + EAR_CENTRE[0]) * half_width, EAR_CENTRE[1] * m, -EAR_CENTRE[2] * m])
    return local @ turn.T + centre, faces


def _neck(origin: np.ndarray, half_width: float, m: float) -> tuple[np.ndarray, np.ndarray]:
    """An open elliptic tube (no caps)."""
    angles = np.linspace(-np.pi, np.pi, NECK_SEGMENTS, endpoint=False)
    heights = np.linspace(NECK_SPAN[0], NECK_SPAN[1], NECK_RINGS + 1) * m
    rx, rz = NECK_RADII[0] * half_width, NECK_RADII[1] * m
    h, a = np.meshgrid(heights, angles, indexing="ij")
    vertices = np.stack([rx * np.sin(a), h, rz * np.cos(a) - NECK_BACK * m], -1).reshape(-1, 3) + origin
    k = np.arange(NECK_SEGMENTS)
    k1 = (k + 1) % NECK_SEGMENTS
    r = np.arange(NECK_RINGS)[:, None]
    at = lambda ring, seg: ring * NECK_SEGMENTS + seg   # noqa: E731
    faces = np.vstack([np.stack([at(r, k), at(r, k1), at(r + 1, k)], -1).reshape(-1, 3),
                       np.stack([at(r + 1, k), at(r, k1), at(r + 1, k1)], -1).reshape(-1, 3)])
    return vertices, faces
