"""The Expression Adapter inside a real ComfyUI: its patch on ComfyUI's own UNet, attention and memory manager."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from comfyui_client import empty_latent, identities_prompt, ksampler, sampler, save_latent, tag
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


def _expression_prompt(images: list[str], expression_photos: list[str], images_per_id: int, prefix: str) -> dict:
    """identities → Expression from Photo (one expression per photo) → Expression Adapter → Arc2Face Sampler."""
    prompt = identities_prompt(images)
    prompt.update({
        "40": {"class_type": "Arc2FaceExpressionAdapterLoader", "inputs": {}},
        "41": {"class_type": "LoadImage", "inputs": {"image": expression_photos[0]}},
        "43": {"class_type": "Arc2FaceExpressionFromImage", "inputs": {
            "arcface": ["2", 0], "image": ["41", 0], "face": "largest", "channel_order": "bgr (Arc2Face demo)"}},
        "44": {"class_type": "Arc2FaceExpressionAdapter", "inputs": {
            "model": ["1", 0], "adapter": ["40", 0], "expression": ["43", 0], "weight": 1.0,
            "start_percent": 0.0, "end_percent": 1.0}},
        "45": sampler(["6", 0], ["6", 1], model=["44", 0], images_per_id=images_per_id),
    })
    if len(expression_photos) == 2:
        prompt["42"] = {"class_type": "LoadImage", "inputs": {"image": expression_photos[1]}}
        prompt["46"] = {"class_type": "ImageBatch", "inputs": {"image1": ["41", 0], "image2": ["42", 0]}}
        prompt["43"]["inputs"]["image"] = ["46", 0]
    save_latent(prompt, "47", "45", prefix)
    return prompt


def test_each_identity_keeps_its_own_expression_across_images_per_id(comfy):
    """2 identities x 2 images with 2 expressions: identity b's images equal b alone with b's expression (KSampler,
    batch indices 2 and 3). The old guess from the batch size alone could not know the layout."""
    t = tag()
    people = ["arc2face_person_a.png", "arc2face_person_b.png"]
    prompt = _expression_prompt(people, people, 2, f"x_{t}")
    prompt.update({
        "20": {"class_type": "Arc2FaceArcFaceEmbed", "inputs": {"arcface": ["2", 0], "image": ["4", 0],
                                                               "face": "largest"}},
        "21": {"class_type": "Arc2FaceEncoder", "inputs": {"encoder": ["1", 1], "embeds": ["20", 0]}},
        "22": empty_latent(4),
        "23": {"class_type": "LatentFromBatch", "inputs": {"samples": ["22", 0], "batch_index": 2, "length": 2}},
        "24": {"class_type": "Arc2FaceExpressionFromImage", "inputs": {
            "arcface": ["2", 0], "image": ["4", 0], "face": "largest", "channel_order": "bgr (Arc2Face demo)"}},
        "25": {"class_type": "Arc2FaceExpressionAdapter", "inputs": {
            "model": ["1", 0], "adapter": ["40", 0], "expression": ["24", 0], "weight": 1.0,
            "start_percent": 0.0, "end_percent": 1.0}},
        "26": ksampler(["21", 0], ["21", 1], ["23", 0], model=["25", 0]),
    })
    save_latent(prompt, "27", "26", f"y_{t}")
    # the same, with identity a's expression: shows the two expressions differ (so the pairing check can fail)
    prompt.update({
        "28": {"class_type": "Arc2FaceExpressionFromImage", "inputs": {
            "arcface": ["2", 0], "image": ["3", 0], "face": "largest", "channel_order": "bgr (Arc2Face demo)"}},
        "29": dict(prompt["25"], inputs=dict(prompt["25"]["inputs"], expression=["28", 0])),
        "30": ksampler(["21", 0], ["21", 1], ["23", 0], model=["29", 0]),
    })
    save_latent(prompt, "31", "30", f"z_{t}")
    comfy.run_ok(prompt)
    grouped, alone, swapped = (comfy.saved_latent(f"{p}_{t}") for p in "xyz")
    assert grouped.shape == (4, 4, 8, 8) and alone.shape == (2, 4, 8, 8)
    np.testing.assert_allclose(grouped[2:].numpy(), alone.numpy(), rtol=1e-4, atol=1e-3)
    assert not np.allclose(swapped.numpy(), alone.numpy(), atol=1e-2)


def test_one_expression_serves_every_identity_and_image(comfy):
    """One hand-made expression for 2 identities x 2 images: identity b's images equal b alone with the same
    expression (KSampler, batch indices 2 and 3), and differ from b's images without the adapter."""
    t = tag()
    prompt = identities_prompt(["arc2face_person_a.png", "arc2face_person_b.png"])
    prompt.update({
        "40": {"class_type": "Arc2FaceExpressionAdapterLoader", "inputs": {}},
        "43": {"class_type": "Arc2FaceExpression", "inputs": {"jaw_open": 0.3, "eyelid_left": 0.0,
                                                             "eyelid_right": 0.0, "coefficients": "1.0, -0.5"}},
        "44": {"class_type": "Arc2FaceExpressionAdapter", "inputs": {
            "model": ["1", 0], "adapter": ["40", 0], "expression": ["43", 0], "weight": 1.0,
            "start_percent": 0.0, "end_percent": 1.0}},
        "45": sampler(["6", 0], ["6", 1], model=["44", 0], images_per_id=2),
        "20": {"class_type": "Arc2FaceArcFaceEmbed", "inputs": {"arcface": ["2", 0], "image": ["4", 0],
                                                               "face": "largest"}},
        "21": {"class_type": "Arc2FaceEncoder", "inputs": {"encoder": ["1", 1], "embeds": ["20", 0]}},
        "22": empty_latent(4),
        "23": {"class_type": "LatentFromBatch", "inputs": {"samples": ["22", 0], "batch_index": 2, "length": 2}},
        "26": ksampler(["21", 0], ["21", 1], ["23", 0], model=["44", 0]),
        "30": ksampler(["21", 0], ["21", 1], ["23", 0]),
    })
    save_latent(prompt, "47", "45", f"x_{t}")
    save_latent(prompt, "27", "26", f"y_{t}")
    save_latent(prompt, "31", "30", f"z_{t}")
    comfy.run_ok(prompt)
    grouped, alone, plain = (comfy.saved_latent(f"{p}_{t}") for p in "xyz")
    assert grouped.shape == (4, 4, 8, 8) and alone.shape == (2, 4, 8, 8)
    np.testing.assert_allclose(grouped[2:].numpy(), alone.numpy(), rtol=1e-4, atol=1e-3)
    assert not np.allclose(plain.numpy(), alone.numpy(), atol=1e-2)   # the expression acts


def test_expressions_that_fit_no_identity_layout_are_an_error(comfy):
    """The stock KSampler on 4 latents: 4 identities, so 2 expressions cannot be paired (once silently 2+2)."""
    prompt = _expression_prompt(["arc2face_face.png"], ["arc2face_person_a.png", "arc2face_person_b.png"], 1,
                                f"e_{tag()}")
    prompt["45"] = ksampler(["6", 0], ["6", 1], ["48", 0], model=["44", 0])
    prompt["48"] = empty_latent(4)
    error = comfy.run_error(prompt)
    assert ("InvalidInputError: 2 expressions for 4 identities × 1 image per identity: give 1 expression (for every "
            "image) or 4 (one per identity)") in error, error
