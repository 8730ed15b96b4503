"""The identity nodes in a real ComfyUI server: registration, the shipped workflows, embedding, encoding, sampling."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest

from builders.ui_workflows import FILE_COMBOS, check_ui_workflow, normalise_node_info, ui_to_api
from comfyui_client import FAST, SAMPLING, embed_prompt, error_of, identities_prompt, outputs

REPO = Path(__file__).resolve().parents[2]
EXPECTED_IMAGES = {"arc2face_basic": 4, "arc2face_average": 4, "arc2face_blend": 5, "arc2face_ksampler": 1,
                   "arc2face_pose": 4, "arc2face_pose_angles": 4, "arc2face_pose_angles_flame": 4,
                   "arc2face_expression": 4, "arc2face_expression_manual": 4, "arc2face_lcm": 4,
                   "arc2face_two_people": 2, "arc2face_identity_check": 4}
EXPECTED_FACES = {"arc2face_basic": 1, "arc2face_average": 3, "arc2face_blend": 1, "arc2face_ksampler": 1,
                  "arc2face_pose": 1, "arc2face_pose_angles": 1, "arc2face_pose_angles_flame": 1,
                  "arc2face_expression": 1, "arc2face_expression_manual": 1, "arc2face_lcm": 1,
                  "arc2face_two_people": 1, "arc2face_identity_check": 1}
SIZES = {"arc2face_two_people": (128, 64)}   # (width, height) at test scale; 64x64 otherwise


def test_every_node_is_registered(object_info):
    ours = {k for k, v in object_info.items() if v.get("category") == "Arc2Face"}
    snapshot = json.loads((REPO / "tests" / "data" / "object_info.json").read_text())
    assert ours == {k for k, v in snapshot.items() if v.get("category") == "Arc2Face"}
    assert all(object_info[k]["description"] for k in ours)


def test_node_definition_snapshot_is_current(object_info):
    """CI checks the workflows against tests/data/object_info.json: it must equal what this ComfyUI serves."""
    snapshot = json.loads((REPO / "tests" / "data" / "object_info.json").read_text())
    stale = [name for name, info in snapshot.items() if normalise_node_info(name, object_info[name]) != info]
    assert not stale, f"run scripts/snapshot_object_info.py: {stale} changed"


def _workflow_prompt(name: str, object_info: dict) -> dict:
    workflow = json.loads((REPO / "example_workflows" / f"{name}.json").read_text())
    assert check_ui_workflow(workflow, object_info, FILE_COMBOS) == []
    prompt = ui_to_api(workflow, object_info)
    width, height = SIZES.get(name, (64, 64))
    for node in prompt.values():
        if node["class_type"] in ("Arc2FaceSampler", "KSampler", "EmptyLatentImage"):
            node["inputs"].update({k: v for k, v in dict(FAST, width=width, height=height).items()
                                   if k in node["inputs"]})
        if node["class_type"] == "Arc2FaceFilterByIdentity":   # random models: let every image through here
            node["inputs"]["threshold"] = -1.0                  # (test_live_similarity checks the real threshold)
    return prompt


@pytest.mark.parametrize("name", sorted(EXPECTED_IMAGES))
def test_workflow_runs_end_to_end(comfy, object_info, name):
    prompt = _workflow_prompt(name, object_info)
    entry = comfy.run(prompt)
    assert entry["status"]["status_str"] == "success", error_of(entry)
    save_id = next(i for i, n in prompt.items() if n["class_type"] == "SaveImage")
    preview_id = next(i for i, n in prompt.items() if n["class_type"] == "PreviewImage")
    saved = outputs(entry, save_id)
    assert len(saved) == EXPECTED_IMAGES[name]
    assert len(outputs(entry, preview_id)) == EXPECTED_FACES[name]
    from PIL import Image

    for image in saved:
        path = comfy.root / "output" / image["subfolder"] / image["filename"]
        assert Image.open(path).size == SIZES.get(name, (64, 64))


def test_no_face_is_an_error_that_names_the_image(comfy):
    entry = comfy.run(embed_prompt("arc2face_black.png", "auto"))
    assert entry["status"]["status_str"] == "error"
    assert "NoFaceError: No face found in image 1 of 1 (512x512 pixels)" in error_of(entry)


def cuda_runs_in(comfy) -> bool:
    """Whether ONNX Runtime in ComfyUI's venv really runs a session on CUDA (not only lists the provider)."""
    model = comfy.root / "models" / "arc2face" / "arcface.onnx"
    code = ("import onnxruntime as ort, sys; s = ort.InferenceSession(sys.argv[1], providers=['CUDAExecutionProvider', "
            "'CPUExecutionProvider']); print('CUDAExecutionProvider' in s.get_providers())")
    result = subprocess.run([str(comfy.python), "-c", code, str(model)], capture_output=True, text=True, timeout=120)
    return result.stdout.strip().endswith("True")


