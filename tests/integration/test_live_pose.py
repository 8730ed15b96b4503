"""The pose nodes in a real ComfyUI server: the ControlNet apply node against the stock one, ranges, batches."""

from __future__ import annotations

import uuid

import numpy as np

from comfyui_client import SAMPLING, error_of, identities_prompt
from fixtures_comfyui import STOCK_CONTROLNET


def _pose_prompt(images: list[str], hints: list[str], tag: str, *, strength: float = 1.0, start: float = 0.0,
                 end: float = 1.0, images_per_id: int = 1, size: int = 64, steps: int = 2) -> dict:
    """identities → Arc2Face Pose ControlNet (our loader) → Arc2Face Sampler → SaveLatent ``latents/p_<tag>``."""
    prompt = identities_prompt(images)
    prompt.update({
        "30": {"class_type": "Arc2FaceControlNetLoader", "inputs": {}},
        "31": {"class_type": "LoadImage", "inputs": {"image": hints[0]}},
        "33": {"class_type": "Arc2FacePoseControlNet", "inputs": {
            "positive": ["6", 0], "negative": ["6", 1], "control_net": ["30", 0], "normal_map": ["31", 0],
            "strength": strength, "start_percent": start, "end_percent": end}},
        "34": {"class_type": "Arc2FaceSampler", "inputs": dict(
            SAMPLING, steps=steps, model=["1", 0], positive=["33", 0], negative=["33", 1], width=size, height=size,
            images_per_id=images_per_id)},
        "35": {"class_type": "SaveLatent", "inputs": {"samples": ["34", 0], "filename_prefix": f"latents/p_{tag}"}},
    })
    if len(hints) == 2:
        prompt["32"] = {"class_type": "LoadImage", "inputs": {"image": hints[1]}}
        prompt["36"] = {"class_type": "ImageBatch", "inputs": {"image1": ["31", 0], "image2": ["32", 0]}}
        prompt["33"]["inputs"]["normal_map"] = ["36", 0]
    return prompt


