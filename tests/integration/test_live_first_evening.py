"""Two people in one image and the LCM speed mode, in a real ComfyUI server with the full-size random UNet.

Two people: each identity's conditioning is masked to one half (stock Conditioning (Set Mask)) and the two are
combined (Conditioning (Combine)), with one shared negative. After one Euler step the latent is the denoised
prediction at the first sigma, so inside each half it must equal the prediction of that identity alone (same seed,
same noise), with the stock KSampler and with the Arc2Face Sampler, which must count the combined masks as ONE image
(two regions), not two identities.
LCM: ComfyUI's route (ModelSamplingDiscrete lcm + sampler lcm + scheduler simple) is checked against diffusers'
LCMScheduler in ComfyUI's own interpreter; the workflow itself runs in test_live_identity (at 2 steps).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from comfyui_client import identities_prompt, ksampler, sampler, save_latent, tag
from fixtures_comfyui import LCM_LORA, run_in_comfyui

CHECKS = Path(__file__).resolve().parents[1] / "comfyui_checks"
WIDTH, HEIGHT = 128, 64          # latents 16 x 8: the left half is columns 0-7
ONE_EULER_STEP = {"steps": 1, "sampler_name": "euler", "scheduler": "simple", "cfg": 3.0, "seed": 77}


def two_people_prompt() -> dict:
    """Nodes 1-6: person A (positive 6:0, negative 6:1); 30-32 person B; 33-39 the masked, combined positive."""
    prompt = identities_prompt(["arc2face_person_a.png"])
    prompt.update({
        "30": {"class_type": "LoadImage", "inputs": {"image": "arc2face_person_b.png"}},
        "31": {"class_type": "Arc2FaceArcFaceEmbed", "inputs": {"arcface": ["2", 0], "image": ["30", 0],
                                                               "face": "largest"}},
        "32": {"class_type": "Arc2FaceEncoder", "inputs": {"encoder": ["1", 1], "embeds": ["31", 0]}},
        "33": {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": WIDTH, "height": HEIGHT}},
        "34": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": WIDTH // 2, "height": HEIGHT}},
        "35": {"class_type": "MaskComposite", "inputs": {"destination": ["33", 0], "source": ["34", 0], "x": 0,
                                                        "y": 0, "operation": "add"}},
        "36": {"class_type": "MaskComposite", "inputs": {"destination": ["33", 0], "source": ["34", 0],
                                                        "x": WIDTH // 2, "y": 0, "operation": "add"}},
        "37": {"class_type": "ConditioningSetMask", "inputs": {"conditioning": ["6", 0], "mask": ["35", 0],
                                                              "strength": 1.0, "set_cond_area": "default"}},
        "38": {"class_type": "ConditioningSetMask", "inputs": {"conditioning": ["32", 0], "mask": ["36", 0],
                                                              "strength": 1.0, "set_cond_area": "default"}},
        "39": {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["37", 0],
                                                              "conditioning_2": ["38", 0]}},
        "40": {"class_type": "EmptyLatentImage", "inputs": {"width": WIDTH, "height": HEIGHT, "batch_size": 2}},
    })
    return prompt


def test_each_region_follows_its_own_identity(comfy):
    t = tag()
    prompt = two_people_prompt()
    runs = {"two": (["39", 0], ["6", 1]), "a": (["6", 0], ["6", 1]), "b": (["32", 0], ["32", 1])}
    for index, (name, (positive, negative)) in enumerate(runs.items()):
        prompt[f"5{index}"] = ksampler(positive, negative, ["40", 0], **ONE_EULER_STEP)
        save_latent(prompt, f"6{index}", f"5{index}", f"{name}_{t}")
    prompt["70"] = sampler(["39", 0], ["6", 1], width=WIDTH, height=HEIGHT, images_per_id=2, **ONE_EULER_STEP)
    save_latent(prompt, "71", "70", f"sampler_{t}")
    comfy.run_ok(prompt)
    two, a, b = (comfy.saved_latent(f"{name}_{t}").numpy() for name in ("two", "a", "b"))
    ours = comfy.saved_latent(f"sampler_{t}").numpy()
    assert two.shape == a.shape == (2, 4, HEIGHT // 8, WIDTH // 8)
    left, right = np.s_[..., : WIDTH // 16], np.s_[..., WIDTH // 16:]
    # Same noise and conditioning per region; only how ComfyUI batches the UNet calls differs: float rounding.
    np.testing.assert_allclose(two[left], a[left], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(two[right], b[right], rtol=1e-4, atol=1e-3)
    # Negative control: the two identities predict clearly different things in both halves.
    assert np.abs(a[left] - b[left]).mean() > 0.05 and np.abs(a[right] - b[right]).mean() > 0.05
    # The Arc2Face Sampler: ONE image with two regions, images_per_id 2 -> 2 latents equal to KSampler's batch of 2.
    assert ours.shape == two.shape
    np.testing.assert_allclose(ours, two, rtol=1e-4, atol=1e-3)


def test_comfyui_lcm_route_is_diffusers_lcm_scheduler(comfy_install):
    m = run_in_comfyui(comfy_install, CHECKS / "lcm_schedule.py")
    assert m["3"]["comfy_timesteps"] == m["3"]["diffusers_timesteps"] == [999, 679, 339]
    for steps in ("2", "3", "4"):
        r = m[steps]
        assert r["comfy_timesteps"] == r["diffusers_timesteps"]
        assert r["sigma_rel_err"] < 1e-5
        assert r["final_max_abs_diff"] < 1e-5 * max(1.0, r["final_scale"]) * 10
    # What the issue warns about, measured: sgm_uniform's sigmas are off by percents, and without the LCM model
    # sampling the 3-step timesteps are 999/666/333 and the result differs.
    assert m["3"]["sgm_uniform_sigma_rel_err"] > 0.01
    assert m["3"]["without_lcm_sampling_timesteps"] == [999, 666, 333]
    assert m["3"]["eps_route_final_max_abs_diff"] > 0.1 and m["4"]["eps_route_final_max_abs_diff"] > 0.1


def test_the_lcm_lora_loads_every_key_and_changes_the_result(comfy):
    """The stock LoRA loader maps every tensor of the kohya-layout LoRA onto the Arc2Face UNet (ComfyUI logs each key
    it cannot place as 'lora key not loaded'), and the LoRA changes the images."""
    t = tag()
    prompt = identities_prompt(["arc2face_face.png"])
    lcm = {"steps": 2, "cfg": 1.0, "sampler_name": "lcm", "scheduler": "simple"}
    for index, strength in enumerate((1.0, 0.0)):
        prompt[f"2{index}"] = {"class_type": "LoraLoaderModelOnly", "inputs": {
            "model": ["1", 0], "lora_name": LCM_LORA, "strength_model": strength}}
        prompt[f"3{index}"] = {"class_type": "ModelSamplingDiscrete", "inputs": {
            "model": [f"2{index}", 0], "sampling": "lcm", "zsnr": False}}
        prompt[f"4{index}"] = sampler(["6", 0], ["6", 1], model=[f"3{index}", 0], **lcm)
        save_latent(prompt, f"5{index}", f"4{index}", f"lcm{index}_{t}")
    log = comfy.root.parent / "arc2face_integration.log"
    before = log.read_text() if log.is_file() else ""
    comfy.run_ok(prompt)
    with_lora, without = comfy.saved_latent(f"lcm0_{t}").numpy(), comfy.saved_latent(f"lcm1_{t}").numpy()
    assert np.isfinite(with_lora).all() and np.abs(with_lora - without).mean() > 0.01
    new_log = log.read_text()[len(before):]
    assert "lora key not loaded" not in new_log, new_log[-2000:]
