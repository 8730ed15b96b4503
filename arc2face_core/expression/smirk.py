"""SMIRK's encoders in plain torch: a 224x224 face crop → FLAME 2020 parameters (pose, camera, shape, expression).

SMIRK (MIT) regresses a face with three independent networks on the same crop (its ``src/smirk_encoder.py``); each is a
timm backbone (``features_only=True``), the last feature map averaged to a vector, and one ``Linear``:

| part         | backbone (mobilenetv3.py)          | head                              | outputs                          |
|--------------|------------------------------------|-----------------------------------|----------------------------------|
| ``pose``     | ``tf_mobilenetv3_small_minimal_100`` | ``pose_cam_layers.0`` Linear(576, 6) | axis-angle head rotation 3, camera [s, tx, ty] |
| ``shape``    | ``tf_mobilenetv3_large_minimal_100`` | ``shape_layers.0`` Linear(960, 300)  | FLAME identity shape 300         |
| ``expression`` | ``tf_mobilenetv3_large_minimal_100`` | ``expression_layers.0`` Linear(960, 55) | expression 50, eyelids 2, jaw 3 |

Pose, camera and shape are used raw; the expression goes through ``postprocess`` (eyelids clamped to 0..1, jaw[0]
ReLU, jaw[1:3] clamped to ±0.2).

Input: ``[N, 3, 224, 224]`` floats 0..1 (``/255``, no mean/std normalisation), cropped as SMIRK crops (smirk_crop.py).
SMIRK was trained on RGB crops; the Arc2Face Expression Adapter demo feeds the expression encoder BGR (it swaps the
channels of an RGB crop), which ``channel_order="bgr"`` reproduces for the expression (smirk_crop.py).

Weights: ``SMIRK_em1.pt`` from the SMIRK project (manual download), a flat state dict of the whole SMIRK model. Each
part is read from its own prefix (``smirk_encoder.pose_encoder.`` ...) with a strict load of exactly its keys; the
other parts and the image generator (``smirk_generator.*``) are ignored, so loading only the expression encoder, as
the Arc2Face demo does, reads only its tensors.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoints import check_finite, read_checkpoint
from ..errors import CorruptWeightsError, InvalidInputError
from .mobilenetv3 import (  # noqa: F401  (BatchNormAct2d, Conv2dSame, conv2d_tf_same: re-exported for callers)
    BatchNormAct2d,
    Conv2dSame,
    MobileNetV3LargeMinimalFeatures,
    MobileNetV3SmallMinimalFeatures,
    conv2d_tf_same,
)
from .vectors import EXPRESSION_DIM, JAW_SIDE_LIMIT, N_EXPRESSION, N_EYELID, N_JAW

SMIRK_URL = "https://github.com/georgeretsi/smirk"
SMIRK_FILENAME = "SMIRK_em1.pt"
ENCODER_PREFIX = "smirk_encoder."
CHECKPOINT_PREFIX = ENCODER_PREFIX + "expression_encoder."

SMIRK_PARTS = ("pose", "shape", "expression")
PART_PREFIXES = {part: f"{ENCODER_PREFIX}{part}_encoder." for part in SMIRK_PARTS}
N_POSE_CAMERA = 6      # pose_cam_layers: axis-angle rotation 3 + orthographic camera [s, tx, ty]
N_SHAPE = 300          # shape_layers: FLAME 2020's first 300 identity components

CROP_SIZE = 224
CROP_SCALE = 1.4

CHANNEL_ORDERS = ("bgr", "rgb")


# ------------------------------------------------------------------------------------------------------------------
# The three encoders
# ------------------------------------------------------------------------------------------------------------------


def pooled_features(backbone: nn.Module, img: torch.Tensor) -> torch.Tensor:
    """SMIRK's ``adaptive_avg_pool2d(features[-1], 1)``: the last feature map averaged to ``[N, channels]``."""
    return F.adaptive_avg_pool2d(backbone(img), (1, 1)).flatten(1)


