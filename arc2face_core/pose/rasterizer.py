"""A small vectorised z-buffered triangle rasteriser (numpy), for orthographic renders of a face surface.

Screen convention: x to the right, y DOWN, in continuous pixel units; pixel (row r, column c) is sampled at its centre
(c + 0.5, r + 0.5). Depth: larger = nearer the camera (z toward the viewer), so the z-buffer keeps the largest.
Front faces have a positive signed area ``(x1-x0)(y2-y0) - (x2-x0)(y1-y0)`` in these coordinates (they run clockwise
on screen); with ``cull_back_faces`` the others are dropped.

No Python loop runs per pixel or per triangle: triangles are grouped by the size of their pixel bounding box (powers
of two), every candidate pixel of a group is tested at once with edge functions, and the nearest fragment per pixel
wins after one sort. Barycentric weights in screen space are exact for an orthographic projection (no perspective
correction needed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InvalidInputError

INSIDE_EPS = 1e-9            # pixels exactly on a shared edge go to both triangles: no cracks
MAX_CANDIDATES = 1 << 22     # candidate pixels tested per step, to bound memory on huge triangles


@dataclass(frozen=True)
class Fragments:
    """What covers each pixel: the nearest triangle, its barycentric weights there, and the depth."""

    triangle: np.ndarray    # [H, W] int64, index into the triangles given; -1 = background
    bary: np.ndarray        # [H, W, 3] float64 weights of the triangle's three corners (0 on background)
    depth: np.ndarray       # [H, W] float64, larger = nearer; -inf on background

    @property
    def covered(self) -> np.ndarray:
        return self.triangle >= 0


def rasterize(vertices: np.ndarray, triangles: np.ndarray, height: int, width: int, *,
              cull_back_faces: bool = False) -> Fragments:
    """Rasterise ``triangles`` ([F, 3] indices) over ``vertices`` ([V, 3]: screen x, screen y, depth)."""
    verts = np.asarray(vertices, np.float64)
    tris = np.asarray(triangles, np.int64)
    if verts.ndim != 2 or verts.shape[1] != 3 or tris.ndim != 2 or tris.shape[1] != 3:
        raise InvalidInputError(f"Expected vertices [V, 3] and triangles [F, 3], got {verts.shape} and {tris.shape}.")
    if not np.isfinite(verts).all():
        raise InvalidInputError("The vertices to rasterise contain NaN or infinite values.")
    corners = verts[tris]                                    # [F, 3 corners, xyz]
    x, y = corners[..., 0], corners[..., 1]
    area = (x[:, 1] - x[:, 0]) * (y[:, 2] - y[:, 0]) - (x[:, 2] - x[:, 0]) * (y[:, 1] - y[:, 0])
    box = _pixel_boxes(x, y, height, width)
    keep = (area > 0) if cull_back_faces else (area != 0)
    keep &= (box[:, 1] >= box[:, 0]) & (box[:, 3] >= box[:, 2])
    ids = np.flatnonzero(keep)

    parts = [_fragments(corners[chunk], area[chunk], box[chunk], chunk, width)
             for chunk in _chunks(ids, box[ids])]
    return _resolve(parts, height, width)


def interpolate(fragments: Fragments, triangles: np.ndarray, attributes: np.ndarray) -> np.ndarray:
    """Per-pixel barycentric interpolation of per-vertex ``attributes`` [V, C]: [H, W, C], zeros on background."""
    attributes = np.asarray(attributes, np.float64)
    out = np.zeros(fragments.triangle.shape + (attributes.shape[1],), np.float64)
    covered = fragments.covered
    corners = np.asarray(triangles, np.int64)[fragments.triangle[covered]]      # [N, 3]
    out[covered] = np.einsum("nk,nkc->nc", fragments.bary[covered], attributes[corners])
    return out


def _pixel_boxes(x: np.ndarray, y: np.ndarray, height: int, width: int) -> np.ndarray:
    """[F, 4] inclusive pixel ranges (x_first, x_last, y_first, y_last) whose centres can fall in each triangle."""
    x_first = np.ceil(x.min(1) - 0.5)
    x_last = np.floor(x.max(1) - 0.5)
    y_first = np.ceil(y.min(1) - 0.5)
    y_last = np.floor(y.max(1) - 0.5)
    box = np.stack([np.clip(x_first, 0, width), np.clip(x_last, -1, width - 1),
                    np.clip(y_first, 0, height), np.clip(y_last, -1, height - 1)], axis=1)
    return box.astype(np.int64)


def _chunks(ids: np.ndarray, box: np.ndarray) -> list[np.ndarray]:
    """Groups of triangles with boxes of similar size (powers of two), each small enough to test in one step."""
    side = np.maximum(box[:, 1] - box[:, 0], box[:, 3] - box[:, 2]) + 1
    level = np.ceil(np.log2(side)).astype(np.int64)
    groups = []
    for value in np.unique(level):
        members = ids[level == value]
        per_step = max(1, MAX_CANDIDATES // int(2 ** value) ** 2)
        groups += [members[i:i + per_step] for i in range(0, len(members), per_step)]
    return groups


def _fragments(corners: np.ndarray, area: np.ndarray, box: np.ndarray, ids: np.ndarray, width: int):
    """All (pixel, depth, triangle, weights) fragments of one group of triangles."""
    span_x = int((box[:, 1] - box[:, 0]).max()) + 1
    span_y = int((box[:, 3] - box[:, 2]).max()) + 1
    px = box[:, 0, None, None] + np.arange(span_x)[None, None, :]           # [n, 1, span_x]
    py = box[:, 2, None, None] + np.arange(span_y)[None, :, None]           # [n, span_y, 1]
    cx, cy = px + 0.5, py + 0.5
    x = corners[:, :, 0, None, None]
    y = corners[:, :, 1, None, None]
    a = area[:, None, None]
    # Edge functions: the weight of corner k is the signed area opposite it, over the whole area.
    w0 = ((x[:, 2] - x[:, 1]) * (cy - y[:, 1]) - (y[:, 2] - y[:, 1]) * (cx - x[:, 1])) / a
    w1 = ((x[:, 0] - x[:, 2]) * (cy - y[:, 2]) - (y[:, 0] - y[:, 2]) * (cx - x[:, 2])) / a
    w2 = 1.0 - w0 - w1
    inside = ((w0 >= -INSIDE_EPS) & (w1 >= -INSIDE_EPS) & (w2 >= -INSIDE_EPS)
              & (px <= box[:, 1, None, None]) & (py <= box[:, 3, None, None]))
    tri, row, col = np.nonzero(inside)
    weights = np.stack([w0[tri, row, col], w1[tri, row, col], w2[tri, row, col]], axis=1)
    depth = np.einsum("nk,nk->n", weights, corners[tri, :, 2])
    pixel = (box[tri, 2] + row) * width + (box[tri, 0] + col)
    return pixel, depth, ids[tri], weights


def _resolve(parts: list, height: int, width: int) -> Fragments:
    """The z-buffer: per pixel, keep the fragment with the largest depth (ties: the first one given)."""
    triangle = np.full(height * width, -1, np.int64)
    bary = np.zeros((height * width, 3), np.float64)
    depth = np.full(height * width, -np.inf, np.float64)
    if parts:
        pixel = np.concatenate([p[0] for p in parts])
        frag_depth = np.concatenate([p[1] for p in parts])
        order = np.lexsort((-frag_depth, pixel))             # by pixel, nearest first (stable)
        pixel = pixel[order]
        first = np.ones(len(pixel), bool)
        first[1:] = pixel[1:] != pixel[:-1]
        chosen = order[first]
        triangle[pixel[first]] = np.concatenate([p[2] for p in parts])[chosen]
        bary[pixel[first]] = np.concatenate([p[3] for p in parts])[chosen]
        depth[pixel[first]] = frag_depth[chosen]
    return Fragments(triangle=triangle.reshape(height, width), bary=bary.reshape(height, width, 3),
                     depth=depth.reshape(height, width))
