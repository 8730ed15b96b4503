"""Bad values in a real ComfyUI server (issue 8): never a black image reported as success, never a silent fallback.

NaN reaches a node through the API (ComfyUI's min/max comparisons are false for NaN); a choice declared as a tuple
skipped ComfyUI's "Value not in list"; hand-made expression coefficients overflowed or made black images.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from comfyui_client import identities_prompt, sampler, save_latent, tag
from fixtures_comfyui import run_in_comfyui

CHECKS = Path(__file__).resolve().parents[1] / "comfyui_checks"


def _expression_prompt(weight: float = 1.0, coefficients: str = "") -> dict:
    """identity → Expression (by hand) → Expression Adapter → Arc2Face Sampler → SaveLatent."""
    prompt = identities_prompt(["arc2face_face.png"])
    prompt.update({
        "40": {"class_type": "Arc2FaceExpressionAdapterLoader", "inputs": {}},
        "41": {"class_type": "Arc2FaceExpression", "inputs": {"jaw_open": 0.2, "eyelid_left": 0.0,
                                                              "eyelid_right": 0.0, "coefficients": coefficients}},
        "44": {"class_type": "Arc2FaceExpressionAdapter", "inputs": {
            "model": ["1", 0], "adapter": ["40", 0], "expression": ["41", 0], "weight": weight,
            "start_percent": 0.0, "end_percent": 1.0}},
        "45": sampler(["6", 0], ["6", 1], model=["44", 0]),
    })
    save_latent(prompt, "47", "45", f"v_{tag()}")
    return prompt


def _pose_prompt(strength: float) -> dict:
    prompt = identities_prompt(["arc2face_face.png"])
    prompt.update({
        "30": {"class_type": "Arc2FaceControlNetLoader", "inputs": {}},
        "31": {"class_type": "LoadImage", "inputs": {"image": "arc2face_normals_front.png"}},
        "33": {"class_type": "Arc2FacePoseControlNet", "inputs": {
            "positive": ["6", 0], "negative": ["6", 1], "control_net": ["30", 0], "normal_map": ["31", 0],
            "strength": strength, "start_percent": 0.0, "end_percent": 1.0}},
        "34": sampler(["33", 0], ["33", 1]),
    })
    save_latent(prompt, "35", "34", f"v_{tag()}")
    return prompt


def test_nan_adapter_weight_is_an_error_not_black_images(comfy):
    error = comfy.run_error(_expression_prompt(weight=math.nan))
    assert ("InvalidInputError: Arc2Face Expression Adapter: weight must be a finite number from 0.0 to 3.0, got nan. "
            "NaN and infinity are refused") in error, error


def test_nan_controlnet_strength_is_an_error_not_black_images(comfy):
    error = comfy.run_error(_pose_prompt(math.nan))
    assert ("InvalidInputError: Arc2Face Pose ControlNet: strength must be a finite number from 0.0 to 10.0, got nan"
            in error), error


@pytest.mark.parametrize("text", ["1e39", "1e30", "1e6"])
def test_hand_made_coefficients_beyond_ten_deviations_are_refused(comfy, text):
    error = comfy.run_error(_expression_prompt(coefficients=f"0.5 {text}"))
    assert (f"InvalidInputError: Expression coefficient 2 is '{text}'. FLAME expression coefficients are in units of "
            "the PCA standard deviation") in error, error


@pytest.mark.parametrize("node, inputs, name, value", [
    ("Arc2FaceModelLoader", {}, "weight_dtype", "fp8_garbage"),
    ("Arc2FaceExpressionFromImage", {"arcface": ["2", 0], "image": ["3", 0], "face": "largest"}, "channel_order",
     "xyz"),
])
def test_unknown_choices_fail_comfyui_validation(comfy, node, inputs, name, value):
    """ComfyUI's own check refuses them before anything runs (it checks only choices declared as a list)."""
    prompt = identities_prompt(["arc2face_face.png"])
    prompt["50"] = {"class_type": node, "inputs": dict(inputs, **{name: value})}
    prompt["51"] = {"class_type": "PreviewAny", "inputs": {"source": ["50", 0]}}
    status, body = comfy.submit(prompt)
    assert status == 400, body
    errors = body["node_errors"]["50"]["errors"]
    assert any(e["type"] == "value_not_in_list" and name in e["details"] and repr(value) in e["details"]
               for e in errors), json.dumps(body)[:2000]


