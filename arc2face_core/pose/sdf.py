"""Signed-distance shapes for the generic head: a few primitives and smooth ways of joining and carving them.

Every function takes points ``[N, 3]`` (float64) and returns ``[N]`` values: negative inside, positive outside, about
the distance to the surface near it (the ellipsoid is the usual first-order estimate, exact on the surface and close
to it; nothing here needs more, since the head is meshed where the value changes sign). Smooth joins use the
polynomial smooth minimum: two surfaces closer than ``k`` blend into one fillet of about ``k`` instead of a crease.
"""

from __future__ import annotations

import numpy as np


def ellipsoid(points: np.ndarray, centre, axes) -> np.ndarray:
    """An ellipsoid with semi-axes ``axes`` (x, y, z) about ``centre``; the estimate k0 (k0 - 1) / k1 with
    k0 = |p / r| and k1 = |p / r²|, which is exact on the surface and has unit gradient there."""
    return egg(points, centre, axes, axes)


def egg(points: np.ndarray, centre, axes_positive, axes_negative) -> np.ndarray:
    """An ellipsoid whose semi-axis along each coordinate differs on its two sides (``axes_positive`` where the point
    lies on the + side of ``centre``): eight octants of ellipsoids that meet with a common tangent plane."""
    p = points - np.asarray(centre, np.float64)
    axes = np.where(p >= 0, np.asarray(axes_positive, np.float64), np.asarray(axes_negative, np.float64))
    k0 = np.linalg.norm(p / axes, axis=1)
    k1 = np.linalg.norm(p / axes ** 2, axis=1)
    estimate = np.where(k1 > 0, k0 * (k0 - 1.0) / np.maximum(k1, 1e-12), -np.min(axes, axis=1))
    # Far from a long, thin ellipsoid the estimate runs well under the distance; the bounding sphere's is a floor
    # (without it a smooth join would raise a ridge along the ellipsoid's plane, far from the shape).
    return np.maximum(estimate, np.linalg.norm(p, axis=1) - np.max(axes, axis=1))


def rounded_egg(points: np.ndarray, centre, axes_positive, axes_negative, power: float) -> np.ndarray:
    """``egg`` with the exponent ``power`` instead of 2 (a superellipsoid: above 2 flatter on its faces, fuller at
    its shoulders); the first-order estimate f / |grad f| of f = (sum |p_i / r_i|^power)^(1 / power) - 1."""
    p = points - np.asarray(centre, np.float64)
    axes = np.where(p >= 0, np.asarray(axes_positive, np.float64), np.asarray(axes_negative, np.float64))
    q = np.abs(p) / axes
    total = np.maximum((q ** power).sum(1), 1e-300)
    f = total ** (1.0 / power) - 1.0
    gradient = total[:, None] ** (1.0 / power - 1.0) * q ** (power - 1.0) / axes
    estimate = f / np.maximum(np.linalg.norm(gradient, axis=1), 1e-12)
    return np.maximum(estimate, np.linalg.norm(p, axis=1) - np.max(axes, axis=1))


def sphere(points: np.ndarray, centre, radius: float) -> np.ndarray:
    return np.linalg.norm(points - np.asarray(centre, np.float64), axis=1) - radius


def smooth_union(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """min(a, b) with a fillet of width ``k`` where the two surfaces meet."""
    h = np.maximum(k - np.abs(a - b), 0.0) / k
    return np.minimum(a, b) - h * h * k / 4.0


def smooth_subtract(a: np.ndarray, cut: np.ndarray, k: float) -> np.ndarray:
    """``a`` with ``cut`` carved out of it, edges rounded over about ``k``."""
    return -smooth_union(-a, cut, k)


def smooth_intersect(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    return -smooth_union(-a, -b, k)
