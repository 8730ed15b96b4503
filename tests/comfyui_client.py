"""Talking to a real ComfyUI server in tests: POST a prompt, wait for it, read its outputs and errors.

The server itself is started once per test session by ``fixtures_comfyui.comfy``.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

FAST = {"steps": 2, "width": 64, "height": 64}   # a full-size UNet on CPU: keep images tiny (CI budget: <= 128 px)
SAMPLING = {"seed": 1234, "steps": 2, "cfg": 3.0, "sampler_name": "dpmpp_2m", "scheduler": "sgm_uniform"}


class Comfy:
    """A running server (``url``) and its install (``root`` = DIR/ComfyUI, ``python`` = DIR/venv/bin/python)."""

    def __init__(self, url: str, root: Path, python: Path):
        self.url, self.root, self.python = url, root, python

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=60) as response:
            return json.load(response)

    def post(self, path: str, payload: dict) -> tuple[int, dict]:
        """POST JSON; returns (HTTP status, body) also for 4xx answers (ComfyUI's validation errors)."""
        request = urllib.request.Request(self.url + path, data=json.dumps(payload, allow_nan=True).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read().decode() or "{}")

    def submit(self, prompt: dict) -> tuple[int, dict]:
        return self.post("/prompt", {"prompt": prompt, "client_id": str(uuid.uuid4())})

    def run(self, prompt: dict, timeout: float = 900) -> dict:
        """POST the prompt and wait; returns its /history entry (status and outputs)."""
        status, body = self.submit(prompt)
        if status != 200:
            pytest.fail(f"ComfyUI refused the prompt ({status}): {json.dumps(body)[:3000]}")
        prompt_id = body["prompt_id"]
        deadline = time.time() + timeout
        while time.time() < deadline:
            history = self.get(f"/history/{prompt_id}")
            entry = history.get(prompt_id)
            if entry and entry.get("status", {}).get("status_str") in ("success", "error"):
                return entry
            time.sleep(0.2)
        pytest.fail(f"prompt {prompt_id} did not finish in {timeout} s")

    def run_ok(self, prompt: dict) -> dict:
        entry = self.run(prompt)
        assert entry["status"]["status_str"] == "success", error_of(entry)
        return entry

    def run_error(self, prompt: dict) -> str:
        """Run a prompt that must fail while executing; returns "ExceptionType: message"."""
        entry = self.run(prompt)
        assert entry["status"]["status_str"] == "error", "the prompt was expected to fail but succeeded"
        return error_of(entry)

    def saved_latent(self, prefix: str):
        """The newest latent a SaveLatent node wrote with ``filename_prefix = latents/<prefix>``."""
        from safetensors.torch import load_file

        files = sorted((self.root / "output" / "latents").glob(f"{prefix}_*.latent"))
        assert files, f"no latent saved as latents/{prefix}_*"
        return load_file(str(files[-1]))["latent_tensor"]

    def saved_images(self, entry: dict, node_id: str) -> list[Path]:
        return [self.root / "output" / image["subfolder"] / image["filename"]
                for image in outputs(entry, node_id) if image.get("type") == "output"]


def outputs(entry: dict, node_id: str) -> list[dict]:
    return entry["outputs"].get(node_id, {}).get("images", [])


def error_of(entry: dict) -> str:
    for kind, data in entry["status"].get("messages", []):
        if kind == "execution_error":
            return f"{data.get('exception_type')}: {data.get('exception_message')}"
    return ""


def tag() -> str:
    """A fresh name part for files one test writes into the shared output folder."""
    return uuid.uuid4().hex[:8]


def save_latent(prompt: dict, node_id: str, source: str, prefix: str) -> None:
    prompt[node_id] = {"class_type": "SaveLatent", "inputs": {"samples": [source, 0],
                                                              "filename_prefix": f"latents/{prefix}"}}


# ----------------------------------------------------------------------------------------------- prompt pieces

def embed_prompt(image: str, provider: str = "auto", face: str = "largest") -> dict:
    """ArcFace Loader → Load Image → ArcFace Embed → a preview of the crops (an output node, so it runs)."""
    return {
        "1": {"class_type": "Arc2FaceArcFaceLoader", "inputs": {"provider": provider, "det_size": 640}},
        "2": {"class_type": "LoadImage", "inputs": {"image": image}},
        "3": {"class_type": "Arc2FaceArcFaceEmbed", "inputs": {"arcface": ["1", 0], "image": ["2", 0],
                                                              "face": face}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 1]}},
    }


def identities_prompt(images: list[str]) -> dict:
    """Nodes 1-7: models, the photos as one batch, embeddings, conditioning (positive 6:0, negative 6:1)."""
    prompt = {
        "1": {"class_type": "Arc2FaceModelLoader", "inputs": {"weight_dtype": "auto"}},
        "2": {"class_type": "Arc2FaceArcFaceLoader", "inputs": {"provider": "auto", "det_size": 640}},
        "3": {"class_type": "LoadImage", "inputs": {"image": images[0]}},
        "5": {"class_type": "Arc2FaceArcFaceEmbed", "inputs": {"arcface": ["2", 0], "image": ["3", 0],
                                                              "face": "largest"}},
        "6": {"class_type": "Arc2FaceEncoder", "inputs": {"encoder": ["1", 1], "embeds": ["5", 0]}},
    }
    if len(images) == 2:
        prompt["4"] = {"class_type": "LoadImage", "inputs": {"image": images[1]}}
        prompt["7"] = {"class_type": "ImageBatch", "inputs": {"image1": ["3", 0], "image2": ["4", 0]}}
        prompt["5"]["inputs"]["image"] = ["7", 0]
    elif len(images) > 2:
        raise ValueError("identities_prompt takes one or two photos")
    return prompt


def sampler(positive: list, negative: list, *, model: list | None = None, size: int = 64, images_per_id: int = 1,
            **overrides) -> dict:
    """An Arc2Face Sampler node at test size (64 px, 2 steps) on the model of node 1 unless another is given."""
    inputs = dict(SAMPLING, model=model or ["1", 0], positive=positive, negative=negative, width=size, height=size,
                  images_per_id=images_per_id)
    inputs.update(overrides)
    return {"class_type": "Arc2FaceSampler", "inputs": inputs}


def ksampler(positive: list, negative: list, latent: list, *, model: list | None = None, **overrides) -> dict:
    inputs = dict(SAMPLING, model=model or ["1", 0], positive=positive, negative=negative, latent_image=latent,
                  denoise=1.0)
    inputs.update(overrides)
    return {"class_type": "KSampler", "inputs": inputs}


def empty_latent(batch: int, size: int = 64) -> dict:
    return {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": batch}}
