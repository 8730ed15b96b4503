"""Meshing the generic head's signed-distance description once: marching cubes on a narrow band, then cleaned.

``skimage.measure.marching_cubes`` needs a dense grid, but the head's value only matters near its skin: it is
evaluated on a coarse grid first, then exactly only on the fine voxels near the surface (elsewhere the coarse value's
sign is all marching cubes reads). The mesh keeps its largest connected piece (stray specks from the thin slits are
dropped), its vertices are pulled onto the zero level by one Newton step and evened out (twice: halfway to their
neighbours' mean, then back onto the surface), and its faces are wound outward. Eyeballs
are added as separate latitude-longitude spheres.
"""

from __future__ import annotations

import numpy as np

from .head_anatomy import EYEBALL_RADIUS, NECK_BOTTOM, eyeball_centres, head_distance

# Sample positions along each axis (mm): fine where the face, eyes, mouth and ears are, coarser over the smooth crown,
# the back of the head and the neck (marching cubes works on the grid's indices; the positions map them back).
AXIS_STEPS = (
    ((-112.0, -100.0, 4.8), (-100.0, -62.0, 2.4), (-62.0, -50.0, 3.2), (-50.0, 50.0, 1.6), (50.0, 62.0, 3.2),
     (62.0, 100.0, 2.4), (100.0, 112.0, 4.8)),                              # x: ears, cheeks, the face's features
    ((NECK_BOTTOM[1] - 10.0, -120.0, 9.6), (-120.0, -80.0, 2.4), (-80.0, -52.0, 1.25), (-52.0, -14.0, 1.6),
     (-14.0, 14.0, 1.25), (14.0, 40.0, 2.0), (40.0, 126.0, 3.2)),          # y: neck, chin, lips, nose and cheeks,
    # eyes, brow, crown
    ((-200.0, -110.0, 4.8), (-110.0, -55.0, 2.4), (-55.0, -10.0, 4.0), (-10.0, 55.0, 1.6), (55.0, 66.0, 3.2)),
    # z: back of the head, ears, the sides, the face's front
)
COARSE = 3                   # fine samples per coarse step
RELAX_ROUNDS, RELAX_STEP = 2, 0.5
EYE_RINGS, EYE_SEGMENTS = 24, 48


def axis_samples(pieces) -> np.ndarray:
    """Increasing sample positions from (start, stop, step) pieces laid end to end."""
    out = [np.arange(start, stop, step) for start, stop, step in pieces]
    out.append([pieces[-1][1]])
    return np.concatenate(out)


def mesh_surface(distance=head_distance, axis_steps=AXIS_STEPS) -> tuple[np.ndarray, np.ndarray]:
    """(vertices [V, 3], faces [F, 3]) of the zero level of ``distance`` on the sample grid, wound outward."""
    from skimage.measure import marching_cubes

    axes = [axis_samples(pieces) for pieces in axis_steps]
    shape = tuple(len(a) for a in axes)
    coarse_index = [np.unique(np.append(np.arange(0, n, COARSE), n - 1)) for n in shape]
    coarse_axes = [a[i] for a, i in zip(axes, coarse_index)]
    coarse = distance(_grid(coarse_axes)).reshape([len(a) for a in coarse_axes])
    # Every fine sample takes the value of the coarse sample at or before it; near the surface it is evaluated.
    owner = [np.searchsorted(i, np.arange(n), side="right") - 1 for i, n in zip(coarse_index, shape)]
    fine = coarse[np.ix_(*owner)].astype(np.float32)
    reach = [np.diff(a, append=a[-1])[o] for a, o in zip(coarse_axes, owner)]     # coarse step at each sample
    reach = np.sqrt(reach[0][:, None, None] ** 2 + reach[1][None, :, None] ** 2 + reach[2][None, None, :] ** 2)
    band = np.abs(fine) < 1.5 * reach + 2.0
    index = np.nonzero(band)
    fine[index] = distance(np.stack([a[i] for a, i in zip(axes, index)], -1))
    vertices, faces, _, _ = marching_cubes(fine, level=0.0, mask=band)
    vertices = np.stack([np.interp(vertices[:, k], np.arange(len(a)), a) for k, a in enumerate(axes)], -1)
    vertices, faces = largest_piece(vertices, faces.astype(np.int64))
    vertices = _onto_surface(vertices, distance, 0.6)
    for _ in range(RELAX_ROUNDS):
        vertices = _onto_surface(_relaxed(vertices, faces), distance, 0.6)
    return vertices, outward(vertices, faces)


