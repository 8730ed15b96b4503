"""FFHQ alignment (NVlabs' ``image_align``, as Arc2Face's ``utils.py`` uses it) from 68 iBUG-ordered landmarks."""

from __future__ import annotations

import numpy as np


def ffhq_quad(points_2d: np.ndarray) -> np.ndarray:
    """FFHQ ``image_align``'s crop quad from 68 2D landmarks: [top-left, bottom-left, bottom-right, top-right]."""
    lm = np.asarray(points_2d, np.float64)[:, :2]
    eye_left, eye_right = lm[36:42].mean(0), lm[42:48].mean(0)
    eye_avg, eye_to_eye = (eye_left + eye_right) * 0.5, eye_right - eye_left
    mouth_avg = (lm[48] + lm[54]) * 0.5
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def quad_to_square(quad: np.ndarray, size: int) -> np.ndarray:
    """2x3 affine map sending quad[0] to (0, 0), quad[1] to (0, size) and quad[3] to (size, 0) (pixel corners)."""
    edges = np.column_stack([quad[3] - quad[0], quad[1] - quad[0]])
    linear = size * np.linalg.inv(edges)
    return np.column_stack([linear, -linear @ quad[0]])
