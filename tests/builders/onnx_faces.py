"""Tiny ONNX stand-ins for insightface's face detector and Arc2Face's ``arcface.onnx``, in the real layouts.

insightface's ``model_zoo.get_model`` picks a wrapper class from the graph's shapes alone, so these files go through
the same code paths as the real ones:

* ``build_recogniser``: one input ``input.1`` ``[batch, 3, 112, 112]`` and one output ``[batch, 512]`` -> ArcFaceONNX.
  Conv(stride 8) -> Relu -> Flatten -> Gemm with seeded random weights, so different crops give different vectors.
  ArcFaceONNX looks at the names of the first 8 nodes: a ``Sub*``/``_minus*`` node together with a ``Mul*``/``_mul*``
  node means an mxnet export that normalises inside the graph (mean 0, std 1); anything else gets mean = std = 127.5.
  Arc2Face's ``arcface.onnx`` is a PyTorch export of the arcface_torch R100, whose graph starts with a convolution and
  does no normalisation of its own (the training code feeds ``(x/255 - 0.5)/0.5``), so it takes the 127.5 path. The
  nodes here are named like a PyTorch export (``Conv_0``, ``Relu_1``...) to take the same path.
* ``build_rigged_detector``: SCRFD's layout as in antelopev2's ``scrfd_10g_bnkps.onnx``: input ``[1, 3, '?', '?']``
  and nine rank-2 outputs: scores for strides 8/16/32 ``[anchors, 1]``, box distances ``[anchors, 4]``, keypoint
  distances ``[anchors, 10]``, two anchors per cell, scores after sigmoid, distances in units of the stride.
  It is rigged: each face it is given sits on one anchor whose box/keypoint distances are constants, so insightface
  decodes exactly that box and those keypoints. The anchor's score is computed from the image itself (the contrast of
  the pixels under the face box, from AveragePool on the network input), so a black or blank region scores ~0 and is
  not detected. All other anchors score 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13          # old enough for the onnxruntime builds insightface 0.7.3 ran on
IR_VERSION = 8
STRIDES = (8, 16, 32)
ANCHORS_PER_CELL = 2
GATE_CELL = 8       # the contrast gate averages the image over cells of this many pixels
CELL = [GATE_CELL, GATE_CELL]

# The gate: score = peak * sigmoid(GATE_GAIN * (std - GATE_STD)), std of the normalised grey value ((x-127.5)/128)
# over the face box. The astronaut's face has std 0.44; a uniform region has 0 and scores sigmoid(-10) ~ 5e-5.
GATE_STD = 0.05
GATE_GAIN = 200.0


@dataclass(frozen=True)
class RiggedFace:
    """One face the rigged detector reports: box x1,y1,x2,y2 and 5 keypoints in source-image pixels.

    Keypoints are left eye, right eye, nose tip, left mouth corner, right mouth corner ("left" = image left).
    ``score`` is the detection score when the region has a face's contrast.
    """

    bbox: tuple[float, float, float, float]
    kps: tuple[tuple[float, float], ...]
    score: float = 0.9

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.bbox
        return (x2 - x1) * (y2 - y1)

    def kps_array(self) -> np.ndarray:
        return np.asarray(self.kps, dtype=np.float64).reshape(5, 2)


# Measured by hand on skimage.data.astronaut() (512x512): this OpenCV build ships no Haar cascade files
# (cv2.data.haarcascades is empty), so the points were read off an enlarged crop with a 5-pixel grid and checked by
# drawing them and by looking at the 112x112 norm_crop they give (eyes, nose and mouth land on ArcFace's template).
# Multiples of 0.5 keep every coordinate exact through insightface's float32 decoding at det_size 640 (scale 1.25).
ASTRONAUT_FACE = RiggedFace(
    bbox=(176.0, 72.0, 270.0, 186.0),
    kps=((202.5, 101.5), (246.0, 103.5), (223.0, 128.0), (204.0, 140.5), (244.5, 141.5)),
    score=0.9,
)


def astronaut_rgb() -> np.ndarray:
    """skimage's astronaut photo, 512x512 RGB uint8."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def astronaut_face() -> RiggedFace:
    """Where the face and its 5 keypoints are on ``astronaut_rgb()`` (fixed, measured coordinates)."""
    return ASTRONAUT_FACE


