"""insightface's 68-point 3D landmark model (antelopev2's ``1k3d68.onnx``), loaded on demand for an analyzer."""

from __future__ import annotations

import functools
import weakref
from typing import Any, Sequence

import numpy as np

from ..errors import InvalidInputError, WrongModelError
from ..validation import float_array
from ..weights import LANDMARKS_3D, ModelRoots, find_weight
from .analysis import FaceAnalyzer
from .onnx_models import check_active_provider, check_providers, ctx_id, load_onnx, routed_as

LANDMARK_TASK = "landmark_3d_68"


NUM_LANDMARKS = 68


def mean_shape() -> np.ndarray:
    """insightface's 68-point mean 3D face (``meanshape_68.pkl``, loaded from the installed package), float64."""
    return _mean_shape_cached().copy()


@functools.lru_cache(maxsize=1)
def _mean_shape_cached() -> np.ndarray:
    from insightface.data import get_object

    shape = np.array(get_object("meanshape_68.pkl"), np.float64).reshape(NUM_LANDMARKS, 3)
    shape.flags.writeable = False
    return shape


def check_landmarks(landmarks: object, what: str = "landmarks") -> np.ndarray:
    """Return ``landmarks`` as a finite float64 [68, 3] array, or raise InvalidInputError."""
    array = float_array(landmarks, what)
    if array.shape != (NUM_LANDMARKS, 3):
        raise InvalidInputError(f"{what} must be 68 3D points (shape [68, 3]), got shape {array.shape}.")
    if not np.isfinite(array).all():
        raise InvalidInputError(f"{what} contain NaN or infinite values.")
    return array


def load_landmark_model(roots: ModelRoots, providers: Sequence[Any], *, provider_options: Any = None,
                        strict_providers: bool = False) -> Any:
    """Find and load antelopev2's ``1k3d68.onnx`` (insightface's ``Landmark``); never downloads anything."""
    check_providers(providers)
    path = find_weight(LANDMARKS_3D, roots.insightface)
    model = load_onnx(path, providers, provider_options)
    if getattr(model, "taskname", None) != LANDMARK_TASK:
        raise WrongModelError(
            f"{path} is not insightface's 3D face landmark model: insightface reads it as {routed_as(model)}. It "
            f"must be antelopev2's 1k3d68.onnx (68 3D landmarks); {LANDMARKS_3D.where_to_get()}."
        )
    check_active_provider(model, path, providers, strict_providers)
    model.prepare(ctx_id(providers))
    return model


# 1k3d68 sessions loaded on demand for an analyzer, freed with it (the ARCFACE loader loads only what embedding needs).
_LANDMARK_MODELS: "weakref.WeakKeyDictionary[FaceAnalyzer, Any]" = weakref.WeakKeyDictionary()


def landmark_model_for(analyzer: FaceAnalyzer, roots: ModelRoots) -> Any:
    """The 1k3d68 model for ``analyzer``'s providers, loaded the first time a pose is asked of it."""
    if analyzer not in _LANDMARK_MODELS:
        _LANDMARK_MODELS[analyzer] = load_landmark_model(roots, analyzer.providers)
    return _LANDMARK_MODELS[analyzer]