def test_every_choice_input_is_a_list_and_every_node_checks_its_widgets(comfy_install):
    report = run_in_comfyui(comfy_install, CHECKS / "node_inputs.py")
    assert report["not_lists"] == [] and report["unchecked"] == []
    assert report["choices"] >= 12      # provider, face x3, weight_dtype, sampler, scheduler, methods, ...


def test_the_encoder_node_keeps_the_direction_of_huge_embeddings(comfy_install):
    """Rows of ±1e18 and scaled to 1e30 and 3e38 condition like their unit vectors (they used to become zero)."""
    report = run_in_comfyui(comfy_install, CHECKS / "encoder_overflow.py")
    assert report["shape"] == [3, 77, 768] and report["max_difference"] < 1e-4


def test_nan_conditioning_from_a_stock_node_is_an_error_naming_input_and_rows(comfy):
    """The stock ConditioningAverage given a NaN strength through the API, between the Encoder and the Sampler: it
    used to sample an all-black image reported as a success."""
    prompt = identities_prompt(["arc2face_face.png"])
    prompt["20"] = {"class_type": "ConditioningAverage", "inputs": {
        "conditioning_to": ["6", 0], "conditioning_from": ["6", 1], "conditioning_to_strength": math.nan}}
    prompt["21"] = sampler(["20", 0], ["6", 1])
    save_latent(prompt, "22", "21", f"v_{tag()}")
    error = comfy.run_error(prompt)
    assert ("InvalidInputError: Arc2Face Sampler: positive (CONDITIONING) holds NaN or infinity (entry 0 row 0; "
            "entry 0, 'pooled_output' row 0). An earlier node made it") in error, error


def test_nan_latent_from_a_stock_node_is_an_error(comfy):
    """A LATENT scaled by NaN (stock LatentMultiply) as the Sampler's latent_image."""
    prompt = identities_prompt(["arc2face_face.png"])
    prompt["20"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    prompt["23"] = {"class_type": "LatentMultiply", "inputs": {"samples": ["20", 0], "multiplier": math.nan}}
    prompt["21"] = sampler(["6", 0], ["6", 1], latent_image=["23", 0], denoise=1.0)
    save_latent(prompt, "22", "21", f"v_{tag()}")
    error = comfy.run_error(prompt)
    assert ("InvalidInputError: Arc2Face Sampler: latent_image (LATENT) holds NaN or infinity ('samples' row 0)"
            in error), error


def test_an_empty_coefficient_field_is_refused(comfy):
    """"1,,2" used to put coefficient 3 in place 2 and run."""
    error = comfy.run_error(_expression_prompt(coefficients="1,,2"))
    assert "InvalidInputError: Expression coefficient 2 is empty in '1,,2'" in error, error


def test_landmarks_that_frame_no_face_name_the_node_and_the_image(comfy):
    """An 8x8 noise image: the error used to be the developer's "Check that they are 68 points in iBUG order"."""
    prompt = {"1": {"class_type": "Arc2FaceArcFaceLoader", "inputs": {"provider": "auto", "det_size": 640}},
              "2": {"class_type": "LoadImage", "inputs": {"image": "arc2face_noise_8px.png"}},
              "3": {"class_type": "Arc2FaceAlignFace", "inputs": {"arcface": ["1", 0], "image": ["2", 0],
                                                                 "face": "largest", "size": 512}},
              "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}}}
    error = comfy.run_error(prompt)
    assert ("NoFaceError: Face Align: the face found in image 1 of 1 (8x8 pixels) is not a usable face: its eyes and "
            "mouth nearly coincide, so they frame no face") in error, error
    assert "iBUG" not in error