def paste_face_copy(image: np.ndarray, face: RiggedFace, *, region: tuple[int, int, int, int], scale: float,
                    top_left: tuple[int, int], score: float) -> tuple[np.ndarray, RiggedFace]:
    """Paste a scaled copy of ``region`` (x1,y1,x2,y2 around ``face``) at ``top_left``; return the image and the copy.

    The copy's coordinates follow OpenCV's resize geometry (pixel centres at integers): a source point p maps to
    (p - x1 + 0.5) * scale - 0.5 + left.
    """
    import cv2

    x1, y1, x2, y2 = region
    w, h = round((x2 - x1) * scale), round((y2 - y1) * scale)
    assert abs(w - (x2 - x1) * scale) < 1e-9 and abs(h - (y2 - y1) * scale) < 1e-9, "region must scale to whole pixels"
    small = cv2.resize(image[y1:y2, x1:x2], (w, h), interpolation=cv2.INTER_AREA)
    left, top = top_left
    out = image.copy()
    out[top:top + h, left:left + w] = small

    def move(x: float, y: float) -> tuple[float, float]:
        return ((x - x1 + 0.5) * scale - 0.5 + left, (y - y1 + 0.5) * scale - 0.5 + top)

    bx1, by1 = move(face.bbox[0], face.bbox[1])
    bx2, by2 = move(face.bbox[2], face.bbox[3])
    copy = RiggedFace(bbox=(bx1, by1, bx2, by2), kps=tuple(move(x, y) for x, y in face.kps), score=score)
    return out, copy


def letterbox_scale(image_size: tuple[int, int], det_size: int = 640) -> float:
    """insightface's det_scale for a (width, height) image at det_size (same integer truncation as SCRFD.detect)."""
    width, height = image_size
    if height / width > 1.0:
        new_height = det_size
    else:
        new_height = int(det_size * (height / width))
    return new_height / height


# ----------------------------------------------------------------------------------------------------------- recogniser

def build_recogniser(path: str | Path, *, seed: int = 0, out_dim: int = 512, input_size: int = 112,
                     dynamic_batch: bool = True, weights: str = "random") -> Path:
    """Write a tiny ArcFace-layout recogniser. ``weights``: "random", "zeros" (zero output) or "nan"."""
    rng = np.random.default_rng(seed)
    channels, k = 8, 8
    cells = (input_size // k) ** 2
    conv_w = rng.normal(0.0, 0.2, (channels, 3, k, k)).astype(np.float32)
    conv_b = rng.normal(0.0, 0.1, (channels,)).astype(np.float32)
    fc_w = rng.normal(0.0, 1.0 / np.sqrt(channels * cells), (channels * cells, out_dim)).astype(np.float32)
    fc_b = rng.normal(0.0, 0.05, (out_dim,)).astype(np.float32)
    if weights == "zeros":
        fc_w[:] = 0.0
        fc_b[:] = 0.0
    elif weights == "nan":
        fc_w[0, 0] = np.nan
    elif weights != "random":
        raise ValueError(weights)

    batch = "None" if dynamic_batch else 1  # the real file's batch axis is symbolic
    nodes = [
        helper.make_node("Conv", ["input.1", "conv_w", "conv_b"], ["conv_out"], name="Conv_0",
                         kernel_shape=[k, k], strides=[k, k]),
        helper.make_node("Relu", ["conv_out"], ["relu_out"], name="Relu_1"),
        helper.make_node("Flatten", ["relu_out"], ["flat"], name="Flatten_2", axis=1),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["683"], name="Gemm_3"),
    ]
    graph = helper.make_graph(
        nodes, "tiny_arcface",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [batch, 3, input_size, input_size])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, [batch, out_dim])],
        [numpy_helper.from_array(a, n) for a, n in
         ((conv_w, "conv_w"), (conv_b, "conv_b"), (fc_w, "fc_w"), (fc_b, "fc_b"))],
    )
    return _save(graph, path)