class PoseEncoder(nn.Module):
    """SMIRK's pose encoder: small minimal backbone → pool → ``Linear(576, 6)`` = [rotation 3, camera s, tx, ty]."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = MobileNetV3SmallMinimalFeatures()
        self.pose_cam_layers = nn.Sequential(nn.Linear(self.encoder.num_features, N_POSE_CAMERA))

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.pose_cam_layers(pooled_features(self.encoder, img))


class ShapeEncoder(nn.Module):
    """SMIRK's shape encoder: large minimal backbone → pool → ``Linear(960, 300)`` (FLAME shape coefficients)."""

    def __init__(self, n_shape: int = N_SHAPE) -> None:
        super().__init__()
        self.encoder = MobileNetV3LargeMinimalFeatures()
        self.shape_layers = nn.Sequential(nn.Linear(self.encoder.num_features, n_shape))

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.shape_layers(pooled_features(self.encoder, img))


def postprocess(raw: torch.Tensor) -> torch.Tensor:
    """SMIRK's output activations on raw parameters [..., 55]: eyelids clamped to 0..1, jaw[0] ReLU, jaw[1:3] ±0.2."""
    if not isinstance(raw, torch.Tensor) or raw.ndim == 0 or raw.shape[-1] != EXPRESSION_DIM:
        got = tuple(raw.shape) if isinstance(raw, torch.Tensor) else type(raw).__name__
        raise InvalidInputError(
            f"Expected raw SMIRK parameters of size {EXPRESSION_DIM} in the last dimension (a tensor), got {got}.")
    expression = raw[..., :N_EXPRESSION]
    eyelids = raw[..., N_EXPRESSION:N_EXPRESSION + N_EYELID].clamp(0.0, 1.0)
    jaw_open = F.relu(raw[..., N_EXPRESSION + N_EYELID:N_EXPRESSION + N_EYELID + 1])
    jaw_side = raw[..., N_EXPRESSION + N_EYELID + 1:].clamp(-JAW_SIDE_LIMIT, JAW_SIDE_LIMIT)
    return torch.cat([expression, eyelids, jaw_open, jaw_side], dim=-1)


class ExpressionEncoder(nn.Module):
    """SMIRK's expression encoder: large minimal backbone → pool → ``Linear(960, 55)``.

    ``forward`` gives the raw parameters; ``encode`` checks the crops and applies ``postprocess``.
    """

    def __init__(self, n_exp: int = N_EXPRESSION) -> None:
        super().__init__()
        self.encoder = MobileNetV3LargeMinimalFeatures()
        self.expression_layers = nn.Sequential(nn.Linear(self.encoder.num_features, n_exp + N_EYELID + N_JAW))
        self.n_exp = n_exp

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.expression_layers(pooled_features(self.encoder, img))

    @torch.no_grad()
    def encode(self, crops: torch.Tensor) -> torch.Tensor:
        """Face crops ``[N, 3, 224, 224]`` (or one ``[3, 224, 224]``), floats 0..1 → ``[N, 55]`` float32, CPU."""
        crops = validate_crops(crops)
        return postprocess(_run(self, crops)).cpu()


_PART_CLASSES = {"pose": PoseEncoder, "shape": ShapeEncoder, "expression": ExpressionEncoder}
_PART_NAMES = {"pose": "pose encoder (MobileNetV3 small minimal + Linear(576, 6))",
               "shape": "shape encoder (MobileNetV3 large minimal + Linear(960, 300))",
               "expression": "expression encoder (MobileNetV3 large minimal + Linear(960, 55))"}


