"""Compare arc2face_core.smirk's backbone with timm's own ``tf_mobilenetv3_large_minimal_100`` (features_only=True).

Run with an interpreter that has timm (it needs torchvision, so not the pack's test venv), from the repo root or
anywhere: ``python tests/smirk_timm_check.py``. Prints one JSON line with the largest absolute differences.

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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arc2face_core.expression.smirk import ExpressionEncoder, MobileNetV3LargeMinimalFeatures  # noqa: E402

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
    return result


if __name__ == "__main__":
    print(json.dumps(main()))
