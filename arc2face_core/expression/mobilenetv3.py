"""timm's MobileNetV3 "minimal" backbones in plain torch, with timm's parameter names: SMIRK's three encoders.

SMIRK builds each encoder with ``timm.create_model(name, features_only=True)`` and reads the last feature map. timm
needs torchvision, which does not import with every torch build the pack runs on, so the two variants SMIRK uses are
rebuilt here module for module (the same state-dict names and shapes, so SMIRK's checkpoint loads strictly):

- ``tf_mobilenetv3_large_minimal_100`` (shape and expression encoders): last map 960 channels;
- ``tf_mobilenetv3_small_minimal_100`` (pose encoder): last map 576 channels.

"minimal" = ReLU everywhere, no squeeze-excite, no hard-swish; ``tf_`` = BatchNorm eps 1e-3 and TensorFlow 'SAME'
padding. tests/smirk_timm_check.py compares both with timm's own models.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3          # TensorFlow's BatchNorm default, which timm's tf_* models keep
STEM_CHANNELS = 16

# One stage: (block type, repeats, kernel, stride of the first block, expansion ratio, output channels)
Stage = tuple[tuple[str, int, int, int, float, int], ...]


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


# timm's arch_def for the two "minimal" MobileNetV3s (timm/models/mobilenetv3.py, ``_gen_mobilenet_v3``).
LARGE_MINIMAL_ARCH: tuple[Stage, ...] = (
    (("ds", 1, 3, 1, 1.0, 16),),
    (("ir", 1, 3, 2, 4.0, 24), ("ir", 1, 3, 1, 3.0, 24)),
    (("ir", 3, 3, 2, 3.0, 40),),
    (("ir", 1, 3, 2, 6.0, 80), ("ir", 1, 3, 1, 2.5, 80), ("ir", 2, 3, 1, 2.3, 80)),
    (("ir", 2, 3, 1, 6.0, 112),),
    (("ir", 3, 3, 2, 6.0, 160),),
    (("cn", 1, 1, 1, 1.0, 960),),
)
SMALL_MINIMAL_ARCH: tuple[Stage, ...] = (
    (("ds", 1, 3, 2, 1.0, 16),),
    (("ir", 1, 3, 2, 4.5, 24), ("ir", 1, 3, 1, 3.67, 24)),
    (("ir", 1, 3, 2, 4.0, 40), ("ir", 2, 3, 1, 6.0, 40)),
    (("ir", 2, 3, 1, 3.0, 48),),
    (("ir", 3, 3, 2, 6.0, 96),),
    (("cn", 1, 1, 1, 1.0, 576),),
)


class MobileNetV3MinimalFeatures(nn.Module):
    """timm's ``MobileNetV3Features`` (``features_only=True``) for a "minimal" arch, module for module.

    Stem (3x3 stride-2 conv, BN, ReLU) and the stages under ``blocks.{stage}.{block}``. ``forward`` returns the last
    feature map (stride 32); ``features`` returns every map timm's feature extractor returns: the stem's when the first
    stage starts with a stride, then the end of each stage followed by a strided stage, and the last stage.
    """

    def __init__(self, arch: tuple[Stage, ...], in_chans: int = 3) -> None:
        super().__init__()
        stem = make_divisible(STEM_CHANNELS)
        self.conv_stem = conv2d_tf_same(in_chans, stem, 3, stride=2)
        self.bn1 = nn.BatchNorm2d(stem, eps=BN_EPS)
        self.act1 = nn.ReLU(inplace=True)
        stages: list[nn.Sequential] = []
        info: list[dict[str, int]] = []
        in_chs, reduction = stem, 2
        self._stem_is_feature = arch[0][0][3] > 1
        if self._stem_is_feature:
            info.append({"stage": -1, "num_chs": stem, "reduction": reduction})
        for index, stage in enumerate(arch):
            blocks: list[nn.Module] = []
            for kind, repeats, kernel, first_stride, exp_ratio, out in stage:
                out_chs = make_divisible(out)
                for _ in range(repeats):
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
            last = index + 1 == len(arch)
            if last or arch[index + 1][0][3] > 1:
                info.append({"stage": index, "num_chs": in_chs, "reduction": reduction})
        self.blocks = nn.Sequential(*stages)
        self.feature_info = info
        self._feature_stages = {entry["stage"] for entry in info}

    @property
    def num_features(self) -> int:
        return self.feature_info[-1]["num_chs"]

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.act1(self.bn1(self.conv_stem(x)))
        out = [x] if self._stem_is_feature else []
        for index, stage in enumerate(self.blocks):
            x = stage(x)
            if index in self._feature_stages:
                out.append(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv_stem(x)))
        return self.blocks(x)


class MobileNetV3LargeMinimalFeatures(MobileNetV3MinimalFeatures):
    """``tf_mobilenetv3_large_minimal_100``: SMIRK's shape and expression backbone, last map [N, 960, H/32, W/32]."""

    def __init__(self, in_chans: int = 3) -> None:
        super().__init__(LARGE_MINIMAL_ARCH, in_chans)


class MobileNetV3SmallMinimalFeatures(MobileNetV3MinimalFeatures):
    """``tf_mobilenetv3_small_minimal_100``: SMIRK's pose backbone, last map [N, 576, H/32, W/32]."""

    def __init__(self, in_chans: int = 3) -> None:
        super().__init__(SMALL_MINIMAL_ARCH, in_chans)