class SmirkEncoder(nn.Module):
    """Any of SMIRK's three encoders, under SMIRK's own names (``pose_encoder``, ``shape_encoder``,
    ``expression_encoder``), so ``ENCODER_PREFIX + state_dict key`` is the checkpoint's key."""

    def __init__(self, parts: Iterable[str] = SMIRK_PARTS) -> None:
        super().__init__()
        self.parts = check_parts(parts)
        for part in self.parts:
            self.add_module(f"{part}_encoder", _PART_CLASSES[part]())

    def part(self, name: str) -> nn.Module:
        if name not in self.parts:
            raise InvalidInputError(f"This SMIRK encoder was loaded without its {name} part (it has {self.parts}).")
        return getattr(self, f"{name}_encoder")

    @torch.no_grad()
    def encode(self, crops: torch.Tensor, expression_crops: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Crops ``[N, 3, 224, 224]`` (0..1) → float32 CPU tensors: ``pose`` [N, 3] (axis-angle, radians), ``camera``
        [N, 3] ([s, tx, ty]), ``shape`` [N, 300], ``expression`` [N, 55] (postprocessed), for the parts it has.

        ``expression_crops``: the expression encoder's own view of the same faces (e.g. the BGR crops the Arc2Face
        demo feeds it); the other encoders read ``crops``.
        """
        crops = validate_crops(crops)
        out: dict[str, torch.Tensor] = {}
        if "pose" in self.parts:
            raw = _run(self.pose_encoder, crops)
            out["pose"], out["camera"] = raw[:, :3].contiguous(), raw[:, 3:].contiguous()
        if "shape" in self.parts:
            out["shape"] = _run(self.shape_encoder, crops)
        if "expression" in self.parts:
            seen = crops if expression_crops is None else validate_crops(expression_crops)
            if seen.shape[0] != crops.shape[0]:
                raise InvalidInputError(f"{seen.shape[0]} expression crops for {crops.shape[0]} faces.")
            out["expression"] = postprocess(_run(self.expression_encoder, seen))
        for name, value in out.items():
            if not torch.isfinite(value).all():
                raise CorruptWeightsError(f"SMIRK's {name} came out NaN or infinite: the checkpoint's weights are "
                                          f"out of range (is it {SMIRK_FILENAME}?).")
        return {name: value.cpu() for name, value in out.items()}


def _run(module: nn.Module, crops: torch.Tensor) -> torch.Tensor:
    """Run ``module`` on crops cast to its device and dtype; float32 out."""
    weight = next(module.parameters())
    return module(crops.to(device=weight.device, dtype=weight.dtype)).float()


def check_parts(parts: Any) -> tuple[str, ...]:
    """SMIRK part names in SMIRK's order, each once; an unknown or empty choice is an InvalidInputError."""
    if isinstance(parts, str):
        parts = (parts,)
    chosen = tuple(parts) if isinstance(parts, Iterable) else ()
    unknown = [p for p in chosen if p not in SMIRK_PARTS]
    if unknown or not chosen:
        raise InvalidInputError(f"SMIRK parts must be some of {SMIRK_PARTS}, got {parts!r}.")
    return tuple(p for p in SMIRK_PARTS if p in chosen)


def validate_crops(crops: Any) -> torch.Tensor:
    if not isinstance(crops, torch.Tensor):
        raise InvalidInputError(f"SMIRK crops must be a torch tensor, got a {type(crops).__name__}.")
    if crops.ndim == 3:
        crops = crops.unsqueeze(0)
    if crops.ndim != 4 or tuple(crops.shape[1:]) != (3, CROP_SIZE, CROP_SIZE):
        raise InvalidInputError(
            f"SMIRK crops must have shape [N, 3, {CROP_SIZE}, {CROP_SIZE}] (channels first), got {tuple(crops.shape)}. "
            "Make them with crop_for_smirk.")
    if crops.shape[0] == 0:
        raise InvalidInputError("The batch of SMIRK crops is empty.")
    if not crops.is_floating_point():
        raise InvalidInputError(f"SMIRK crops must be floats 0..1, got dtype {crops.dtype}.")
    if not torch.isfinite(crops).all():
        raise InvalidInputError("SMIRK crops contain NaN or infinite values.")
    low, high = float(crops.min()), float(crops.max())
    if low < -1e-3 or high > 1 + 1e-3:
        hint = " (they look like 0..255 pixel values: divide by 255)" if high > 2 else ""
        raise InvalidInputError(f"SMIRK crops must hold values 0..1, got {low:.3g}..{high:.3g}{hint}.")
    return crops


