"""Realistic 68-point 3D faces for pose tests: a face is never an exact rigid copy of insightface's mean shape.

A real photo's 1k3d68 landmarks differ from the posed mean shape by the person's own shape and expression and by the
model's noise; insightface's pose fit then gives rows that are not exactly orthogonal. These helpers make such faces.
"""

from __future__ import annotations

import numpy as np

from builders.onnx_landmarks import ASTRONAUT_ORIGIN, ASTRONAUT_SCALE

LIPS = slice(48, 68)
OPEN_MOUTH_SHIFT = 0.05      # mean-shape units each lip point moves away from the mouth's centre line (~4% of height)
NOISE_OF_FACE_WIDTH = 0.001  # landmark noise: 0.1% of the face width, a small fraction of a real model's error


def insightface_mean_shape() -> np.ndarray:
    from insightface.data import get_object

    return np.asarray(get_object("meanshape_68.pkl"), np.float64).reshape(68, 3)


def open_mouth_shape() -> np.ndarray:
    """The mean face with the lips parted: upper lip up, lower lip down (a non-rigid change of shape)."""
    shape = insightface_mean_shape()
    lips = shape[LIPS, 1]
    shape[LIPS, 1] += OPEN_MOUTH_SHIFT * np.sign(lips - lips.mean())
    return shape


def posed_landmarks(shape: np.ndarray, rotation: np.ndarray, *, noise: float = 0.0, seed: int = 0,
                    scale: float = ASTRONAUT_SCALE, origin=ASTRONAUT_ORIGIN) -> np.ndarray:
    """``scale * R @ p + origin`` for every point, plus Gaussian noise of ``noise`` times the posed face's width."""
    posed = scale * np.asarray(shape, np.float64) @ np.asarray(rotation, np.float64).T + np.asarray(origin)
    width = np.ptp(posed[:, 0])
    return posed + np.random.default_rng(seed).normal(0.0, noise * width, posed.shape)
