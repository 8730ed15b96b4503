"""Compare arc2face_core.expression.smirk's backbone with timm's own ``tf_mobilenetv3_large_minimal_100``
(features_only=True).

Run with an interpreter that has timm (it needs torchvision, so not the pack's test venv), from the repo root or
anywhere: ``python tests/smirk_timm_check.py [--write-layout]``. Prints one JSON line with the largest absolute
differences, and whether tests/data/smirk_expression_encoder_timm.json (the layout the checkpoint builder uses where
timm does not import) still equals timm's (``--write-layout`` rewrites it).

timm's model gets random weights *and* random BatchNorm statistics (its own init leaves them at 0/1, which would hide
a wrong eps or a swapped mean/var); they are copied into the pack's model with a strict load, and both run on the same
random inputs, including odd sizes where TensorFlow 'SAME' padding is asymmetric.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from arc2face_core.expression.smirk import (  # noqa: E402
    ExpressionEncoder,
    MobileNetV3LargeMinimalFeatures,
    load_smirk_encoder,
)
from builders import smirk as smirk_builder  # noqa: E402

SIZES = ((224, 224), (225, 199), (97, 130))


def randomise(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=g) * 1.5 + 0.5)
            elif name.endswith("running_mean") or name.endswith(".bias"):
                tensor.copy_(torch.randn(tensor.shape, generator=g) * 0.1)
            elif name.endswith((".bn3.weight", "blocks.0.0.bn2.weight")):   # closing a residual branch: small,
                tensor.copy_(torch.rand(tensor.shape, generator=g) * 0.2 + 0.1)  # so activations stay ~1, not ~1000
            elif tensor.ndim == 1:   # BatchNorm weight
                tensor.copy_(torch.rand(tensor.shape, generator=g) * 0.5 + 0.75)
            else:                    # conv / linear weight, He-like scale so activations stay O(1)
                fan_in = tensor[0].numel()
                tensor.copy_(torch.randn(tensor.shape, generator=g) * (2.0 / fan_in) ** 0.5)


def main() -> dict:
    import timm

    torch.set_num_threads(1)   # many small convolutions: one thread is the quickest on a busy machine
    torch.manual_seed(0)
    reference = timm.create_model("tf_mobilenetv3_large_minimal_100", pretrained=False, features_only=True).eval()
    randomise(reference, seed=1)
    ours = MobileNetV3LargeMinimalFeatures().eval()
    ours.load_state_dict(reference.state_dict(), strict=True)

    result = {"timm": timm.__version__, "channels": reference.feature_info.channels(),
              "reductions": reference.feature_info.reduction(),
              "our_channels": [f["num_chs"] for f in ours.feature_info],
              "our_reductions": [f["reduction"] for f in ours.feature_info], "sizes": {}}
    g = torch.Generator().manual_seed(2)
    worst = 0.0
    with torch.no_grad():
        for height, width in SIZES:
            x = torch.rand(2, 3, height, width, generator=g)
            ref_feats = reference(x)
            our_feats = ours.features(x)
            last = ours(x)
            diffs = [float((a - b).abs().max()) for a, b in zip(ref_feats, our_feats)]
            shapes = [list(f.shape) for f in ref_feats]
            same_shapes = shapes == [list(f.shape) for f in our_feats]
            diffs.append(float((last - ref_feats[-1]).abs().max()))
            scale = float(ref_feats[-1].abs().max())
            result["sizes"][f"{height}x{width}"] = {"max_abs_diff": max(diffs), "same_shapes": same_shapes,
                                                    "shapes": shapes, "last_feature_abs_max": scale}
            worst = max(worst, max(diffs)) if same_shapes else float("inf")

        # the whole expression encoder: timm backbone + pool + Linear vs ExpressionEncoder.forward
        encoder = ExpressionEncoder().eval()
        encoder.encoder.load_state_dict(reference.state_dict(), strict=True)
        x = torch.rand(3, 3, 224, 224, generator=g)
        pooled = F.adaptive_avg_pool2d(reference(x)[-1], (1, 1)).squeeze(-1).squeeze(-1)
        raw_ref = encoder.expression_layers(pooled)
        result["encoder_max_abs_diff"] = float((encoder(x) - raw_ref).abs().max())
    result["max_abs_diff"] = max(worst, result["encoder_max_abs_diff"])
    result.update(checkpoint_checks())
    return result


def checkpoint_checks() -> dict:
    """The random SMIRK_em1.pt the tests use: its layout is timm's, and the pack's loader + forward give what timm's
    model with SMIRK's head gives on the same file (the expected values of the forward come from timm here)."""
    import tempfile

    timm_layout = smirk_builder.timm_layout()
    out = {"recorded_layout_is_timms": smirk_builder.recorded_layout() == timm_layout,
           "builder_uses_timm": smirk_builder.expression_encoder_shapes() == timm_layout}
    with tempfile.TemporaryDirectory() as folder:
        path = smirk_builder.write_smirk_checkpoint(Path(folder) / "SMIRK_em1.pt", seed=3)
        state = torch.load(path, weights_only=True)
        prefix = smirk_builder.CHECKPOINT_PREFIX
        reference = smirk_builder.timm_expression_encoder().eval()
        reference.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, strict=True)
        ours = load_smirk_encoder(path)
        g = torch.Generator().manual_seed(4)
        x = torch.rand(3, 3, 224, 224, generator=g)
        with torch.no_grad():
            pooled = F.adaptive_avg_pool2d(reference.encoder(x)[-1], (1, 1)).flatten(1)
            expected = reference.expression_layers(pooled)
            raw = ours(x)
        out["checkpoint_forward_max_abs_diff"] = float((raw - expected).abs().max())
        out["checkpoint_forward_scale"] = float(expected.abs().max())
    return out


if __name__ == "__main__":
    if "--write-layout" in sys.argv:
        smirk_builder.write_layout_file(smirk_builder.timm_layout())
    print(json.dumps(main()))
