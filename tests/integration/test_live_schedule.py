"""The default schedule is the reference's: ComfyUI's sigmas for the Sampler's default scheduler and for every shipped
DPM++ workflow against diffusers' own DPMSolverMultistepScheduler on SD1.5's scheduler config (docs/arc2face.md,
'Sampling schedule')."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from builders.ui_workflows import ui_to_api
from fixtures_comfyui import run_in_comfyui

REPO = Path(__file__).resolve().parents[2]
CHECKS = REPO / "tests" / "comfyui_checks"
STEPS = 25
# stable-diffusion-v1-5/scheduler/scheduler_config.json, as published on the Hugging Face hub.
SD15_SCHEDULER_CONFIG = {
    "_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000, "set_alpha_to_one": False,
    "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None, "clip_sample": False,
}
MATCH = 0.005          # relative: sgm_uniform is within 0.2% of diffusers, normal 85% off at the last step
SAMPLER_NODES = ("Arc2FaceSampler", "KSampler")


@pytest.fixture(scope="module")
def reference_sigmas() -> np.ndarray:
    """What the reference samples with: DPMSolverMultistepScheduler.from_config(SD1.5), 25 steps."""
    from diffusers import DPMSolverMultistepScheduler

    scheduler = DPMSolverMultistepScheduler.from_config(SD15_SCHEDULER_CONFIG)
    scheduler.set_timesteps(STEPS)
    assert scheduler.timesteps.tolist() == [round(t) for t in np.linspace(999, 0, STEPS + 1)[:-1]]  # 999 ... 40
    return scheduler.sigmas.double().numpy()


@pytest.fixture(scope="module")
def comfy_sigmas(comfy_install) -> dict[str, np.ndarray]:
    measured = run_in_comfyui(comfy_install, CHECKS / "schedules.py", str(STEPS))
    return {name: np.array(values) for name, values in measured.items()}


def tail_error(sigmas: np.ndarray, reference: np.ndarray) -> float:
    """The largest relative difference over the non-zero sigmas (the final 0 must be 0 in both)."""
    assert sigmas.shape == reference.shape and sigmas[-1] == reference[-1] == 0
    return float(np.max(np.abs(sigmas[:-1] / reference[:-1] - 1)))


def test_the_sampler_default_schedule_is_the_reference(object_info, comfy_sigmas, reference_sigmas):
    required = object_info["Arc2FaceSampler"]["input"]["required"]
    sampler, scheduler = (required[name][1]["default"] for name in ("sampler_name", "scheduler"))
    assert sampler == "dpmpp_2m"
    assert tail_error(comfy_sigmas[scheduler], reference_sigmas) < MATCH, scheduler
    assert "sgm_uniform" in required["scheduler"][1]["tooltip"]
    # The check can fail: ComfyUI's "normal" ends at sigma 0.029 where the reference ends at 0.199.
    assert tail_error(comfy_sigmas["normal"], reference_sigmas) > 0.5


def test_every_shipped_dpmpp_workflow_samples_on_the_reference_schedule(object_info, comfy_sigmas,
                                                                         reference_sigmas):
    checked = []
    for path in sorted((REPO / "example_workflows").glob("*.json")):
        prompt = ui_to_api(json.loads(path.read_text()), object_info)
        for node in prompt.values():
            inputs = node["inputs"]
            if node["class_type"] in SAMPLER_NODES and inputs["sampler_name"].startswith("dpmpp"):
                error = tail_error(comfy_sigmas[inputs["scheduler"]], reference_sigmas)
                assert error < MATCH, f"{path.name}: {node['class_type']} uses {inputs['scheduler']} ({error:.0%} off)"
                checked.append((path.stem, node["class_type"]))
    assert ("arc2face_ksampler", "KSampler") in checked and ("arc2face_basic", "Arc2FaceSampler") in checked
