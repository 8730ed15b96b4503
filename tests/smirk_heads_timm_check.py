"""SMIRK's whole encoder built from timm, as SMIRK builds it, against the pack's plain-torch ``load_smirk``.

Run with an interpreter that has timm (the ComfyUI venv): ``python tests/smirk_heads_timm_check.py [--write-layout]``.
Prints one JSON line.

The reference side never touches the pack's model code: each encoder is ``timm.create_model(name, features_only=True)``
plus one ``nn.Linear`` named as in SMIRK's ``src/smirk_encoder.py`` (``pose_cam_layers``, ``shape_layers``,
``expression_layers``), with random weights and random BatchNorm statistics. Its ``state_dict`` under
``smirk_encoder.`` (and decoys standing for SMIRK's generator) is saved as a ``SMIRK_em1.pt``; the pack loads that file
with its strict loader, so a key name that differs from timm's fails the load. Both then read the same crops.

``--write-layout`` also writes ``tests/data/smirk_encoder_layout.json`` (every key, shape and dtype of the three
encoders as timm names them), which the random-checkpoint builder uses where timm does not import; without the flag
the JSON line says whether the committed file still equals timm's layout.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
LAYOUT_FILE = REPO / "tests" / "data" / "smirk_encoder_layout.json"

BACKBONES = {"pose": "tf_mobilenetv3_small_minimal_100", "shape": "tf_mobilenetv3_large_minimal_100",
             "expression": "tf_mobilenetv3_large_minimal_100"}
HEADS = {"pose": ("pose_cam_layers", 6), "shape": ("shape_layers", 300), "expression": ("expression_layers", 55)}


class TimmPart(nn.Module):
    """One of SMIRK's encoders as SMIRK writes it: ``encoder`` (timm, features_only) + a one-Linear Sequential."""

    def __init__(self, part: str) -> None:
        import timm

        super().__init__()
        self.encoder = timm.create_model(BACKBONES[part], pretrained=False, features_only=True)
        head, width = HEADS[part]
        self.head_name = head
        setattr(self, head, nn.Sequential(nn.Linear(self.encoder.feature_info[-1]["num_chs"], width)))

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        features = F.adaptive_avg_pool2d(self.encoder(img)[-1], (1, 1)).squeeze(-1).squeeze(-1)
        return getattr(self, self.head_name)(features)


class TimmSmirk(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pose_encoder = TimmPart("pose")
        self.shape_encoder = TimmPart("shape")
        self.expression_encoder = TimmPart("expression")


def randomise(model: nn.Module, seed: int) -> None:
    """Random weights and BatchNorm statistics that keep activations O(1) through the residual stacks."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                tensor.fill_(int(torch.randint(1, 10_000, (1,), generator=g)))
            elif name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=g) * 1.5 + 0.5)
            elif name.endswith("running_mean") or name.endswith(".bias"):
                tensor.copy_(torch.randn(tensor.shape, generator=g) * 0.1)
            elif name.endswith((".bn3.weight", "blocks.0.0.bn2.weight")):
                tensor.copy_(torch.rand(tensor.shape, generator=g) * 0.2 + 0.1)
            elif tensor.ndim == 1:
                tensor.copy_(torch.rand(tensor.shape, generator=g) * 0.5 + 0.75)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=g) * (2.0 / tensor[0].numel()) ** 0.5)


def smirk_expression_activations(raw: torch.Tensor) -> torch.Tensor:
    """SMIRK's ExpressionEncoder.forward outputs, concatenated as the Arc2Face demo concatenates them."""
    return torch.cat([raw[:, :50], raw[:, 50:52].clamp(0, 1), F.relu(raw[:, 52:53]), raw[:, 53:55].clamp(-.2, .2)],
                     dim=1)


def layout(model: TimmSmirk) -> dict:
    """{part: {key: [shape, dtype]}} in state-dict order."""
    return {part: {k: [list(v.shape), str(v.dtype).replace("torch.", "")]
                   for k, v in getattr(model, f"{part}_encoder").state_dict().items()}
            for part in ("pose", "shape", "expression")}


def layout_text(data: dict) -> str:
    """The layout as JSON with one key per line (small diffs when timm changes)."""
    parts = [json.dumps(part) + ": {\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in keys.items())
             + "\n}" for part, keys in data.items()]
    return "{\n" + ",\n".join(parts) + "\n}\n"


def main(write_layout: bool) -> dict:
    import timm

    from arc2face_core.expression.smirk import load_smirk

    torch.set_num_threads(1)   # many small convolutions: one thread is the quickest on a busy machine
    torch.manual_seed(0)
    reference = TimmSmirk().eval()
    randomise(reference, seed=7)
    timm_layout = layout(reference)
    result = {"timm": timm.__version__,
              "channels": {p: getattr(reference, f"{p}_encoder").encoder.feature_info.channels()[-1]
                           for p in ("pose", "shape", "expression")}}
    if write_layout:
        LAYOUT_FILE.write_text(layout_text(timm_layout))
    result["layout_file_matches_timm"] = (LAYOUT_FILE.is_file()
                                          and json.loads(LAYOUT_FILE.read_text()) == timm_layout)

    checkpoint = {f"smirk_encoder.{k}": v for k, v in reference.state_dict().items()}
    checkpoint["smirk_generator.encoder.0.conv.weight"] = torch.randn(32, 6, 3, 3)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "SMIRK_em1.pt"
        torch.save(checkpoint, path)
        ours = load_smirk(path)
        only_pose = load_smirk(path, ["pose"])

    g = torch.Generator().manual_seed(3)
    crops = torch.rand(3, 3, 224, 224, generator=g)
    bgr = crops.flip(1)
    with torch.no_grad():
        pose_cam = reference.pose_encoder(crops)
        shape = reference.shape_encoder(crops)
        expression = smirk_expression_activations(reference.expression_encoder(bgr))
        out = ours.encode(crops, expression_crops=bgr)
        alone = only_pose.encode(crops)
    diffs = {"pose": (out["pose"] - pose_cam[:, :3]), "camera": (out["camera"] - pose_cam[:, 3:]),
             "shape": (out["shape"] - shape), "expression": (out["expression"] - expression),
             "pose_only_model": (alone["pose"] - pose_cam[:, :3])}
    result["max_abs_diff"] = {name: float(d.abs().max()) for name, d in diffs.items()}
    result["output_abs_max"] = {"pose_cam": float(pose_cam.abs().max()), "shape": float(shape.abs().max()),
                                "expression": float(expression.abs().max())}
    result["rows_differ"] = bool((pose_cam[0] - pose_cam[1]).abs().max() > 1e-4)
    return result


if __name__ == "__main__":
    print(json.dumps(main("--write-layout" in sys.argv[1:])))
