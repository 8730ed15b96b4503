"""Every ComfyUI internal the nodes use exists in the ComfyUI the pack is tested with, and a node refuses cleanly
(naming the internal, its use and the tested version) when one is taken away (tests/comfyui_checks/internals_guard.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fixtures_comfyui import run_in_comfyui

pytestmark = pytest.mark.comfyui
CHECKS = Path(__file__).resolve().parents[1] / "comfyui_checks"
TESTED = "The pack was tested with ComfyUI 0.3.64 (commit a125cd84)"


@pytest.fixture(scope="module")
def guard(comfy_install) -> dict:
    return run_in_comfyui(comfy_install, CHECKS / "internals_guard.py")


def test_every_listed_internal_exists_in_the_tested_comfyui(guard):
    assert guard["missing"] == {}


def test_the_model_loader_refuses_cleanly_without_comfyuis_unet_loader(guard):
    assert guard["loader"] == (
        "ComfyInternalsError: Arc2Face needs ComfyUI's comfy.sd.load_diffusion_model (Arc2Face Model Loader: the UNet "
        "(diffusers keys converted by ComfyUI)), which this ComfyUI does not have (AttributeError: module 'comfy.sd' "
        f"has no attribute 'load_diffusion_model'). {TESTED}: use that ComfyUI version, or update the pack if a "
        "newer one supports yours.")
    assert len(guard["logged"]) == 1 and "lacks 1 internal(s)" in guard["logged"][0]
    assert "comfy.sd:load_diffusion_model" in guard["logged"][0]
    assert guard["loader_restored"] == "ModelPatcher"   # put back, the same call loads the model


def test_a_missing_method_module_or_key_is_named(guard):
    assert guard["method"].startswith("ComfyInternalsError: Arc2Face needs ComfyUI's "
                                      "comfy.model_patcher.ModelPatcher.add_patches (the Reference Adapter's LoRA)")
    assert guard["method"].endswith(f"{TESTED}: use that ComfyUI version, or update the pack if a newer one supports "
                                    "yours.")
    assert guard["module"].startswith("ComfyInternalsError: Arc2Face needs ComfyUI's "
                                      "comfy_execution.graph_utils.ExecutionBlocker (Filter by Identity")
    assert guard["key_missing"] == {"option key 'arc2face_no_such_key' (comfy.samplers)": "a key taken away"}
    assert guard["unlisted"].startswith("KeyError: 'comfy.sd:load_checkpoint_guess_config is not listed")
