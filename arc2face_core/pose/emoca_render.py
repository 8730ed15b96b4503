"""The EMOCA-fork's coarse normal render, the image Arc2Face's pose ControlNet was trained on (docs/pose_hints.md,
'The renderer').

* Normals: per vertex, the sum over its faces of the corner's unnormalised cross product ``(v_next - v) x (v_prev - v)``
  (twice the face's area times its normal), normalised (``F.normalize``, eps 1e-6); taken on the view-frame mesh (the
  posed world vertices: x right, y UP, z toward the viewer). Whatever the winding of the faces, they are turned
  outward first (by the mesh's signed volume), so a frontal head's nose tip has n_z > 0.
* Raster: the whole mesh, a z-buffer keeping the nearest surface, no back-face culling, one face per pixel, no blur.
* Pixel: the barycentric blend of the three unit vertex normals, NOT renormalised (|n| <= 1 inside faces), times the
  coverage (0 on the background).
* Colour: ``uint8(clamp(n * 0.5 + 0.5, 0, 1) * 255)``, truncated, so the background (n = 0) is 127; RGB = (nx, ny, nz)
  with +y up (a face's forehead is green-ish, its right cheek in the image red-ish).
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidInputError
from .camera import Placement
from .flame import outward_faces
from .rasterizer import interpolate, rasterize

HINT_SIZE = 512
BACKGROUND_VALUE = 127     # uint8(0.5 * 255), truncated
NORMALIZE_EPS = 1e-6       # torch.nn.functional.normalize's default, as the reference uses it


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """[V, 3] unit vertex normals: area-weighted face normals summed per vertex (EMOCA's ``vertex_normals``)."""
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    normals = np.zeros_like(v)
    for corner in range(3):
        here, after, before = f[:, corner], f[:, (corner + 1) % 3], f[:, (corner + 2) % 3]
        cross = np.cross(v[after] - v[here], v[before] - v[here])
        for axis in range(3):       # per-vertex sums (bincount: the same sums as np.add.at, several times faster)
            normals[:, axis] += np.bincount(here, cross[:, axis], minlength=len(v))
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return normals / np.maximum(length, NORMALIZE_EPS)


def encode_normals(normals: np.ndarray) -> np.ndarray:
    """``uint8(clamp(n * 0.5 + 0.5, 0, 1) * 255)`` with the reference's truncation."""
    return (np.clip(normals * 0.5 + 0.5, 0.0, 1.0) * 255).astype(np.uint8)


def render_normals(placement: Placement, faces: np.ndarray, size: int = HINT_SIZE) -> np.ndarray:
    """The hint of one placed mesh: uint8 [size, size, 3], background 127."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 16 <= size <= 4096:
        raise InvalidInputError(f"size must be an integer between 16 and 4096, got {size!r}.")
    faces = np.asarray(faces, np.int64)
    view = np.asarray(placement.view_vertices, np.float64)
    if not (np.isfinite(view).all() and np.isfinite(placement.pixels).all() and np.isfinite(placement.depth).all()):
        raise InvalidInputError("The posed head has NaN or infinite coordinates; check the FLAME parameters.")
    faces = outward_faces(view, faces)
    normals = vertex_normals(view, faces)
    screen = np.column_stack([placement.pixels, placement.depth])
    fragments = rasterize(screen, faces, size, size)
    blended = interpolate(fragments, faces, normals)      # zeros where nothing is drawn: n = 0 = the background
    return encode_normals(blended)


def coverage(image: np.ndarray) -> np.ndarray:
    """[H, W] bool: pixels of a hint that are not the exact background."""
    return (np.asarray(image) != BACKGROUND_VALUE).any(axis=-1)
