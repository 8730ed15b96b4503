"""bench/gpu_check.py in its CPU mode, so the GPU check keeps working between the times a GPU is lent.

It runs against the session's ComfyUI server (its random models are the ones gpu_check writes) and on tiny models for
its headless parts: every shipped workflow and node, the pack's pipeline against the reference's route (which must
have made the same images), and the dataset command in both sampling modes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The other live tests run the other shipped workflows (test_live_identity, test_live_reference); these two run only
# here. The script's loop over workflows is what is kept working: all 16 again would add minutes of CPU to CI.
SMOKE_WORKFLOWS = ("arc2face_pose_expression_photo", "arc2face_pose_photo_flame")


def test_gpu_check_runs_in_its_cpu_mode(comfy, comfy_install, tmp_path):
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--cpu-smoke", "--server", comfy.url,
                             "--comfyui-base", str(comfy_install / "ComfyUI"), "--models",
                             str(comfy_install / "ComfyUI" / "models"), "--out", str(out), "--work",
                             str(tmp_path / "work"), "--workflows", *SMOKE_WORKFLOWS], cwd=REPO, capture_output=True,
                            text=True, timeout=900)
    report = json.loads((out / "gpu_check.json").read_text()) if (out / "gpu_check.json").is_file() else {}
    assert result.returncode == 0, (report.get("failures"), result.stderr[-3000:])
    workflows = report["comfyui"]["workflows"]
    assert set(workflows) == set(SMOKE_WORKFLOWS)
    assert report["comfyui"]["nodes_not_run"] is None                    # counted only when every workflow ran
    assert all(w["ok"] and w["images"] >= 1 for w in workflows.values())
    assert report["comfyui"]["extra_prompts"]["ok"]
    speed = report["speed"]
    assert set(speed) == {"diffusers", "pack"}
    for batch in ("1", "2"):
        pack, base = speed["pack"]["batches"][batch], speed["diffusers"]["batches"][batch]
        assert abs(pack["image_mean"] - base["image_mean"]) < 0.5        # the same images, by both routes
        assert pack["s_per_step"] > 0 and pack["images_per_s_vs_diffusers"] > 0
    modes = report["dataset"]
    assert modes["default"]["images"] == modes["lcm"]["images"] == 2
    assert "similarity_mean" in modes["lcm"]["similarity"]               # the identity check ran
    summary = (out / "gpu_check.md").read_text()
    assert "| pack | 2 |" in summary and "lcm (4 steps, CFG 1)" in summary and "Failures" not in summary
