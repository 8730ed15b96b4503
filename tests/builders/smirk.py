"""Write a random-weight ``SMIRK_em1.pt`` in the real key layout.

The real file is a flat state dict of the whole SMIRK model (zip-format torch pickle). The Expression Adapter uses only
``smirk_encoder.expression_encoder.*``: timm's ``tf_mobilenetv3_large_minimal_100`` backbone (``features_only``) under
``encoder.`` and ``expression_layers.0`` (Linear 960 → 55), as SMIRK's ``smirk_encoder.py`` names them. The file
written here has those tensors (random, BatchNorm running stats and ``num_batches_tracked`` included) plus decoys
standing for SMIRK's other parts, which a loader must ignore.

Names, shapes and dtypes come from timm's own model where timm imports (the ComfyUI venv), else from
``tests/data/smirk_expression_encoder_timm.json``, which ``tests/smirk_timm_check.py --write-layout`` writes from timm
(and whose check fails when the file no longer equals timm's model). Never from the pack's own encoder: a name the
pack spells differently from timm then fails its strict loader. The random values depend only on the layout and the
seed, so both sources write the same file.

The backbone is full size (1.4 M parameters, ~5.7 MB): its key layout is what the test is about, and it cannot be
shrunk without changing the layout.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Mapping

import torch

CHECKPOINT_PREFIX = "smirk_encoder.expression_encoder."   # written out here, not read from the pack
LAYOUT_FILE = Path(__file__).resolve().parents[1] / "data" / "smirk_expression_encoder_timm.json"
BACKBONE = "tf_mobilenetv3_large_minimal_100"
EXPRESSION_HEAD = ("expression_layers", 960, 55)

# Tensors of other SMIRK parts (pose and shape encoders, the generator); names as in SMIRK's training checkpoint. The
# pose encoder is the small MobileNetV3 (576 features), the shape encoder the large one (960).
DECOYS: dict[str, tuple[int, ...]] = {
    "smirk_encoder.pose_encoder.encoder.conv_stem.weight": (16, 3, 3, 3),
    "smirk_encoder.pose_encoder.pose_cam_layers.0.weight": (6, 576),
    "smirk_encoder.shape_encoder.encoder.conv_stem.weight": (16, 3, 3, 3),
    "smirk_encoder.shape_encoder.shape_layers.0.weight": (300, 960),
    "smirk_generator.encoder.0.conv.weight": (32, 6, 3, 3),
    # same tail as a real key, under another part: must not be taken for the expression encoder
    "smirk_encoder.pose_encoder.expression_layers.0.weight": (55, 576),
}


def timm_expression_encoder() -> torch.nn.Module:
    """SMIRK's expression encoder built as SMIRK builds it: timm's backbone (features_only) and a one-Linear head."""
    import timm

    module = torch.nn.Module()
    module.encoder = timm.create_model(BACKBONE, pretrained=False, features_only=True)
    name, features, outputs = EXPRESSION_HEAD
    setattr(module, name, torch.nn.Sequential(torch.nn.Linear(features, outputs)))
    return module


def timm_layout() -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    with torch.device("meta"):
        model = timm_expression_encoder()
    return {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}


def recorded_layout() -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    raw = json.loads(LAYOUT_FILE.read_text())
    return {k: (tuple(shape), getattr(torch, dtype)) for k, (shape, dtype) in raw.items()}


def write_layout_file(layout: dict[str, tuple[tuple[int, ...], torch.dtype]]) -> None:
    lines = [f" {json.dumps(k)}: [{json.dumps(list(shape))}, {json.dumps(str(dtype).removeprefix('torch.'))}]"
             for k, (shape, dtype) in layout.items()]
    LAYOUT_FILE.write_text("{\n" + ",\n".join(lines) + "\n}\n")


@functools.lru_cache(maxsize=1)
def expression_encoder_shapes() -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Names (without the prefix), shapes and dtypes of SMIRK's expression encoder, as timm and SMIRK name them."""
    try:
        import timm  # noqa: F401
    except ImportError:
        return recorded_layout()
    return timm_layout()


# BatchNorm weights closing a residual branch: bn3 of the inverted residuals, bn2 of the depthwise-separable block
RESIDUAL_BRANCH_NORMS = (".bn3.weight", "blocks.0.0.bn2.weight")


def random_encoder_weights(shapes: Mapping[str, tuple[int, ...]],
                           generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Random tensors for a MobileNetV3 encoder's keys (SMIRK's three share the recipe), drawn in key order.

    Conv/Linear weights at He scale, BatchNorm weights near 1, biases and running means small, running variances
    0.5..1.5, ``num_batches_tracked`` a count: a swapped, skipped or mis-scaled tensor changes the output. The last
    BatchNorm of each residual branch gets weights 0.1..0.3 so that the 16 residual additions do not blow the
    activations up (with weights near 1 the raw outputs reach ~1000; this way they stay ~1).
    """
    g = generator
    sd: dict[str, torch.Tensor] = {}
    for name, shape in shapes.items():
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
    return sd


def random_expression_encoder_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors for every expression-encoder key (prefix not included), in timm's dtypes."""
    layout = expression_encoder_shapes()
    shapes = {name: shape for name, (shape, _) in layout.items()}
    sd = random_encoder_weights(shapes, torch.Generator().manual_seed(seed))
    for name, (_, dtype) in layout.items():
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
