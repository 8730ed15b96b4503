"""A tiny ONNX stand-in for antelopev2's ``1k3d68.onnx`` (insightface's 3D landmark model), in the real layout.

The real file takes ``data`` ``[1, 3, 192, 192]`` and returns ``fc1`` ``[1, 3309]``: 1103 points x (x, y, z), of which
insightface keeps the last 68. ``insightface.model_zoo.get_model`` routes any 192x192 model to ``Landmark``, which sees
3309 outputs and becomes ``landmark_3d_68``. ``Landmark.get(img, face)`` then:

1. crops the image around the face box: centre c = box centre, scale s = 192 / (1.5 * max(w, h)), no rotation, so a
   pixel p lands at s * (p - c) + 96 in the crop (insightface's ``face_align.transform``);
2. runs the model on ``(crop - mean) / std`` (RGB); node names decide mean/std (see below);
3. decodes ``pred[:, 0:2] = (pred[:, 0:2] + 1) * 96``, ``pred[:, 2] *= 96``, maps x, y back through the inverse crop
   transform and multiplies z by that transform's scale, 1 / s.

``encode_landmarks`` inverts step 3 for a chosen box, so insightface's real code returns the chosen landmarks. The graph
is rigged: its output is that constant vector times a contrast gate computed from the input itself,
``sigmoid(GATE_GAIN * (std - GATE_STD))`` over the whole normalised crop; a face crop (the astronaut's has std ~0.45)
gives a gate of exactly 1.0 in float32, a uniform crop ~0 (every landmark collapses onto the crop centre).

Node names: none starts with ``Sub``/``Mul``/``_minus``/``_mul`` and there is no ``bn_data``, so insightface takes the
127.5/128 normalisation path. The gate only reads the crop's contrast, so that choice does not change the landmarks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from builders.onnx_faces import ASTRONAUT_FACE, _save

INPUT_NAME = "data"
OUTPUT_NAME = "fc1"
INPUT_SIZE = 192
NUM_POINTS = 1103             # 3309 / 3; insightface keeps the last 68
NUM_LANDMARKS = 68
GATE_STD = 0.05
GATE_GAIN = 200.0

# Where insightface's mean shape goes on the astronaut (512x512): its origin at (223, 124) (eye centres at y ~102, mouth
# at ~141 as measured for ASTRONAUT_FACE), 70 pixels per mean-shape unit (eye-to-mouth 0.556 units -> ~39 pixels).
ASTRONAUT_ORIGIN = (223.0, 124.0, 0.0)
ASTRONAUT_SCALE = 70.0


def crop_transform(bbox: tuple[float, float, float, float]) -> tuple[np.ndarray, float]:
    """insightface's Landmark crop for a face box: the 2x3 image->crop map and its scale."""
    x1, y1, x2, y2 = (float(v) for v in bbox)
    scale = INPUT_SIZE / (max(x2 - x1, y2 - y1) * 1.5)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half = INPUT_SIZE / 2
    matrix = np.array([[scale, 0.0, half - scale * cx], [0.0, scale, half - scale * cy]])
    return matrix, scale


def encode_landmarks(landmarks: np.ndarray, bbox: tuple[float, float, float, float]) -> np.ndarray:
    """The raw [68, 3] model output that insightface decodes into ``landmarks`` (image pixels) for ``bbox``."""
    matrix, scale = crop_transform(bbox)
    points = np.asarray(landmarks, np.float64)
    crop_xy = points[:, :2] @ matrix[:, :2].T + matrix[:, 2]
    half = INPUT_SIZE // 2
    return np.column_stack([crop_xy / half - 1.0, points[:, 2] * scale / half])


def posed_mean_shape(rotation: np.ndarray, *, origin=ASTRONAUT_ORIGIN, scale: float = ASTRONAUT_SCALE) -> np.ndarray:
    """insightface's mean shape posed as a photo's landmarks: scale * R @ p + origin for every point."""
    from insightface.data import get_object

    mean = np.asarray(get_object("meanshape_68.pkl"), np.float64)
    return scale * mean @ np.asarray(rotation, np.float64).T + np.asarray(origin, np.float64)


def build_rigged_landmarks(path: str | Path, landmarks: np.ndarray, bbox=ASTRONAUT_FACE.bbox) -> Path:
    """Write a 1k3d68-layout model whose output insightface decodes into ``landmarks`` for a face at ``bbox``."""
    template = np.zeros((NUM_POINTS, 3), np.float32)
    template[-NUM_LANDMARKS:] = encode_landmarks(landmarks, bbox)
    inits = [
        numpy_helper.from_array(template.reshape(1, -1), "landmark_template"),
        numpy_helper.from_array(np.array(GATE_STD, np.float32), "gate_std"),
        numpy_helper.from_array(np.array(GATE_GAIN, np.float32), "gate_gain"),
        numpy_helper.from_array(np.array(2.0, np.float32), "two"),
    ]
    nodes = [
        helper.make_node("ReduceMean", [INPUT_NAME], ["pixel_mean"], name="gate_mean", axes=[1, 2, 3], keepdims=0),
        helper.make_node("Pow", [INPUT_NAME, "two"], ["pixel_sq"], name="gate_square"),
        helper.make_node("ReduceMean", ["pixel_sq"], ["pixel_sq_mean"], name="gate_sq_mean", axes=[1, 2, 3],
                         keepdims=0),
        helper.make_node("Pow", ["pixel_mean", "two"], ["mean_sq"], name="gate_mean_sq"),
        helper.make_node("Sub", ["pixel_sq_mean", "mean_sq"], ["variance_raw"], name="gate_variance"),
        helper.make_node("Relu", ["variance_raw"], ["variance"], name="gate_clamp"),
        helper.make_node("Sqrt", ["variance"], ["std"], name="gate_std_dev"),
        helper.make_node("Sub", ["std", "gate_std"], ["margin"], name="gate_margin"),
        helper.make_node("Mul", ["margin", "gate_gain"], ["logit"], name="gate_logit"),
        helper.make_node("Sigmoid", ["logit"], ["gate"], name="gate_sigmoid"),
        helper.make_node("Mul", ["landmark_template", "gate"], [OUTPUT_NAME], name="gate_apply"),
    ]
    graph = helper.make_graph(
        nodes, "rigged_1k3d68",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [1, 3, INPUT_SIZE, INPUT_SIZE])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [1, NUM_POINTS * 3])],
        inits,
    )
    return _save(graph, path)


def build_landmarks_2d(path: str | Path, points: int = 106) -> Path:
    """A 192x192 model with 2 * ``points`` outputs: insightface routes it to Landmark as ``landmark_2d_106``
    (the layout of antelopev2's 2d106det.onnx), which the pose code must refuse."""
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", [INPUT_NAME], ["pooled"], name="pool", axes=[2, 3], keepdims=0),
         helper.make_node("MatMul", ["pooled", "weights"], [OUTPUT_NAME], name="head")],
        "landmarks_2d",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [1, 3, INPUT_SIZE, INPUT_SIZE])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [1, points * 2])],
        [numpy_helper.from_array(np.zeros((3, points * 2), np.float32), "weights")],
    )
    return _save(graph, path)