def test_pose_node_equals_the_stock_controlnet_apply(comfy):
    """Both CFG halves, strength and range exactly as ComfyUI's own Apply ControlNet (Advanced); each loader's
    ControlNet works with the other's node.

    At 128 px ComfyUI resizes every hint to 128 before the ControlNet sees it: ours bilinearly (smooth normals), the
    stock node nearest-exact, so a smooth hint would differ by design. The hint here is a 128-px normal map blown up
    to 512 in 4x4 blocks: our node leaves it as it is (already square, 512, mid-grey background), and both resizes
    take each output pixel from inside one block (bilinear reads source pixels 4i+1 and 4i+2, nearest-exact 4i+2),
    so both ControlNets get the same 128-px hint and the latents must be identical."""
    tag = uuid.uuid4().hex[:8]
    size = 128
    prompt = _pose_prompt(["arc2face_face.png"], ["arc2face_normals_blocks.png"], tag, strength=0.7, start=0.0,
                          end=0.5, size=size, steps=2)
    prompt["30"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name":
                                                                 STOCK_CONTROLNET}}
    prompt.update({
        "40": {"class_type": "Arc2FaceControlNetLoader", "inputs": {}},
        "41": {"class_type": "ControlNetApplyAdvanced", "inputs": {
            "positive": ["6", 0], "negative": ["6", 1], "control_net": ["40", 0], "image": ["31", 0],
            "strength": 0.7, "start_percent": 0.0, "end_percent": 0.5}},
        "42": {"class_type": "KSampler", "inputs": dict(SAMPLING, model=["1", 0], positive=["41", 0],
                                                        negative=["41", 1], latent_image=["43", 0], denoise=1.0)},
        "43": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "44": {"class_type": "SaveLatent", "inputs": {"samples": ["42", 0], "filename_prefix": f"latents/s_{tag}"}},
        "45": {"class_type": "KSampler", "inputs": dict(SAMPLING, model=["1", 0], positive=["6", 0],
                                                        negative=["6", 1], latent_image=["43", 0], denoise=1.0)},
        "46": {"class_type": "SaveLatent", "inputs": {"samples": ["45", 0], "filename_prefix": f"latents/n_{tag}"}},
    })
    entry = comfy.run(prompt)
    assert entry["status"]["status_str"] == "success", error_of(entry)
    ours, stock, free = (comfy.saved_latent(f"{p}_{tag}") for p in ("p", "s", "n"))
    assert ours.shape == (1, 4, size // 8, size // 8)
    assert np.array_equal(ours.numpy(), stock.numpy())
    assert not np.allclose(ours.numpy(), free.numpy(), atol=1e-3)   # the control does act


def test_pose_strength_zero_is_no_control(comfy):
    tag = uuid.uuid4().hex[:8]
    prompt = _pose_prompt(["arc2face_face.png"], ["arc2face_normals_front.png"], tag, strength=0.0)
    prompt["37"] = {"class_type": "Arc2FaceSampler", "inputs": dict(
        SAMPLING, model=["1", 0], positive=["6", 0], negative=["6", 1], width=64, height=64, images_per_id=1)}
    prompt["38"] = {"class_type": "SaveLatent", "inputs": {"samples": ["37", 0], "filename_prefix": f"latents/f_{tag}"}}
    entry = comfy.run(prompt)
    assert entry["status"]["status_str"] == "success", error_of(entry)
    assert np.array_equal(comfy.saved_latent(f"p_{tag}").numpy(), comfy.saved_latent(f"f_{tag}").numpy())


def test_each_identity_keeps_its_own_pose_across_images_per_id(comfy):
    """Two identities with two normal maps, two images each: identity b's images equal b alone with b's hint."""
    tag = uuid.uuid4().hex[:8]
    prompt = _pose_prompt(["arc2face_person_a.png", "arc2face_person_b.png"],
                          ["arc2face_normals_front.png", "arc2face_normals_turned.png"], tag, images_per_id=2)
    prompt.update({
        "20": {"class_type": "Arc2FaceArcFaceEmbed", "inputs": {"arcface": ["2", 0], "image": ["4", 0],
                                                               "face": "largest"}},
        "21": {"class_type": "Arc2FaceEncoder", "inputs": {"encoder": ["1", 1], "embeds": ["20", 0]}},
        "22": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 4}},
        "23": {"class_type": "LatentFromBatch", "inputs": {"samples": ["22", 0], "batch_index": 2, "length": 2}},
        "26": {"class_type": "Arc2FacePoseControlNet", "inputs": {
            "positive": ["21", 0], "negative": ["21", 1], "control_net": ["30", 0], "normal_map": ["32", 0],
            "strength": 1.0, "start_percent": 0.0, "end_percent": 1.0}},
        "24": {"class_type": "KSampler", "inputs": dict(SAMPLING, model=["1", 0], positive=["26", 0],
                                                        negative=["26", 1], latent_image=["23", 0], denoise=1.0)},
        "25": {"class_type": "SaveLatent", "inputs": {"samples": ["24", 0], "filename_prefix": f"latents/b_{tag}"}},
    })
    entry = comfy.run(prompt)
    assert entry["status"]["status_str"] == "success", error_of(entry)
    grouped, alone = comfy.saved_latent(f"p_{tag}"), comfy.saved_latent(f"b_{tag}")
    assert grouped.shape == (4, 4, 8, 8)
    np.testing.assert_allclose(grouped[2:].numpy(), alone.numpy(), rtol=1e-4, atol=1e-3)


def test_pose_errors(comfy):
    tag = uuid.uuid4().hex[:8]
    prompt = _pose_prompt(["arc2face_face.png"], ["arc2face_normals_front.png", "arc2face_normals_turned.png"], tag)
    entry = comfy.run(prompt)   # one identity, two normal maps
    assert entry["status"]["status_str"] == "error"
    assert "InvalidInputError: normal_map has a batch of 2 but the conditioning holds 1 identity: give 1 normal map" in error_of(entry)

    prompt = _pose_prompt(["arc2face_face.png"], ["arc2face_normals_front.png"], tag, start=0.6, end=0.4)
    error = comfy.run_error(prompt)
    assert ("InvalidInputError: start_percent (0.6) is after end_percent (0.4): the control would never act"
            in error), error


