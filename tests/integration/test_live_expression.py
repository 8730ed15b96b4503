"""The Expression Adapter inside a real ComfyUI: its patch on ComfyUI's own UNet, attention and memory manager."""

from __future__ import annotations

from pathlib import Path

from fixtures_comfyui import run_in_comfyui

CHECKS = Path(__file__).resolve().parents[1] / "comfyui_checks"


SD15_ATTN2_KEYS = sorted([["input", n] for n in (1, 2, 4, 5, 7, 8)] + [["middle", 0]] +
                         [["output", n] for n in range(3, 12)])


def test_expression_adapter_patch_inside_comfyui(comfy_install):
    """Run in ComfyUI's own interpreter on its UNet: keys, weight 0, cond/uncond tokens, range, stacking, memory."""
    m = run_in_comfyui(comfy_install, CHECKS / "expression_patch.py")
    assert m["registered_keys"] == SD15_ATTN2_KEYS                                  # all 16, ("middle", 0) included
    assert m["called_keys"] == [[key, 1] for key in SD15_ATTN2_KEYS]                # each one reached by ComfyUI
    assert m["adapter_loaded_with_model"]                                            # memory-managed with the UNet
    assert m["weight0_max_diff"] == 0.0 and m["weight1_max_diff"] > 1e-3
    assert m["cond_rows_vs_cond_only"] < 1e-4 and m["uncond_rows_vs_uncond_only"] < 1e-4
    assert m["uncond_vs_zero_expression"] < 1e-4 and m["uncond_vs_no_adapter"] > 1e-3   # zero-expression tokens
    assert m["identity_order_matters"] > 1e-3                                        # per-identity expressions
    assert m["outside_range_vs_plain"] == 0.0 and m["inside_range_vs_plain"] > 1e-3
    assert m["stacked_weight0_vs_foreign"] == 0.0 and m["foreign_vs_plain"] > 1e-3   # stacks, does not replace
    assert m["stacked_weight1_vs_foreign"] > 1e-3
