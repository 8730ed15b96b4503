"""A smooth face-only surface built in code from 68 3D landmarks, for the EMOCA-free pose hint.

Arc2Face's pose ControlNet saw normals of EMOCA's face-only FLAME mesh. FLAME cannot be shipped, so the surface here is
a height field ``z(x, y)``: a thin-plate spline through the 68 landmarks, a synthetic forehead arc and a small cap
rounding the nose tip, sampled on a lattice inside the face outline and triangulated; the normals are the spline's
analytic ones at each vertex. Coordinates follow insightface's 3D landmarks (``1k3d68`` and ``meanshape_68.pkl``):
x to image right, y DOWN, z toward the camera, the face frontal and upright.

The outline is the jaw contour (points 0..16, which run round the face from one ear to the other) closed by a
half-ellipse over the forehead from point 16 back to point 0. FLAME's face mask reaches up to about the hairline; the
arc's top sits ``FOREHEAD_HEIGHT`` = 0.75 eye-to-mouth distances above the mean brow line (on the mean shape: 0.42
units above brows at y = -0.47, i.e. y = -0.88, with eye-to-mouth = 0.556 and the chin at y = +0.58), which is about
5 cm on an adult face whose eye-to-mouth distance is ~7 cm. Eyes and mouth are closed: the spline passes smoothly
through the lid and lip points (EMOCA's coarse mesh is closed there too).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidInputError
from ..faces.landmarks import check_landmarks, mean_shape

JAW = slice(0, 17)
BROWS = slice(17, 27)
GLABELLA = 27                # top of the nose bridge, between the brows
NOSE_TIP = 30

FOREHEAD_HEIGHT = 0.75       # arc top above the mean brow line, in eye-to-mouth distances (see module docstring)
FOREHEAD_SETBACK = 0.25      # the hairline lies this far behind the glabella (z), in eye-to-mouth distances
NOSE_CAP_OFFSET = 0.06       # four points this far (eye-to-mouth units) round the nose tip, on a sphere of radius...
NOSE_CAP_RADIUS = 0.2        # ...this: through 68 points alone the spline makes the tip a sharp cone
ARC_POINTS = 15              # synthetic points on the forehead arc (the spline's boundary values there)
SPLINE_SMOOTHING = 3e-3      # small: on the mean shape the spline passes within 0.011 eye-to-mouth of every point,
                             # but it irons out the dimples an exact fit puts at the eye corners and lips
GRID_SIZE = 100              # lattice samples along the outline's longer side


@dataclass(frozen=True)
class FaceSurface:
    """A triangulated height-field face, frontal, in the frame of the landmarks it was built from."""

    vertices: np.ndarray    # [V, 3] float64
    triangles: np.ndarray   # [F, 3] int64; each has a positive signed area in (x, y) (y down): its front faces +z
    normals: np.ndarray     # [V, 3] float64 unit normals of the smooth surface, z > 0 (toward the camera)
    landmarks: np.ndarray   # [68, 3] the points the surface was fitted through
    outline: np.ndarray     # [K, 2] the closed face outline in (x, y), jaw first, then the forehead arc
    height: "ThinPlateSpline"   # z(x, y) of the surface (defined beyond the outline too: the generic head blends it)


def eye_to_mouth(landmarks: np.ndarray) -> float:
    """Distance in (x, y) between the eye centres' midpoint and the mouth corners' midpoint (FFHQ's eye_to_mouth)."""
    eyes = (landmarks[36:42, :2].mean(0) + landmarks[42:48, :2].mean(0)) / 2
    mouth = (landmarks[48, :2] + landmarks[54, :2]) / 2
    return float(np.linalg.norm(mouth - eyes))


def build_face_surface(landmarks: np.ndarray | None = None, grid_size: int = GRID_SIZE) -> FaceSurface:
    """The smooth face surface through ``landmarks`` (frontal, upright; None = insightface's mean shape)."""
    if isinstance(grid_size, bool) or not isinstance(grid_size, (int, np.integer)) or not 10 <= grid_size <= 1000:
        raise InvalidInputError(f"grid_size must be an integer from 10 to 1000, got {grid_size!r}.")
    if landmarks is None and grid_size == GRID_SIZE:
        return _mean_surface()
    points = mean_shape() if landmarks is None else check_landmarks(landmarks)
    scale = eye_to_mouth(points)
    if scale < 1e-9 or np.linalg.norm(points[16, :2] - points[0, :2]) < 0.1 * scale:
        raise InvalidInputError("The landmarks are degenerate: eyes and mouth, or the two ends of the jaw, coincide.")
    arc = _forehead_arc(points, scale)
    spline = ThinPlateSpline(np.vstack([points, arc, _nose_cap(points, scale)]), scale)
    outline = np.vstack([points[JAW, :2], arc[:, :2]])
    xy, triangles = _triangulate(outline, grid_size)
    if len(triangles) < grid_size:
        raise InvalidInputError("The landmarks do not outline a face (the jaw contour and forehead enclose no area).")
    return FaceSurface(vertices=np.column_stack([xy, spline(xy)]), triangles=triangles,
                       normals=_normals(spline.gradient(xy)), landmarks=points.copy(), outline=outline, height=spline)


@functools.lru_cache(maxsize=1)
def _mean_surface() -> FaceSurface:
    surface = build_face_surface(mean_shape(), GRID_SIZE)
    for array in (surface.vertices, surface.triangles, surface.normals, surface.landmarks, surface.outline):
        array.flags.writeable = False   # shared by every caller
    return surface


# ------------------------------------------------------------------------------------------------- forehead

def _forehead_frame(points: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """Centre, axes and semi-axes of the forehead half-ellipse through jaw points 0 and 16."""
    left, right = points[0, :2], points[16, :2]
    centre = (left + right) / 2
    across = (right - left) / np.linalg.norm(right - left)
    up = np.array([across[1], -across[0]])      # perpendicular, toward the forehead (y is down)
    half_width = float(np.linalg.norm(right - left)) / 2
    brow_line = points[BROWS, :2].mean(0)
    half_height = float(np.dot(brow_line - centre, up)) + FOREHEAD_HEIGHT * scale
    return centre, across, up, half_width, half_height


def _forehead_arc(points: np.ndarray, scale: float) -> np.ndarray:
    """[ARC_POINTS, 3] points on the arc from jaw point 16 over the forehead to jaw point 0 (both excluded)."""
    centre, across, up, a, b = _forehead_frame(points, scale)
    theta = np.linspace(0.0, np.pi, ARC_POINTS + 2)[1:-1]
    xy = centre + np.outer(a * np.cos(theta), across) + np.outer(b * np.sin(theta), up)
    # Depth: from each side's jaw end up to the hairline, which lies behind the glabella.
    side = points[16, 2] + (points[0, 2] - points[16, 2]) * theta / np.pi
    top = points[GLABELLA, 2] - FOREHEAD_SETBACK * scale
    z = side + (top - side) * np.sin(theta)
    return np.column_stack([xy, z])


def _nose_cap(points: np.ndarray, scale: float) -> np.ndarray:
    """[4, 3] points round the nose tip on a sphere touching it, so the tip is rounded and faces straight ahead."""
    offset = NOSE_CAP_OFFSET * scale
    tip = points[NOSE_TIP]
    drop = offset ** 2 / (2 * NOSE_CAP_RADIUS * scale)
    around = tip[:2] + offset * np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    return np.column_stack([around, np.full(4, tip[2] - drop)])


# ---------------------------------------------------------------------------------------------- height field

class ThinPlateSpline:
    """z(x, y) = sum_i w_i r_i^2 log r_i + a0 + a1 x + a2 y through ``points`` ([N, 3]), with analytic gradients.

    Fitted in eye-to-mouth units (``scale``) so that the smoothing (added to the kernel's diagonal, as in scipy's
    RBFInterpolator) means the same for any face size.
    """

    def __init__(self, points: np.ndarray, scale: float, smoothing: float = SPLINE_SMOOTHING) -> None:
        self.scale = float(scale)
        self.origin = points[:, :2].mean(0)
        self.centres = (points[:, :2] - self.origin) / self.scale
        n = len(points)
        system = np.zeros((n + 3, n + 3))
        system[:n, :n] = _tps_kernel(_distances(self.centres, self.centres)) + smoothing * np.eye(n)
        affine_terms = np.column_stack([np.ones(n), self.centres])
        system[:n, n:] = affine_terms
        system[n:, :n] = affine_terms.T
        rhs = np.concatenate([points[:, 2] / self.scale, np.zeros(3)])
        solution = np.linalg.solve(system, rhs)
        self.weights, self.affine = solution[:n], solution[n:]

    def __call__(self, xy: np.ndarray) -> np.ndarray:
        local = (np.asarray(xy, np.float64) - self.origin) / self.scale
        z = _tps_kernel(_distances(local, self.centres)) @ self.weights
        return (z + self.affine[0] + local @ self.affine[1:]) * self.scale

    def gradient(self, xy: np.ndarray) -> np.ndarray:
        """[N, 2] (dz/dx, dz/dy); d(r^2 log r)/dx = (2 log r + 1)(x - cx), which is 0 at r = 0."""
        local = (np.asarray(xy, np.float64) - self.origin) / self.scale
        offsets = local[:, None, :] - self.centres[None, :, :]
        r = np.sqrt((offsets ** 2).sum(-1))
        with np.errstate(divide="ignore"):
            factor = np.where(r > 0, 2.0 * np.log(np.where(r > 0, r, 1.0)) + 1.0, 0.0)
        return np.einsum("nc,ncd->nd", factor * self.weights, offsets) + self.affine[1:]


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise distances, by |a|² + |b|² - 2ab (one matrix product: the generic head evaluates many points)."""
    squared = (a ** 2).sum(1)[:, None] + (b ** 2).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(squared, 0.0))


def _tps_kernel(r: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(r > 0, r * r * np.log(np.where(r > 0, r, 1.0)), 0.0)


def _normals(gradient: np.ndarray) -> np.ndarray:
    """Unit normals (-dz/dx, -dz/dy, 1) of a height field: perpendicular to both tangents, facing +z."""
    n = np.column_stack([-gradient[:, 0], -gradient[:, 1], np.ones(len(gradient))])
    return n / np.linalg.norm(n, axis=1, keepdims=True)


# ----------------------------------------------------------------------------------------------- triangulation

def _resample_closed(polygon: np.ndarray, spacing: float) -> np.ndarray:
    """Points every ~``spacing`` along a closed polygon, keeping its corners."""
    out = []
    for start, end in zip(polygon, np.roll(polygon, -1, axis=0)):
        count = max(1, int(np.ceil(np.linalg.norm(end - start) / spacing)))
        t = np.arange(count)[:, None] / count
        out.append(start + t * (end - start))
    return np.vstack(out)


def points_in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd rule for many points at once: [N] bool."""
    x, y = points[:, 0:1], points[:, 1:2]
    x0, y0 = polygon[:, 0], polygon[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    crosses = (y0 > y) != (y1 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_at = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    return (crosses & (x < x_at)).sum(axis=1) % 2 == 1


def _lattice(low: np.ndarray, high: np.ndarray, spacing: float) -> np.ndarray:
    """A triangular lattice over a box: unlike a square grid it has no four co-circular points, which make qhull's
    Delaunay several times slower, and its triangles are equilateral."""
    gy = np.arange(low[1] + spacing / 2, high[1], spacing * np.sqrt(3) / 2)
    gx = np.arange(low[0] + spacing / 4, high[0], spacing)
    shift = (np.arange(len(gy)) % 2)[:, None] * spacing / 2
    xs = gx[None, :] + shift
    return np.stack([xs, np.broadcast_to(gy[:, None], xs.shape)], axis=-1).reshape(-1, 2)


def _triangulate(outline: np.ndarray, grid_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Lattice points inside the outline plus the outline itself, Delaunay-triangulated and clipped to the outline."""
    from scipy.spatial import Delaunay, cKDTree

    low, high = outline.min(0), outline.max(0)
    spacing = float((high - low).max()) / (grid_size - 1)
    boundary = _resample_closed(outline, spacing)
    grid = _lattice(low, high, spacing)
    grid = grid[points_in_polygon(grid, outline)]
    # Drop grid points hugging the boundary: they would only make slivers.
    grid = grid[cKDTree(boundary).query(grid)[0] > 0.5 * spacing]
    xy = np.vstack([boundary, grid])
    triangles = Delaunay(xy).simplices.astype(np.int64)
    corners = xy[triangles]
    triangles = triangles[points_in_polygon(corners.mean(1), outline)]
    # Orient every triangle front-facing: positive signed area in (x, y) with y down.
    corners = xy[triangles]
    e1, e2 = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
    negative = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0] < 0
    triangles[negative] = triangles[negative][:, [0, 2, 1]]
    area = np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
    return xy, triangles[area > 1e-9 * spacing ** 2]     # qhull leaves a few flat slivers on the straight boundary
