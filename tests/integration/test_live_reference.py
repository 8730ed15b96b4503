"""The Reference Adapter in a real ComfyUI: its patch against diffusers, the shipped workflows, errors, composition."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from builders.ui_workflows import FILE_COMBOS, check_ui_workflow, ui_to_api
from comfyui_client import FAST, SAMPLING, error_of, identities_prompt, outputs, save_latent, tag
from fixtures_comfyui import run_in_comfyui

REPO = Path(__file__).resolve().parents[2]
CHECKS = REPO / "tests" / "comfyui_checks"
SD15_BLOCKS = ([["input", n, 0] for n in (1, 2, 4, 5, 7, 8)] + [["middle", 0, 0]] +
               [["output", n, 0] for n in range(3, 12)])


def test_reference_patch_equals_diffusers_inside_comfyui(comfy_install):
    """ComfyUI's UNet with the node's LoRA and attention patch == diffusers with the LoRA fused by peft, hooks on norm1
    of the clean UNet and a processor adding the stored tokens to the conditional rows."""
    m = run_in_comfyui(comfy_install, CHECKS / "reference_patch.py")
    assert m["bank_keys"] == SD15_BLOCKS and m["diffusers_blocks"] == 16 and m["timestep_round_trip"] == 500
    assert m["bank_vs_clean_hooks_max_diff"] < 1e-4 * m["token_scale"]          # stored by the clean pass
    assert m["lora_write_pass_vs_clean_max_diff"] > 1e-2 * m["token_scale"]     # (a LoRA'd pass would differ)
    assert m["rewrite_after_lora_load_diff"] == 0.0                             # also after the LoRA'd weights ran
    tolerance = 1e-4 * m["eps_scale"]
    assert m["cond_max_diff"] < tolerance and m["uncond_max_diff"] < tolerance, m
    assert m["cond_vs_lora_only"] > 100 * tolerance                             # the reference changes cond rows
    assert m["uncond_vs_lora_only"] < tolerance                                 # and leaves uncond rows alone
    assert m["lora_only_vs_plain"] > 100 * tolerance                            # the LoRA acts at its strength
    assert m["order_independent_max_diff"] < tolerance                          # [uncond, cond] as [cond, uncond]
    assert m["peft_style_max_diff"] < tolerance and m["peft_cond_vs_first_model"] > 100 * tolerance
    assert m["banks_loaded_with_model"]
    assert m["expression_order_max_diff"] < tolerance and m["expression_changes_it"] > 100 * tolerance
    assert m["expression_weight0_vs_reference_only"] == 0.0
    assert m["foreign_replace_after_max_diff"] < tolerance and m["foreign_replace_before_max_diff"] < tolerance
    assert m["foreign_replace_calls"] == 16                                       # one per block
    assert "already has a Reference Adapter" in m["second_adapter_error"]


def _workflow_prompt(name: str, object_info: dict) -> dict:
    """A shipped workflow at test size: 64 px images and a 64 px aligned reference (the size it generates)."""
    workflow = json.loads((REPO / "example_workflows" / f"{name}.json").read_text())
    assert check_ui_workflow(workflow, object_info, FILE_COMBOS) == []
    prompt = ui_to_api(workflow, object_info)
    for node in prompt.values():
        if node["class_type"] == "Arc2FaceSampler":
            node["inputs"].update({k: v for k, v in FAST.items() if k in node["inputs"]})
        if node["class_type"] == "Arc2FaceAlignFace":
            node["inputs"]["size"] = FAST["width"]
    return prompt


@pytest.mark.parametrize("name, previews", [("arc2face_reference", 2), ("arc2face_reference_expression", 3)])
def test_reference_workflows_run_end_to_end(comfy, object_info, name, previews):
    prompt = _workflow_prompt(name, object_info)
    entry = comfy.run(prompt)
    assert entry["status"]["status_str"] == "success", error_of(entry)
    save_id = next(i for i, n in prompt.items() if n["class_type"] == "SaveImage")
    assert len(outputs(entry, save_id)) == 4
    preview_ids = [i for i, n in prompt.items() if n["class_type"] == "PreviewImage"]
    assert sum(len(outputs(entry, i)) for i in preview_ids) == previews
    from PIL import Image

    for image in comfy.saved_images(entry, save_id):
        assert Image.open(image).size == (64, 64)


def _reference_prompt(prefix: str, *, align_size: int = 64, size: int = 64, images_per_id: int = 1,
                      references: int = 1) -> dict:
    """identity from a photo; the same photo aligned, encoded and given to the Reference Adapter; Arc2Face Sampler."""
    prompt = identities_prompt(["arc2face_face.png"])
    prompt.update({
        "50": {"class_type": "VAELoader", "inputs": {"vae_name": "sd15_vae.safetensors"}},
        "51": {"class_type": "Arc2FaceAlignFace", "inputs": {"arcface": ["2", 0], "image": ["3", 0],
                                                            "face": "largest", "size": align_size}},
        "52": {"class_type": "VAEEncode", "inputs": {"pixels": ["51", 0], "vae": ["50", 0]}},
        "53": {"class_type": "Arc2FaceReferenceAdapterLoader", "inputs": {}},
        "54": {"class_type": "Arc2FaceReferenceAdapter", "inputs": {
            "model": ["1", 0], "ref_adapter": ["53", 0], "reference": ["52", 0], "positive": ["6", 0],
            "strength": 0.8}},
        "55": {"class_type": "Arc2FaceSampler", "inputs": dict(
            SAMPLING, model=["54", 0], positive=["6", 0], negative=["6", 1], width=size, height=size,
            images_per_id=images_per_id)},
    })
    if references == 2:
        prompt["56"] = {"class_type": "ImageBatch", "inputs": {"image1": ["51", 0], "image2": ["51", 0]}}
        prompt["52"]["inputs"]["pixels"] = ["56", 0]
    save_latent(prompt, "57", "55", prefix)
    return prompt


def test_the_reference_acts_and_composes_with_expression_and_pose(comfy):
    """One graph with the Expression Adapter, the Reference Adapter and the pose ControlNet; each one changes it."""
    t = tag()
    prompt = _reference_prompt(f"r_{t}")
    prompt.update({
        "60": {"class_type": "Arc2FaceSampler", "inputs": dict(prompt["55"]["inputs"], model=["1", 0])},
        "62": {"class_type": "Arc2FaceExpressionAdapterLoader", "inputs": {}},
        "63": {"class_type": "Arc2FaceExpression", "inputs": {"jaw_open": 0.3, "eyelid_left": 0.0,
                                                             "eyelid_right": 0.0, "coefficients": ""}},
        "64": {"class_type": "Arc2FaceExpressionAdapter", "inputs": {
            "model": ["1", 0], "adapter": ["62", 0], "expression": ["63", 0], "weight": 1.0, "start_percent": 0.0,
            "end_percent": 1.0}},
        "65": {"class_type": "Arc2FaceReferenceAdapter", "inputs": dict(prompt["54"]["inputs"], model=["64", 0])},
        "66": {"class_type": "Arc2FaceControlNetLoader", "inputs": {}},
        "67": {"class_type": "LoadImage", "inputs": {"image": "arc2face_normals_turned.png"}},
        "68": {"class_type": "Arc2FacePoseControlNet", "inputs": {
            "positive": ["6", 0], "negative": ["6", 1], "control_net": ["66", 0], "normal_map": ["67", 0],
            "strength": 1.0, "start_percent": 0.0, "end_percent": 1.0}},
        "69": {"class_type": "Arc2FaceSampler", "inputs": dict(prompt["55"]["inputs"], model=["65", 0])},
        "70": {"class_type": "Arc2FaceSampler", "inputs": dict(prompt["55"]["inputs"], model=["65", 0],
                                                              positive=["68", 0], negative=["68", 1])},
    })
    for node, name in (("60", "p"), ("69", "e"), ("70", "c")):
        save_latent(prompt, f"8{node}", node, f"{name}_{t}")
    comfy.run_ok(prompt)
    ref, plain, expr, pose = (comfy.saved_latent(f"{p}_{t}").numpy() for p in "rpec")
    assert ref.shape == plain.shape == expr.shape == pose.shape == (1, 4, 8, 8)
    for a, b in ((ref, plain), (expr, ref), (pose, expr)):
        assert not np.allclose(a, b, atol=1e-3)


@pytest.mark.parametrize("kwargs, message", [
    (dict(images_per_id=2, references=2), "InvalidInputError: 2 references for 1 identity × 2 images per identity: "
                                          "give 1 reference (for every image) or 1 (one per identity)"),
    (dict(size=72), "InvalidInputError: the reference latent is 8x8 cells (64x64 pixels) and the latent being "
                    "generated 9x9 cells (72x72 pixels)"),
])
def test_references_that_do_not_fit_the_batch_or_size_are_errors(comfy, kwargs, message):
    error = comfy.run_error(_reference_prompt(f"x_{tag()}", **kwargs))
    assert message in error, error


def test_a_latent_of_another_model_is_refused(comfy):
    prompt = _reference_prompt(f"x_{tag()}")
    prompt["52"] = {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    error = comfy.run_error(prompt)
    assert "InvalidInputError: the reference latent has 16 channels; Arc2Face's SD1.5 UNet takes 4" in error, error