# ------------------------------------------------------------------------------------------------------------------
# Loading SMIRK_em1.pt
# ------------------------------------------------------------------------------------------------------------------


def _wrong_file(part: str = "expression") -> str:
    return (f"Is this {SMIRK_FILENAME}? SMIRK's released checkpoint {SMIRK_FILENAME} (from {SMIRK_URL}) stores its "
            f"{part} encoder under '{PART_PREFIXES[part]}*'.")


def part_state_dict(obj: Any, path: str | os.PathLike, part: str = "expression") -> dict[str, torch.Tensor]:
    """The tensors of one SMIRK part (prefix ``smirk_encoder.<part>_encoder.`` stripped); everything else ignored."""
    path, prefix = Path(path), PART_PREFIXES[check_parts(part)[0]]
    if not isinstance(obj, Mapping):
        raise CorruptWeightsError(f"{path} holds a {type(obj).__name__}, not a dict of tensors. {_wrong_file(part)}")
    sd = {k[len(prefix):]: v for k, v in obj.items() if isinstance(k, str) and k.startswith(prefix)}
    if not sd:
        sample = list(obj)[:5]
        raise CorruptWeightsError(
            f"{path} has no SMIRK {part}-encoder weights (no key starts with '{prefix}'; its first keys are "
            f"{sample}). {_wrong_file(part)}")
    bad = sorted(k for k, v in sd.items() if not isinstance(v, torch.Tensor))
    if bad:
        raise CorruptWeightsError(f"{path}: entries {bad[:5]} are not tensors. {_wrong_file(part)}")
    return sd


def expression_encoder_state_dict(obj: Any, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The ``smirk_encoder.expression_encoder.*`` tensors of a SMIRK checkpoint, prefix stripped; the rest ignored."""
    return part_state_dict(obj, path, "expression")


def _check_layout(module: nn.Module, sd: Mapping[str, torch.Tensor], path: Path, part: str) -> None:
    """Every key and shape of ``module`` and nothing else (a strict load, with a message that says what differs)."""
    expected = module.state_dict()
    missing = sorted(expected.keys() - sd.keys())
    unexpected = sorted(sd.keys() - expected.keys())
    if missing or unexpected:
        raise CorruptWeightsError(
            f"{path} does not match SMIRK's {_PART_NAMES[part]}: missing {len(missing)} tensors {missing[:4]}, "
            f"unexpected {len(unexpected)} {unexpected[:4]} (names after '{PART_PREFIXES[part]}'). "
            f"{_wrong_file(part)}")
    wrong = [f"{k}: {tuple(sd[k].shape)} instead of {tuple(v.shape)}" for k, v in expected.items()
             if tuple(sd[k].shape) != tuple(v.shape)]
    if wrong:
        raise CorruptWeightsError(f"{path}: {len(wrong)} tensors of the {part} encoder have the wrong shape "
                                  f"({'; '.join(wrong[:3])}). {_wrong_file(part)}")


def load_smirk(path: str | os.PathLike, parts: Iterable[str] = SMIRK_PARTS, *, device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32) -> SmirkEncoder:
    """Load the chosen SMIRK encoders from ``SMIRK_em1.pt``: each part's keys and shapes must match exactly."""
    path = Path(path)
    obj = read_checkpoint(path, source=SMIRK_URL)
    with torch.device("meta"):
        model = SmirkEncoder(parts)
    for part in model.parts:
        sd = part_state_dict(obj, path, part)
        check_finite(sd, path)
        module = model.part(part)
        _check_layout(module, sd, path, part)
        module.load_state_dict(sd, strict=True, assign=True)
    # num_batches_tracked stays int64; everything else takes the requested dtype
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def load_smirk_encoder(path: str | os.PathLike, *, device: torch.device | str = "cpu",
                       dtype: torch.dtype = torch.float32) -> ExpressionEncoder:
    """Load SMIRK's expression encoder alone (what the Expression Adapter needs), strictly."""
    return load_smirk(path, ("expression",), device=device, dtype=dtype).expression_encoder