# ------------------------------------------------------------------------------------------------------------- detector

@dataclass
class _Level:
    stride: int
    cells: int                                   # cells per side at det_size
    scores: list[tuple[int, int]] = field(default_factory=list)   # (face index, anchor index)
    boxes: np.ndarray | None = None
    points: np.ndarray | None = None


def _stride_for(side: float) -> int:
    """Big faces on coarse levels, like a trained SCRFD (and so every level is exercised)."""
    return 32 if side >= 128 else 16 if side >= 64 else 8


def _place_faces(faces: Sequence[RiggedFace], scale: float, det_size: int) -> list[_Level]:
    levels = {s: _Level(s, det_size // s) for s in STRIDES}
    for level in levels.values():
        n = level.cells * level.cells * ANCHORS_PER_CELL
        level.boxes = np.zeros((n, 4), np.float32)
        level.points = np.zeros((n, 10), np.float32)
    used: set[tuple[int, int]] = set()
    for index, face in enumerate(faces):
        box = np.asarray(face.bbox, np.float64) * scale
        kps = face.kps_array() * scale
        level = levels[_stride_for(max(box[2] - box[0], box[3] - box[1]))]
        s = level.stride
        col = int(round((box[0] + box[2]) / 2 / s))   # anchor centres sit at (col*s, row*s)
        row = int(round((box[1] + box[3]) / 2 / s))
        cx, cy = col * s, row * s
        if not (box[0] < cx < box[2] and box[1] < cy < box[3]):
            raise ValueError(f"face {index} is too small for its stride {s}")
        first = (row * level.cells + col) * ANCHORS_PER_CELL   # insightface repeats each cell centre per anchor
        anchor = next(first + k for k in range(ANCHORS_PER_CELL) if (s, first + k) not in used)
        used.add((s, anchor))
        level.boxes[anchor] = np.array([cx - box[0], cy - box[1], box[2] - cx, box[3] - cy]) / s
        level.points[anchor] = ((kps - np.array([cx, cy])) / s).reshape(10)
        level.scores.append((index, anchor))
    return [levels[s] for s in STRIDES]


def _gate_mask(faces: Sequence[RiggedFace], scale: float, det_size: int) -> np.ndarray:
    """[cells*cells, F]: column f averages the GATE_CELL cells whose centres lie inside face f's box."""
    n = det_size // GATE_CELL
    centres = (np.arange(n) + 0.5) * GATE_CELL
    mask = np.zeros((n * n, len(faces)), np.float32)
    for f, face in enumerate(faces):
        x1, y1, x2, y2 = np.asarray(face.bbox, np.float64) * scale
        in_x = (centres > x1) & (centres < x2)
        in_y = (centres > y1) & (centres < y2)
        inside = in_y[:, None] & in_x[None, :]        # [row, col], flattened row-major like Flatten does
        if not inside.any():
            raise ValueError(f"face {f} covers no {GATE_CELL}x{GATE_CELL} cell")
        mask[:, f] = inside.reshape(-1) / inside.sum()
    return mask


def build_rigged_detector(path: str | Path, faces: Sequence[RiggedFace], image_size: tuple[int, int], *,
                          det_size: int = 640, with_keypoints: bool = True) -> Path:
    """Write an SCRFD-layout detector that finds ``faces`` in an image of ``image_size`` (width, height).

    Valid for insightface's letterbox at ``det_size`` (a square input of det_size pixels). ``with_keypoints=False``
    writes the 6-output variant (no keypoints), which the pack must refuse.
    """
    if not faces:
        raise ValueError("give at least one face")
    scale = letterbox_scale(image_size, det_size)
    levels = _place_faces(faces, scale, det_size)
    f = len(faces)
    inits = [
        numpy_helper.from_array(_gate_mask(faces, scale, det_size), "gate_mask"),
        numpy_helper.from_array(np.array(GATE_STD, np.float32), "gate_std"),
        numpy_helper.from_array(np.array(GATE_GAIN, np.float32), "gate_gain"),
        numpy_helper.from_array(np.array([face.score for face in faces], np.float32), "peak"),
        numpy_helper.from_array(np.array([-1, 1], np.int64), "column"),
    ]
    nodes = [
        # Grey value per pixel, then per-cell means of x and x^2 -> mean and std over each face box.
        helper.make_node("ReduceMean", ["input.1"], ["grey"], axes=[1], keepdims=1),
        helper.make_node("Mul", ["grey", "grey"], ["grey_sq"]),
        helper.make_node("AveragePool", ["grey"], ["cell_mean"], kernel_shape=CELL, strides=CELL),
        helper.make_node("AveragePool", ["grey_sq"], ["cell_sq"], kernel_shape=CELL, strides=CELL),
        helper.make_node("Flatten", ["cell_mean"], ["cell_mean_flat"], axis=1),
        helper.make_node("Flatten", ["cell_sq"], ["cell_sq_flat"], axis=1),
        helper.make_node("MatMul", ["cell_mean_flat", "gate_mask"], ["face_mean"]),
        helper.make_node("MatMul", ["cell_sq_flat", "gate_mask"], ["face_sq"]),
        helper.make_node("Mul", ["face_mean", "face_mean"], ["face_mean_sq"]),
        helper.make_node("Sub", ["face_sq", "face_mean_sq"], ["face_var_raw"]),
        helper.make_node("Relu", ["face_var_raw"], ["face_var"]),
        helper.make_node("Sqrt", ["face_var"], ["face_std"]),
        helper.make_node("Sub", ["face_std", "gate_std"], ["gate_margin"]),
        helper.make_node("Mul", ["gate_margin", "gate_gain"], ["gate_logit"]),
        helper.make_node("Sigmoid", ["gate_logit"], ["gate"]),
        helper.make_node("Mul", ["gate", "peak"], ["face_score"]),   # [1, F]
    ]
    score_outs, box_outs, kps_outs = [], [], []
    for level in levels:
        s, n = level.stride, level.cells * level.cells * ANCHORS_PER_CELL
        select = np.zeros((f, n), np.float32)      # scatters face scores onto their anchors
        for face_index, anchor in level.scores:
            select[face_index, anchor] = 1.0
        inits += [numpy_helper.from_array(select, f"select_{s}"),
                  numpy_helper.from_array(level.boxes, f"box_template_{s}"),
                  numpy_helper.from_array(level.points, f"kps_template_{s}")]
        nodes += [
            helper.make_node("MatMul", ["face_score", f"select_{s}"], [f"anchor_score_{s}"]),
            helper.make_node("Reshape", [f"anchor_score_{s}", "column"], [f"score_{s}"]),
            helper.make_node("Identity", [f"box_template_{s}"], [f"bbox_{s}"]),
            helper.make_node("Identity", [f"kps_template_{s}"], [f"kps_{s}"]),
        ]
        anchors = f"anchors_{s}"   # symbolic, as the input's H/W are; insightface 2.1 fixes them per det_size
        score_outs.append(helper.make_tensor_value_info(f"score_{s}", TensorProto.FLOAT, [anchors, 1]))
        box_outs.append(helper.make_tensor_value_info(f"bbox_{s}", TensorProto.FLOAT, [anchors, 4]))
        kps_outs.append(helper.make_tensor_value_info(f"kps_{s}", TensorProto.FLOAT, [anchors, 10]))
    outputs = score_outs + box_outs + (kps_outs if with_keypoints else [])
    graph = helper.make_graph(
        nodes, "rigged_scrfd",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "?", "?"])],
        outputs, inits,
    )
    return _save(graph, path)


# ---------------------------------------------------------------------------------------------------------- helpers

def build_non_face_model(path: str | Path) -> Path:
    """A valid ONNX file insightface routes to none of its classes (input 50x50): get_model returns None."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["input.1"], ["out"], name="Relu_0")], "not_a_face_model",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 50, 50])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 50, 50])],
    )
    return _save(graph, path)


def truncate(path: str | Path, keep: float = 0.5) -> Path:
    """Cut a file to a fraction of its bytes, like an interrupted download."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep))])
    return path


def _save(graph: onnx.GraphProto, path: str | Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="arc2face-tests")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
