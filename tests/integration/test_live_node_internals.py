"""Node internals a prompt cannot show, checked in ComfyUI's own interpreter (tests/comfyui_checks/node_internals.py):
the Pose ControlNet chain, the SMIRK cache and the ID encoder's dtype and device."""

from __future__ import annotations

from pathlib import Path

import pytest

from fixtures_comfyui import run_in_comfyui

CHECKS = Path(__file__).resolve().parents[1] / "comfyui_checks"


@pytest.fixture(scope="module")
def internals(comfy_install, tmp_path_factory) -> dict:
    return run_in_comfyui(comfy_install, CHECKS / "node_internals.py", str(tmp_path_factory.mktemp("internals")))


def test_pose_control_is_one_chain_for_both_cfg_halves(internals):
    m = internals["pose"]
    assert m["shared"] and m["stacked_shared"] and m["stacked_on_stock"]
    assert (m["strength"], m["range"], m["upscale"], m["previous_is_none"]) == (0.8, [0.1, 0.9], "bilinear", True)
    assert m["hint_shape"] == [2, 3, 512, 512]                    # prepared as trained: 512 px, channels first
    assert m["apply_to_uncond"] == [False, False] and m["inputs_untouched"]
    assert m["strength0_returns_the_inputs"]
    assert m["start_after_end"] == ("InvalidInputError: start_percent (0.7) is after end_percent (0.3): the control "
                                    "would never act")


def test_the_sampler_lays_per_identity_hints_out_and_keeps_the_chain_shared(internals):
    m = internals["pose"]
    assert m["expanded_shared"] and m["expanded_rows_by_hand"] and m["expanded_keeps_the_stock_control"]
    assert m["expanded_settings"] == [0.8, [0.1, 0.9], "bilinear"] and m["original_untouched"]


def test_smirk_is_loaded_once_and_reloaded_when_the_file_changes(internals):
    m = internals["smirk"]
    mine = m["searched"][0]
    assert mine.endswith("/arc2face") and len(m["searched"]) == 2     # the user's folder first, then models/arc2face
    assert m["loads_after_two_reads"] == [f"{mine}/smirk/SMIRK_em1.pt"]   # two photos, one load
    assert m["cached_patcher_reused"] and m["smirk_memory_managed"]
    assert m["two_photos_differ"] > 1e-4
    assert m["loads_after_replacing_the_file"] == [f"{mine}/smirk/SMIRK_em1.pt"] * 2
    assert m["replaced_file_changes_the_expression"] > 1e-3 and m["cache_size"] == 1   # the old one is dropped


@pytest.mark.parametrize("weight_dtype, computes_in", [("auto", "fp32"), ("fp32", "fp32"), ("bf16", "bf16"),
                                                       ("fp16", "fp16")])
def test_encoder_dtype_device_and_memory_manager(internals, weight_dtype, computes_in):
    """The encoder computes in the chosen dtype: within one unit in the last place (of that dtype) of transformers'
    CLIPTextModel computing in the same dtype, and several away from the float32 maths (so the check tells the dtypes
    apart). Outputs are float32 CONDITIONING on ComfyUI's intermediate device; the encoder is memory-managed."""
    m = internals["encoder"]
    entry = m[weight_dtype]
    torch_name = {"fp32": "torch.float32", "bf16": "torch.bfloat16", "fp16": "torch.float16"}[computes_in]
    assert entry["weight_dtype"] == torch_name               # auto on the CPU: float32, like the reference there
    assert entry["load_device"] == "cpu" and entry["memory_managed"]
    assert entry["outputs"] == [f"torch.float32 {m['intermediate_device']}"]
    assert entry["shapes"] == [[3, 77, 768], [1, 77, 768]]
    assert entry[f"ulps_vs_{computes_in}"] <= 1.0, entry
    if computes_in != "fp32":
        assert entry["ulps_vs_fp32"] > 2.0, entry
