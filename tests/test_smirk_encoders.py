"""SMIRK's whole encoder: the pose (small minimal MobileNetV3) and shape heads beside the expression head.

Independent routes: key names and shapes against ``tests/data/smirk_encoder_layout.json``, which timm's own models
wrote (tests/smirk_heads_timm_check.py, which also fails when the file no longer matches timm); the checkpoints come
from that layout, not from the pack's modules; each head against pooling and the linear layer written out here; and,
where timm imports (ComfyUI's venv), every output against SMIRK's encoders built from timm.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from arc2face_core.errors import CorruptWeightsError, InvalidInputError
from arc2face_core.expression.mobilenetv3 import MobileNetV3SmallMinimalFeatures
from arc2face_core.expression.smirk import (
    SmirkEncoder,
    load_smirk,
    load_smirk_encoder,
    postprocess,
)
from builders.smirk_parts import full_state_dict, timm_layout, write_full_smirk_checkpoint

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)   # many small convolutions: one thread is quickest on a busy machine
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def smirk_file(tmp_path_factory) -> Path:
    return write_full_smirk_checkpoint(tmp_path_factory.mktemp("smirk") / "SMIRK_em1.pt", seed=5)


@pytest.fixture(scope="module")
def smirk(smirk_file) -> SmirkEncoder:
    return load_smirk(smirk_file)


@pytest.fixture(scope="module")
def crops() -> torch.Tensor:
    return torch.rand(3, 3, 224, 224, generator=torch.Generator().manual_seed(11))


# ------------------------------------------------------------------------------------------------ layout = timm's

@pytest.mark.parametrize("part", ["pose", "shape", "expression"])
def test_every_key_and_shape_is_timms(part):
    ours = {k: (tuple(v.shape), str(v.dtype).replace("torch.", ""))
            for k, v in SmirkEncoder([part]).part(part).state_dict().items()}
    assert ours == timm_layout()[part]
    assert len(ours) == {"pose": 206, "shape": 278, "expression": 278}[part]   # timm: 204 / 276 backbone + Linear


def test_small_minimal_backbone_maps_as_timm_reports():
    # timm 1.0.31's feature_info for tf_mobilenetv3_small_minimal_100: the stem's map too (stage 0 starts strided)
    backbone = MobileNetV3SmallMinimalFeatures().eval()
    assert [f["num_chs"] for f in backbone.feature_info] == [16, 16, 24, 48, 576]
    assert [f["reduction"] for f in backbone.feature_info] == [2, 4, 8, 16, 32]
    with torch.no_grad():
        feats = backbone.features(torch.rand(1, 3, 224, 224))
        last = backbone(torch.rand(1, 3, 97, 130))
    assert [tuple(f.shape[1:]) for f in feats] == [(16, 112, 112), (16, 56, 56), (24, 28, 28), (48, 14, 14),
                                                    (576, 7, 7)]
    assert tuple(last.shape) == (1, 576, 4, 5)   # TF 'SAME': ceil(97 / 32), ceil(130 / 32)


# ------------------------------------------------------------------------------------------------------- loading

def test_whole_encoder_loads_strictly_and_ignores_the_generator(smirk_file, smirk):
    raw = torch.load(smirk_file, weights_only=True)
    assert any(k.startswith("smirk_generator.") for k in raw)
    for part in ("pose", "shape", "expression"):
        loaded = smirk.part(part).state_dict()
        prefix = f"smirk_encoder.{part}_encoder."
        mine = {k[len(prefix):]: v for k, v in raw.items() if k.startswith(prefix)}
        assert set(loaded) == set(mine)
        for name, tensor in mine.items():
            assert torch.equal(loaded[name], tensor), name
    assert not smirk.training and all(not p.requires_grad for p in smirk.parameters())


def test_one_part_reads_only_its_keys(tmp_path):
    # a file holding only the pose encoder loads as a pose encoder and fails for the others, naming the prefix
    path = tmp_path / "SMIRK_em1.pt"
    torch.save(full_state_dict(seed=2, parts=("pose",)), path)
    pose_only = load_smirk(path, ["pose"])
    assert pose_only.parts == ("pose",)
    with pytest.raises(InvalidInputError, match="without its shape part"):
        pose_only.part("shape")
    with pytest.raises(CorruptWeightsError, match=r"no SMIRK shape-encoder weights \(no key starts with "
                                                  r"'smirk_encoder\.shape_encoder\.'"):
        load_smirk(path)
    with pytest.raises(CorruptWeightsError, match="no SMIRK expression-encoder weights"):
        load_smirk_encoder(path)


def _edited(tmp_path, change) -> Path:
    sd = full_state_dict(seed=3)
    change(sd)
    path = tmp_path / "SMIRK_em1.pt"
    torch.save(sd, path)
    return path


def test_old_decoy_shape_of_the_pose_head_is_refused(tmp_path):
    # SMIRK's pose head reads the small backbone's 576 channels; a (6, 960) head is not SMIRK's
    path = _edited(tmp_path, lambda sd: sd.__setitem__("smirk_encoder.pose_encoder.pose_cam_layers.0.weight",
                                                       torch.zeros(6, 960)))
    with pytest.raises(CorruptWeightsError, match=r"pose encoder have the wrong shape \(pose_cam_layers\.0\.weight: "
                                                  r"\(6, 960\) instead of \(6, 576\)\)"):
        load_smirk(path)


def test_missing_and_renamed_keys_name_the_part(tmp_path):
    def rename(sd):
        sd["smirk_encoder.shape_encoder.encoder.blocks.6.0.conv.weights"] = sd.pop(
            "smirk_encoder.shape_encoder.encoder.blocks.6.0.conv.weight")

    with pytest.raises(CorruptWeightsError) as err:
        load_smirk(_edited(tmp_path, rename))
    text = str(err.value)
    assert "shape encoder (MobileNetV3 large minimal + Linear(960, 300))" in text
    assert "missing 1 tensors ['encoder.blocks.6.0.conv.weight']" in text
    assert "unexpected 1 ['encoder.blocks.6.0.conv.weights']" in text and "SMIRK_em1.pt" in text


def test_nan_in_the_pose_encoder_is_refused(tmp_path):
    path = _edited(tmp_path, lambda sd: sd["smirk_encoder.pose_encoder.encoder.blocks.4.2.bn2.running_var"]
                   .__setitem__(3, float("inf")))
    with pytest.raises(CorruptWeightsError, match="blocks.4.2.bn2.running_var"):
        load_smirk(path)


@pytest.mark.parametrize("parts", [[], ["pose", "eyes"], "jaw", None])
def test_unknown_parts_are_refused(smirk_file, parts):
    with pytest.raises(InvalidInputError, match="SMIRK parts must be some of"):
        load_smirk(smirk_file, parts)


# ------------------------------------------------------------------------------------------------------- outputs

def _linear_on_pooled(part: torch.nn.Module, head: str, x: torch.Tensor) -> torch.Tensor:
    """SMIRK's forward written out: mean over the last map's pixels, then x @ W^T + b."""
    pooled = part.encoder.features(x)[-1].mean(dim=(2, 3))
    layer = getattr(part, head)[0]
    return pooled @ layer.weight.T + layer.bias


def test_each_head_is_pool_then_linear(smirk, crops):
    with torch.no_grad():
        pose_cam = _linear_on_pooled(smirk.pose_encoder, "pose_cam_layers", crops)
        shape = _linear_on_pooled(smirk.shape_encoder, "shape_layers", crops)
        expression = _linear_on_pooled(smirk.expression_encoder, "expression_layers", crops)
    out = smirk.encode(crops)
    assert {k: tuple(v.shape) for k, v in out.items()} == {"pose": (3, 3), "camera": (3, 3), "shape": (3, 300),
                                                           "expression": (3, 55)}
    assert all(v.dtype == torch.float32 and v.device.type == "cpu" for v in out.values())
    torch.testing.assert_close(out["pose"], pose_cam[:, :3], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["camera"], pose_cam[:, 3:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["shape"], shape, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["expression"], postprocess(expression), atol=1e-5, rtol=1e-5)
    assert (out["pose"][0] - out["pose"][1]).abs().max() > 1e-4   # different crops, different poses


def test_expression_crops_feed_only_the_expression_encoder(smirk, crops):
    swapped = crops.flip(1)
    mixed = smirk.encode(crops, expression_crops=swapped)
    plain, other = smirk.encode(crops), smirk.encode(swapped)
    for name in ("pose", "camera", "shape"):
        torch.testing.assert_close(mixed[name], plain[name], atol=0, rtol=0)
    torch.testing.assert_close(mixed["expression"], other["expression"], atol=0, rtol=0)
    assert (plain["expression"] - other["expression"]).abs().max() > 1e-4
    with pytest.raises(InvalidInputError, match="2 expression crops for 3 faces"):
        smirk.encode(crops, expression_crops=swapped[:2])


def test_expression_part_alone_equals_the_whole_encoders(smirk_file, smirk, crops):
    alone = load_smirk_encoder(smirk_file)
    torch.testing.assert_close(alone.encode(crops), smirk.encode(crops)["expression"], atol=0, rtol=0)


def test_bad_crops_are_refused(smirk):
    with pytest.raises(InvalidInputError, match=r"\[N, 3, 224, 224\]"):
        smirk.encode(torch.rand(1, 3, 112, 112))
    with pytest.raises(InvalidInputError, match="divide by 255"):
        smirk.encode(torch.rand(1, 3, 224, 224) * 255)


# ---------------------------------------------------------------------------------------------- timm equivalence

def test_whole_encoder_equals_smirk_built_from_timm():
    """SMIRK's three encoders from timm (random weights), saved as SMIRK_em1.pt and loaded by the pack: every output
    equal, and the committed key layout still timm's. Runs with ComfyUI's interpreter, which has timm."""
    comfy = os.environ.get("COMFYUI_DIR")
    if not comfy:
        pytest.skip("set COMFYUI_DIR to a ComfyUI whose venv has timm to compare with timm itself")
    python = Path(comfy) / "venv" / "bin" / "python"
    if not python.exists() or subprocess.run([str(python), "-c", "import timm"], capture_output=True).returncode:
        pytest.skip(f"timm cannot be imported by {python}")
    run = subprocess.run([str(python), str(TESTS / "smirk_heads_timm_check.py")], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["layout_file_matches_timm"], "tests/data/smirk_encoder_layout.json differs from timm's layout"
    assert result["channels"] == {"pose": 576, "shape": 960, "expression": 960}
    assert result["rows_differ"] and min(result["output_abs_max"].values()) > 0.1
    assert max(result["max_abs_diff"].values()) <= 1e-6, result


def test_layout_file_is_what_the_builder_reads():
    # the builder's layout is the committed timm file (never the pack's modules): same parts, same first keys
    data = json.loads((TESTS / "data" / "smirk_encoder_layout.json").read_text())
    assert list(data) == ["pose", "shape", "expression"]
    assert list(data["pose"])[:2] == ["encoder.conv_stem.weight", "encoder.bn1.weight"]
    assert data["pose"]["pose_cam_layers.0.weight"] == [[6, 576], "float32"]
    assert data["shape"]["shape_layers.0.weight"] == [[300, 960], "float32"]
    assert sys.modules["builders.smirk_parts"].LAYOUT_FILE == TESTS / "data" / "smirk_encoder_layout.json"
