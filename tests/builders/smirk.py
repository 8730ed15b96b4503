"""Write a random-weight ``SMIRK_em1.pt`` in the real key layout.

The real file is a flat state dict of the whole SMIRK model (zip-format torch pickle). The Expression Adapter uses only
``smirk_encoder.expression_encoder.*``: timm's ``tf_mobilenetv3_large_minimal_100`` backbone under ``encoder.`` and
``expression_layers.0`` (Linear 960 → 55). The file written here has those tensors (random, BatchNorm running stats
and ``num_batches_tracked`` included) plus decoys standing for SMIRK's other parts, which a loader must ignore.

The backbone is full size (1.4 M parameters, ~5.7 MB): its key layout is what the test is about, and it cannot be
shrunk without changing the layout.
"""

from __future__ import annotations

from pathlib import Path

import torch

from arc2face_core.expression.smirk import CHECKPOINT_PREFIX, ExpressionEncoder

# Tensors of other SMIRK parts (shape/pose encoders, the generator); names as in SMIRK's training checkpoint.
DECOYS: dict[str, tuple[int, ...]] = {
    "smirk_encoder.pose_encoder.encoder.conv_stem.weight": (16, 3, 3, 3),
    "smirk_encoder.pose_encoder.pose_cam_layers.0.weight": (6, 960),
    "smirk_encoder.shape_encoder.encoder.conv_stem.weight": (16, 3, 3, 3),
    "smirk_encoder.shape_encoder.shape_layers.0.weight": (300, 960),
    "smirk_generator.encoder.0.conv.weight": (32, 6, 3, 3),
    # same tail as a real key, under another part: must not be taken for the expression encoder
    "smirk_encoder.pose_encoder.expression_layers.0.weight": (55, 960),
}


# BatchNorm weights closing a residual branch: bn3 of the inverted residuals, bn2 of the depthwise-separable block
RESIDUAL_BRANCH_NORMS = (".bn3.weight", "blocks.0.0.bn2.weight")


def expression_encoder_shapes() -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Names (without the prefix), shapes and dtypes of the expression encoder's state dict."""
    with torch.device("meta"):
        model = ExpressionEncoder()
    return {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}


def random_expression_encoder_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors for every expression-encoder key (prefix not included).

    Conv/Linear weights at He scale, BatchNorm weights near 1, biases and running means small, running variances
    0.5..1.5, ``num_batches_tracked`` a count: a swapped, skipped or mis-scaled tensor changes the output. The last
    BatchNorm of each residual branch gets weights 0.1..0.3 so that the 16 residual additions do not blow the
    activations up (with weights near 1 the raw outputs reach ~1000; this way they stay ~1).
    """
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for name, (shape, dtype) in expression_encoder_shapes().items():
        if name.endswith("num_batches_tracked"):
            sd[name] = torch.tensor(int(torch.randint(1, 10_000, (1,), generator=g)), dtype=torch.long)
        elif name.endswith("running_var"):
            sd[name] = torch.rand(shape, generator=g) + 0.5
        elif name.endswith("running_mean") or name.endswith(".bias"):
            sd[name] = torch.randn(shape, generator=g) * 0.1
        elif name.endswith(RESIDUAL_BRANCH_NORMS):
            sd[name] = torch.rand(shape, generator=g) * 0.2 + 0.1
        elif len(shape) == 1:   # BatchNorm weight
            sd[name] = torch.rand(shape, generator=g) * 0.5 + 0.75
        else:
            fan_in = 1
            for dim in shape[1:]:
                fan_in *= dim
            sd[name] = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
        assert sd[name].dtype == dtype, name
    return sd


def write_smirk_checkpoint(path: str | Path, seed: int = 0, *, decoys: bool = True) -> Path:
    """Write the flat SMIRK-layout checkpoint to ``path`` (zip-format ``torch.save``); return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed + 1000)
    full: dict[str, torch.Tensor] = {}
    if decoys:
        full.update({k: torch.randn(shape, generator=g) for k, shape in DECOYS.items()})
    full.update({CHECKPOINT_PREFIX + k: v for k, v in random_expression_encoder_state_dict(seed).items()})
    torch.save(full, path)
    return path