def test_an_explicit_gpu_provider_that_cannot_run_is_an_error(comfy):
    """Asking for CUDA where it cannot start must fail loudly (not silently run on the CPU); where it runs, it works."""
    entry = comfy.run(embed_prompt("arc2face_face.png", "CUDA"))
    if cuda_runs_in(comfy):
        assert entry["status"]["status_str"] == "success", error_of(entry)
        return
    assert entry["status"]["status_str"] == "error"
    error = error_of(entry)
    kind, _, message = error.partition(": ")
    assert kind.endswith("ProviderError") and "CUDAExecutionProvider" in message, error


def test_sampler_equals_stock_ksampler_to_the_bit(comfy):
    tag = uuid.uuid4().hex[:8]
    prompt = identities_prompt(["arc2face_person_a.png", "arc2face_person_b.png"])
    prompt["10"] = {"class_type": "Arc2FaceSampler", "inputs": dict(
        SAMPLING, model=["1", 0], positive=["6", 0], negative=["6", 1], width=64, height=64, images_per_id=1)}
    prompt["11"] = {"class_type": "SaveLatent", "inputs": {"samples": ["10", 0], "filename_prefix": f"latents/a_{tag}"}}
    prompt["12"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 2}}
    prompt["13"] = {"class_type": "KSampler", "inputs": dict(
        SAMPLING, model=["1", 0], positive=["6", 0], negative=["6", 1], latent_image=["12", 0], denoise=1.0)}
    prompt["14"] = {"class_type": "SaveLatent", "inputs": {"samples": ["13", 0], "filename_prefix": f"latents/k_{tag}"}}
    entry = comfy.run(prompt)
    assert entry["status"]["status_str"] == "success", error_of(entry)
    ours, stock = comfy.saved_latent(f"a_{tag}"), comfy.saved_latent(f"k_{tag}")
    assert ours.shape == (2, 4, 8, 8)
    assert np.array_equal(ours.numpy(), stock.numpy())
    assert not np.allclose(ours[0].numpy(), ours[1].numpy())   # two identities, two different results


def test_images_per_id_take_the_ksampler_noise_of_their_batch_index(comfy):
    """Image j of identity i == KSampler on identity i alone with batch_index i*k+j (same seed)."""
    tag = uuid.uuid4().hex[:8]
    k = 2
    prompt = identities_prompt(["arc2face_person_a.png", "arc2face_person_b.png"])
    prompt["10"] = {"class_type": "Arc2FaceSampler", "inputs": dict(
        SAMPLING, model=["1", 0], positive=["6", 0], negative=["6", 1], width=64, height=64, images_per_id=k)}
    prompt["11"] = {"class_type": "SaveLatent", "inputs": {"samples": ["10", 0], "filename_prefix": f"latents/g_{tag}"}}
    # identity b alone: its own embedding, the batch indices 2 and 3 of a 4-image batch
    prompt.update({
        "20": {"class_type": "Arc2FaceArcFaceEmbed", "inputs": {"arcface": ["2", 0], "image": ["4", 0],
                                                               "face": "largest"}},
        "21": {"class_type": "Arc2FaceEncoder", "inputs": {"encoder": ["1", 1], "embeds": ["20", 0]}},
        "22": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 4}},
        "23": {"class_type": "LatentFromBatch", "inputs": {"samples": ["22", 0], "batch_index": 2, "length": 2}},
        "24": {"class_type": "KSampler", "inputs": dict(SAMPLING, model=["1", 0], positive=["21", 0],
                                                        negative=["21", 1], latent_image=["23", 0], denoise=1.0)},
        "25": {"class_type": "SaveLatent", "inputs": {"samples": ["24", 0], "filename_prefix": f"latents/b_{tag}"}},
    })
    entry = comfy.run(prompt)
    assert entry["status"]["status_str"] == "success", error_of(entry)
    grouped, alone = comfy.saved_latent(f"g_{tag}"), comfy.saved_latent(f"b_{tag}")
    assert grouped.shape == (4, 4, 8, 8) and alone.shape == (2, 4, 8, 8)
    # Same noise and conditioning; only the batch the UNet sees differs (4 vs 2 rows), so allow float rounding.
    np.testing.assert_allclose(grouped[2:].numpy(), alone.numpy(), rtol=1e-4, atol=1e-3)
    assert not np.allclose(grouped[0].numpy(), grouped[2].numpy(), atol=1e-2)


