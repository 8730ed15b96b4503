"""SMIRK's expression encoder in plain torch: face crop → the 55-d FLAME expression vector of the Expression Adapter.

What the Arc2Face Expression Adapter demo does (SMIRK code, MIT), and what this module reproduces:

1. Crop: a square box around the face landmarks, enlarged 1.4x, warped to 224x224 with a similarity transform
   (skimage ``estimate_transform('similarity')`` + ``warp``, bilinear, black outside the image, then truncated to
   uint8). The reference takes the box of MediaPipe's 478 face-mesh points; this pack has insightface's 68 points
   instead and corrects their box to MediaPipe's (``smirk_crop.py``, ``FOREHEAD_EXTENSION``).
2. Channel order: the demo warps an RGB image and then applies ``cv2.COLOR_BGR2RGB`` to the crop, so SMIRK is fed
   BGR. SMIRK's own demo feeds RGB. ``channel_order="bgr"`` (the default) matches the Arc2Face demo (smirk_crop.py).
3. ``/255`` to floats 0..1, no mean/std normalisation, ``[N, 3, 224, 224]``.
4. Backbone: timm's ``tf_mobilenetv3_large_minimal_100`` with ``features_only=True`` (rebuilt here without timm,
   same parameter names, so SMIRK's checkpoint loads strictly); its last feature map [N, 960, 7, 7] is averaged to
   [N, 960] and a single ``Linear(960, 55)`` gives the raw parameters.
5. ``postprocess``: expression 50 as is; eyelids 2 clamped to 0..1; jaw 3: the first (jaw opening) through ReLU, the
   other two clamped to ±0.2.

Weights: ``SMIRK_em1.pt`` from the SMIRK project (manual download); only its ``smirk_encoder.expression_encoder.*``
tensors are used.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoints import check_finite, read_checkpoint
from ..errors import CorruptWeightsError, InvalidInputError
from .vectors import EXPRESSION_DIM, JAW_SIDE_LIMIT, N_EXPRESSION, N_EYELID, N_JAW

SMIRK_URL = "https://github.com/georgeretsi/smirk"
SMIRK_FILENAME = "SMIRK_em1.pt"
CHECKPOINT_PREFIX = "smirk_encoder.expression_encoder."

FEATURE_DIM = 960
CROP_SIZE = 224
CROP_SCALE = 1.4
BN_EPS = 1e-3          # TensorFlow's BatchNorm default, which timm's tf_* models keep

CHANNEL_ORDERS = ("bgr", "rgb")

# ------------------------------------------------------------------------------------------------------------------
# Backbone: timm's tf_mobilenetv3_large_minimal_100, features_only=True
# ------------------------------------------------------------------------------------------------------------------


def make_divisible(value: float, divisor: int = 8, round_limit: float = 0.9) -> int:
    """Round a channel count to the nearest multiple of ``divisor`` (never below it, never down by over 10%)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < round_limit * value:
        rounded += divisor
    return rounded


def same_padding_total(size: int, kernel: int, stride: int, dilation: int = 1) -> int:
    """Total TensorFlow 'SAME' padding along one axis: enough that the output has ``ceil(size / stride)`` samples."""
    return max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)


class Conv2dSame(nn.Conv2d):
    """A convolution with TensorFlow 'SAME' padding worked out from the input size at each call.

    The padding can be asymmetric: top/left get ``total // 2``, bottom/right the rest (one more when ``total`` is odd).
    Used where the padding is not the same for every input size (stride 2); stride-1 odd kernels use plain symmetric
    padding, which is identical there.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pad_h = same_padding_total(int(height), self.kernel_size[0], self.stride[0], self.dilation[0])
        pad_w = same_padding_total(int(width), self.kernel_size[1], self.stride[1], self.dilation[1])
        if pad_h or pad_w:
            x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def conv2d_tf_same(in_chs: int, out_chs: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """timm's ``create_conv2d(..., padding='same')`` for square kernels, no bias, dilation 1.

    Stride 1 with an odd kernel: 'SAME' is the symmetric ``(kernel - 1) // 2`` for every size, so a plain Conv2d.
    Otherwise the padding depends on the input size: ``Conv2dSame``.
    """
    if stride == 1 and (kernel - 1) % 2 == 0:
        return nn.Conv2d(in_chs, out_chs, kernel, stride=1, padding=(kernel - 1) // 2, groups=groups, bias=False)
    return Conv2dSame(in_chs, out_chs, kernel, stride=stride, padding=0, groups=groups, bias=False)


class BatchNormAct2d(nn.BatchNorm2d):
    """BatchNorm (eps 1e-3) optionally followed by ReLU; the parameter names are BatchNorm2d's, as in timm."""

    def __init__(self, num_features: int, relu: bool) -> None:
        super().__init__(num_features, eps=BN_EPS)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        return F.relu(x) if self.relu else x

    def extra_repr(self) -> str:
        return super().extra_repr() + f", relu={self.relu}"