def _relaxed(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Each vertex moved halfway to the mean of its neighbours: marching cubes leaves slivers and uneven fans whose
    area-weighted normals are noisy; evened out (and put back on the surface) they follow the surface's."""
    from scipy.sparse import coo_matrix

    n = len(vertices)
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    adjacency = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n)).tocsr()
    adjacency = ((adjacency + adjacency.T) > 0).astype(np.float64)
    mean = adjacency @ vertices / np.maximum(adjacency.sum(1), 1.0)
    return vertices + RELAX_STEP * (np.asarray(mean) - vertices)


def _grid(axes) -> np.ndarray:
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)


def largest_piece(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The connected piece with the most faces, its vertices renumbered."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(vertices)
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]]])
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    keep = np.bincount(label[faces[:, 0]]).argmax()
    faces = faces[label[faces[:, 0]] == keep]
    used = np.unique(faces)
    renumber = np.full(n, -1, np.int64)
    renumber[used] = np.arange(len(used))
    return vertices[used], renumber[faces]


def _onto_surface(vertices: np.ndarray, distance, limit: float) -> np.ndarray:
    """One Newton step toward the zero level along the numerical gradient, at most ``limit`` mm."""
    h = 0.05
    value = distance(vertices)
    gradient = np.stack([(distance(vertices + h * e) - distance(vertices - h * e)) / (2 * h) for e in np.eye(3)], 1)
    step = value[:, None] * gradient / np.maximum((gradient ** 2).sum(1, keepdims=True), 1e-12)
    length = np.linalg.norm(step, axis=1, keepdims=True)
    return vertices - step * np.minimum(1.0, limit / np.maximum(length, 1e-12))


def signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    corners = vertices[faces]
    return float(np.einsum("fi,fi->f", corners[:, 0], np.cross(corners[:, 1], corners[:, 2])).sum() / 6.0)


def outward(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    faces = np.asarray(faces, np.int64)
    return faces if signed_volume(vertices, faces) > 0 else faces[:, ::-1].copy()


def uv_sphere(centre: np.ndarray, radius: float, rings: int = EYE_RINGS,
              segments: int = EYE_SEGMENTS) -> tuple[np.ndarray, np.ndarray]:
    """A closed latitude-longitude sphere (poles on the y axis), wound outward."""
    lat = np.linspace(-np.pi / 2, np.pi / 2, rings + 1)[1:-1]
    lon = np.linspace(-np.pi, np.pi, segments, endpoint=False)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    ring = np.stack([np.cos(la) * np.sin(lo), np.sin(la), np.cos(la) * np.cos(lo)], -1).reshape(-1, 3)
    unit = np.vstack([[0.0, -1.0, 0.0], ring, [0.0, 1.0, 0.0]])
    s = np.arange(segments)
    s1 = (s + 1) % segments
    at = lambda r, k: 1 + r * segments + k   # noqa: E731
    top = len(unit) - 1
    faces = [np.stack([np.zeros(segments, np.int64), at(0, s1), at(0, s)], 1),
             np.stack([np.full(segments, top), at(rings - 2, s), at(rings - 2, s1)], 1)]
    r = np.arange(rings - 2)[:, None]
    faces.append(np.stack([at(r, s), at(r, s1), at(r + 1, s)], -1).reshape(-1, 3))
    faces.append(np.stack([at(r + 1, s), at(r, s1), at(r + 1, s1)], -1).reshape(-1, 3))
    vertices = centre + radius * unit
    return vertices, outward(vertices, np.vstack(faces))


def eyeballs() -> list[tuple[np.ndarray, np.ndarray]]:
    return [uv_sphere(centre, EYEBALL_RADIUS) for centre in eyeball_centres()]