class DepthwiseSeparable(nn.Module):
    """timm's DepthwiseSeparableConv, no SE: depthwise → BN+ReLU → 1x1 conv → BN, + skip when shapes allow."""

    def __init__(self, in_chs: int, out_chs: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.has_skip = stride == 1 and in_chs == out_chs
        self.conv_dw = conv2d_tf_same(in_chs, in_chs, kernel, stride, groups=in_chs)
        self.bn1 = BatchNormAct2d(in_chs, relu=True)
        self.conv_pw = conv2d_tf_same(in_chs, out_chs, 1)
        self.bn2 = BatchNormAct2d(out_chs, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv_pw(self.bn1(self.conv_dw(x))))
        return out + x if self.has_skip else out


class InvertedResidual(nn.Module):
    """timm's InvertedResidual, no SE: 1x1 expand → BN+ReLU → depthwise → BN+ReLU → 1x1 project → BN, + skip."""

    def __init__(self, in_chs: int, out_chs: int, kernel: int, stride: int, exp_ratio: float) -> None:
        super().__init__()
        mid_chs = make_divisible(in_chs * exp_ratio)
        self.has_skip = stride == 1 and in_chs == out_chs
        self.conv_pw = conv2d_tf_same(in_chs, mid_chs, 1)
        self.bn1 = BatchNormAct2d(mid_chs, relu=True)
        self.conv_dw = conv2d_tf_same(mid_chs, mid_chs, kernel, stride, groups=mid_chs)
        self.bn2 = BatchNormAct2d(mid_chs, relu=True)
        self.conv_pwl = conv2d_tf_same(mid_chs, out_chs, 1)
        self.bn3 = BatchNormAct2d(out_chs, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv_dw(self.bn1(self.conv_pw(x))))
        out = self.bn3(self.conv_pwl(out))
        return out + x if self.has_skip else out


class ConvBnAct(nn.Module):
    """timm's ConvBnAct: conv → BN+ReLU (no skip in this model)."""

    def __init__(self, in_chs: int, out_chs: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.conv = conv2d_tf_same(in_chs, out_chs, kernel, stride)
        self.bn1 = BatchNormAct2d(out_chs, relu=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn1(self.conv(x))


# timm's arch_def for the large "minimal" MobileNetV3: per stage, (block type, repeats, kernel, stride of the first
# block, expansion ratio, output channels). ReLU everywhere, no squeeze-excite, no hard-swish.
LARGE_MINIMAL_ARCH: tuple[tuple[tuple[str, int, int, int, float, int], ...], ...] = (
    (("ds", 1, 3, 1, 1.0, 16),),
    (("ir", 1, 3, 2, 4.0, 24), ("ir", 1, 3, 1, 3.0, 24)),
    (("ir", 3, 3, 2, 3.0, 40),),
    (("ir", 1, 3, 2, 6.0, 80), ("ir", 1, 3, 1, 2.5, 80), ("ir", 2, 3, 1, 2.3, 80)),
    (("ir", 2, 3, 1, 6.0, 112),),
    (("ir", 3, 3, 2, 6.0, 160),),
    (("cn", 1, 1, 1, 1.0, 960),),
)
STEM_CHANNELS = 16


class MobileNetV3LargeMinimalFeatures(nn.Module):
    """timm ``tf_mobilenetv3_large_minimal_100`` with ``features_only=True``, module for module.

    Stem (3x3 stride-2 conv, BN, ReLU) and 7 stages of blocks under ``blocks.{stage}.{block}``. ``forward`` returns
    the last feature map ([N, 960, H/32, W/32]); ``features`` returns all five maps timm's feature extractor returns
    (after stages 0, 1, 2, 4 and 6: strides 2, 4, 8, 16, 32).
    """

    def __init__(self, in_chans: int = 3) -> None:
        super().__init__()
        stem = make_divisible(STEM_CHANNELS)
        self.conv_stem = conv2d_tf_same(in_chans, stem, 3, stride=2)
        self.bn1 = nn.BatchNorm2d(stem, eps=BN_EPS)
        self.act1 = nn.ReLU(inplace=True)
        stages: list[nn.Sequential] = []
        info: list[dict[str, int]] = []
        in_chs, reduction = stem, 2
        for index, stage in enumerate(LARGE_MINIMAL_ARCH):
            blocks: list[nn.Module] = []
            for kind, repeats, kernel, first_stride, exp_ratio, out in stage:
                out_chs = make_divisible(out)
                for repeat in range(repeats):
                    stride = first_stride if not blocks else 1   # only a stage's first block may have a stride
                    if kind == "ds":
                        block: nn.Module = DepthwiseSeparable(in_chs, out_chs, kernel, stride)
                    elif kind == "ir":
                        block = InvertedResidual(in_chs, out_chs, kernel, stride, exp_ratio)
                    else:
                        block = ConvBnAct(in_chs, out_chs, kernel, stride)
                    reduction *= stride
                    blocks.append(block)
                    in_chs = out_chs
            stages.append(nn.Sequential(*blocks))
            # timm takes a feature where the next stage starts with a stride (and after the last stage)
            last = index + 1 == len(LARGE_MINIMAL_ARCH)
            if last or LARGE_MINIMAL_ARCH[index + 1][0][3] > 1:
                info.append({"stage": index, "num_chs": in_chs, "reduction": reduction})
        self.blocks = nn.Sequential(*stages)
        self.feature_info = info
        self._feature_stages = {entry["stage"] for entry in info}

    @property
    def num_features(self) -> int:
        return self.feature_info[-1]["num_chs"]

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.act1(self.bn1(self.conv_stem(x)))
        out = []
        for index, stage in enumerate(self.blocks):
            x = stage(x)
            if index in self._feature_stages:
                out.append(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv_stem(x)))
        return self.blocks(x)


# ------------------------------------------------------------------------------------------------------------------
# Expression encoder
# ------------------------------------------------------------------------------------------------------------------


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
    """SMIRK's expression encoder: backbone → global average pool → ``Linear(960, 55)``.

    ``forward`` gives the raw parameters; ``encode`` checks the crops and applies ``postprocess``.
    """

    def __init__(self, n_exp: int = N_EXPRESSION) -> None:
        super().__init__()
        self.encoder = MobileNetV3LargeMinimalFeatures()
        self.expression_layers = nn.Sequential(nn.Linear(self.encoder.num_features, n_exp + N_EYELID + N_JAW))
        self.n_exp = n_exp

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        features = F.adaptive_avg_pool2d(self.encoder(img), (1, 1)).flatten(1)
        return self.expression_layers(features)

    @torch.no_grad()
    def encode(self, crops: torch.Tensor) -> torch.Tensor:
        """Face crops ``[N, 3, 224, 224]`` (or one ``[3, 224, 224]``), floats 0..1 → ``[N, 55]`` float32, CPU."""
        crops = validate_crops(crops)
        weight = self.expression_layers[0].weight
        raw = self(crops.to(device=weight.device, dtype=weight.dtype))
        return postprocess(raw.float()).cpu()


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


def _wrong_file(path: Path) -> str:
    return (f"Is this {SMIRK_FILENAME}? The Expression Adapter needs SMIRK's released checkpoint "
            f"{SMIRK_FILENAME} (from {SMIRK_URL}), whose expression encoder is stored under '{CHECKPOINT_PREFIX}*'.")


def expression_encoder_state_dict(obj: Any, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The ``smirk_encoder.expression_encoder.*`` tensors of a SMIRK checkpoint, prefix stripped; the rest ignored."""
    path = Path(path)
    if not isinstance(obj, Mapping):
        raise CorruptWeightsError(f"{path} holds a {type(obj).__name__}, not a dict of tensors. {_wrong_file(path)}")
    sd = {k[len(CHECKPOINT_PREFIX):]: v for k, v in obj.items()
          if isinstance(k, str) and k.startswith(CHECKPOINT_PREFIX)}
    if not sd:
        sample = list(obj)[:5]
        raise CorruptWeightsError(
            f"{path} has no SMIRK expression-encoder weights (no key starts with '{CHECKPOINT_PREFIX}'; "
            f"its first keys are {sample}). {_wrong_file(path)}")
    bad = sorted(k for k, v in sd.items() if not isinstance(v, torch.Tensor))
    if bad:
        raise CorruptWeightsError(f"{path}: entries {bad[:5]} are not tensors. {_wrong_file(path)}")
    return sd


def load_smirk_encoder(path: str | os.PathLike, *, device: torch.device | str = "cpu",
                       dtype: torch.dtype = torch.float32) -> ExpressionEncoder:
    """Load SMIRK's expression encoder from ``SMIRK_em1.pt``: every key and shape must match (strict load)."""
    path = Path(path)
    sd = expression_encoder_state_dict(read_checkpoint(path, source=SMIRK_URL), path)
    check_finite(sd, path)
    with torch.device("meta"):
        model = ExpressionEncoder()
    expected = model.state_dict()
    missing = sorted(expected.keys() - sd.keys())
    unexpected = sorted(sd.keys() - expected.keys())
    if missing or unexpected:
        raise CorruptWeightsError(
            f"{path} does not match SMIRK's expression encoder (MobileNetV3 large minimal + Linear(960, 55)): "
            f"missing {len(missing)} tensors {missing[:4]}, unexpected {len(unexpected)} {unexpected[:4]} "
            f"(names after '{CHECKPOINT_PREFIX}'). {_wrong_file(path)}")
    wrong = [f"{k}: {tuple(sd[k].shape)} instead of {tuple(v.shape)}" for k, v in expected.items()
             if tuple(sd[k].shape) != tuple(v.shape)]
    if wrong:
        raise CorruptWeightsError(f"{path}: {len(wrong)} tensors have the wrong shape ({'; '.join(wrong[:3])}). "
                                  f"{_wrong_file(path)}")
    model.load_state_dict(sd, strict=True, assign=True)
    # num_batches_tracked stays int64; everything else takes the requested dtype
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)
