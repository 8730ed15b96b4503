"""The pack inside a real ComfyUI server: every shipped workflow through ``POST /prompt``, with random weights.

Runs only when ``COMFYUI_DIR`` points at an install made by ``shared/tools/comfyui/setup.sh`` (``DIR/ComfyUI`` and
``DIR/venv`` with this pack's requirements); skipped otherwise. It links this checkout into
``DIR/ComfyUI/custom_nodes/arc2face``, writes random-weight models into ``DIR/ComfyUI/models`` (a full-size SD1.5
UNet and VAE, since ComfyUI detects models by their shapes; tiny encoder, detector and recogniser) and test photos into
``DIR/ComfyUI/input``, starts ``main.py --cpu`` on a free port and stops it at the end. Use a dedicated install.

    COMFYUI_DIR=/path/to/dir pytest tests/test_comfyui_integration.py
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest

from builders import clip_encoder, exp_adapter, onnx_faces, onnx_landmarks, sd15_random, smirk
from builders.ui_workflows import FILE_COMBOS, check_ui_workflow, normalise_node_info, ui_to_api

COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
pytestmark = [
    pytest.mark.comfyui,
    pytest.mark.skipif(not COMFYUI_DIR, reason="set COMFYUI_DIR to a ComfyUI install to run the integration tests"),
]

REPO = Path(__file__).resolve().parents[1]
PACK_LINK_NAME = "arc2face"
FAST = {"steps": 2, "width": 64, "height": 64}   # a full-size UNet on CPU: keep images tiny
EXPECTED_IMAGES = {"arc2face_basic": 4, "arc2face_average": 4, "arc2face_blend": 5, "arc2face_ksampler": 1,
                   "arc2face_pose": 4, "arc2face_pose_angles": 4, "arc2face_expression": 4,
                   "arc2face_expression_manual": 4}
EXPECTED_FACES = {"arc2face_basic": 1, "arc2face_average": 3, "arc2face_blend": 1, "arc2face_ksampler": 1,
                  "arc2face_pose": 1, "arc2face_pose_angles": 1, "arc2face_expression": 1,
                  "arc2face_expression_manual": 1}
REFERENCE_POSE = (10.0, -25.0, 5.0)   # pitch, yaw, roll the rigged 1k3d68 model reports for the astronaut


# ----------------------------------------------------------------------------------------------------- setup

def _builders_stamp() -> str:
    digest = hashlib.sha256()
    for module in (clip_encoder, exp_adapter, onnx_faces, onnx_landmarks, sd15_random, smirk):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:16]


def _write_models(models: Path) -> None:
    """Random-weight models in the real layouts; rebuilt only when the builders change."""
    stamp = models / "arc2face" / ".random_test_models"
    if stamp.is_file() and stamp.read_text() == _builders_stamp():
        return
    sd15_random.write_unet(models / "arc2face" / "arc2face")
    clip_encoder.write_encoder(models / "arc2face", seed=0)
    onnx_faces.build_recogniser(models / "arc2face" / "arcface.onnx", seed=1234)
    onnx_faces.build_rigged_detector(models / "insightface/models/antelopev2/scrfd_10g_bnkps.onnx",
                                     [onnx_faces.astronaut_face()], (512, 512))
    sd15_random.write_vae(models / "vae" / "sd15_vae.safetensors")
    from arc2face_core.faces.head_pose import rotation_from_angles

    onnx_landmarks.build_rigged_landmarks(models / "insightface/models/antelopev2/1k3d68.onnx",
                                          onnx_landmarks.posed_mean_shape(rotation_from_angles(*REFERENCE_POSE)))
    exp_adapter.write_exp_adapter(models / "arc2face" / "exp_adapter" / "exp_adapter.bin")
    smirk.write_smirk_checkpoint(models / "arc2face" / "smirk" / "SMIRK_em1.pt")
    controlnet = sd15_random.write_controlnet(models / "arc2face" / "controlnet")
    stock = models / "controlnet" / "arc2face_pose_controlnet.safetensors"   # for the stock ControlNet loader
    stock.parent.mkdir(parents=True, exist_ok=True)
    stock.unlink(missing_ok=True)
    stock.symlink_to(controlnet)
    stamp.write_text(_builders_stamp())


def sphere_normal_map(size: int = 512, tilt: float = 0.0) -> np.ndarray:
    """A hemisphere's normals (x right, y up, z to the camera) as uint8 RGB on mid-grey, turned by ``tilt``."""
    ys, xs = np.meshgrid(np.linspace(1, -1, size), np.linspace(-1, 1, size), indexing="ij")
    inside = xs ** 2 + ys ** 2 < 0.6
    n = np.stack([xs, ys, np.sqrt(np.clip(1 - xs ** 2 - ys ** 2, 0, 1))], axis=-1)
    c, s = np.cos(tilt), np.sin(tilt)
    n = n @ np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])
    rgb = np.where(inside[..., None], n * 0.5 + 0.5, 0.5)
    return (rgb * 255).round().astype(np.uint8)


def _write_inputs(inputs: Path) -> None:
    from PIL import Image

    inputs.mkdir(parents=True, exist_ok=True)
    face = onnx_faces.astronaut_rgb()
    images = {
        "arc2face_face.png": face,
        "arc2face_person_1.png": face,
        "arc2face_person_2.png": np.clip(face.astype(np.int16) + 25, 0, 255).astype(np.uint8),
        "arc2face_person_3.png": np.clip(face.astype(np.int16) - 25, 0, 255).astype(np.uint8),
        "arc2face_person_a.png": face,
        "arc2face_person_b.png": np.ascontiguousarray(face[..., ::-1]),   # other colours, other "identity"
        "arc2face_black.png": np.zeros_like(face),
        "arc2face_pose_reference.png": face,
        "arc2face_expression_reference.png": face,
        "arc2face_normals_front.png": sphere_normal_map(),
        "arc2face_normals_turned.png": sphere_normal_map(tilt=0.6),
    }
    for name, array in images.items():
        Image.fromarray(array).save(inputs / name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _link_pack(custom_nodes: Path) -> None:
    link = custom_nodes / PACK_LINK_NAME
    if link.is_symlink():
        link.unlink()
    elif link.exists():
        pytest.fail(f"{link} exists and is not a symlink; remove it to let the test link this checkout")
    link.symlink_to(REPO, target_is_directory=True)


class Comfy:
    def __init__(self, url: str, root: Path):
        self.url, self.root = url, root

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=60) as response:
            return json.load(response)

    def run(self, prompt: dict, timeout: float = 900) -> dict:
        """POST the prompt and wait; returns its /history entry (status and outputs)."""
        body = json.dumps({"prompt": prompt, "client_id": str(uuid.uuid4())}).encode()
        request = urllib.request.Request(self.url + "/prompt", data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                prompt_id = json.load(response)["prompt_id"]
        except urllib.error.HTTPError as err:
            pytest.fail(f"ComfyUI refused the prompt: {err.read().decode()[:3000]}")
        deadline = time.time() + timeout
        while time.time() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                entry = history[prompt_id]
                if entry["status"]["status_str"] in ("success", "error"):
                    return entry
            time.sleep(0.5)
        pytest.fail(f"prompt {prompt_id} did not finish in {timeout} s")


@pytest.fixture(scope="module")
def comfy():
    base = Path(COMFYUI_DIR).resolve()
    root, python = base / "ComfyUI", base / "venv" / "bin" / "python"
    if not (root / "main.py").is_file() or not python.is_file():
        pytest.fail(f"COMFYUI_DIR={base} has no ComfyUI/main.py and venv (make it with setup.sh)")
    _write_models(root / "models")
    _write_inputs(root / "input")
    _link_pack(root / "custom_nodes")
    port = _free_port()
    log_path = base / "arc2face_integration.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([str(python), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
                                    "--disable-auto-launch"], cwd=root, stdout=log, stderr=subprocess.STDOUT,
                                   env=dict(os.environ, PYTHONUNBUFFERED="1"))
    client = Comfy(f"http://127.0.0.1:{port}", root)
    try:
        deadline = time.time() + 300
        while True:
            try:
                client.get("/object_info/LoadImage")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if process.poll() is not None or time.time() > deadline:
                    pytest.fail(f"ComfyUI did not start:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.5)
        log_text = log_path.read_text()
        assert "IMPORT FAILED" not in log_text, log_text[-3000:]
        yield client
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def object_info(comfy):
    return comfy.get("/object_info")


def _outputs(entry: dict, node_id: str) -> list[dict]:
    return entry["outputs"].get(node_id, {}).get("images", [])


def _error(entry: dict) -> str:
    for kind, data in entry["status"].get("messages", []):
        if kind == "execution_error":
            return f"{data.get('exception_type')}: {data.get('exception_message')}"
    return ""


# ----------------------------------------------------------------------------------------------------- tests

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
    workflow = json.loads((REPO / "workflows" / f"{name}.json").read_text())
    assert check_ui_workflow(workflow, object_info, FILE_COMBOS) == []
    prompt = ui_to_api(workflow, object_info)
    for node in prompt.values():
        if node["class_type"] in ("Arc2FaceSampler", "KSampler", "EmptyLatentImage"):
            node["inputs"].update({k: v for k, v in FAST.items() if k in node["inputs"]})
    return prompt


@pytest.mark.parametrize("name", sorted(EXPECTED_IMAGES))
def test_workflow_runs_end_to_end(comfy, object_info, name):
    prompt = _workflow_prompt(name, object_info)
    entry = comfy.run(prompt)
    assert entry["status"]["status_str"] == "success", _error(entry)
    save_id = next(i for i, n in prompt.items() if n["class_type"] == "SaveImage")
    preview_id = next(i for i, n in prompt.items() if n["class_type"] == "PreviewImage")
    saved = _outputs(entry, save_id)
    assert len(saved) == EXPECTED_IMAGES[name]
    assert len(_outputs(entry, preview_id)) == EXPECTED_FACES[name]
    from PIL import Image

    for image in saved:
        path = comfy.root / "output" / image["subfolder"] / image["filename"]
        assert Image.open(path).size == (64, 64)


def _embed_prompt(image: str, provider: str) -> dict:
    """ArcFace Loader → Load Image → ArcFace Embed → a preview of the crops (an output node, so it runs)."""
    return {
        "1": {"class_type": "Arc2FaceArcFaceLoader", "inputs": {"provider": provider, "det_size": 640}},
        "2": {"class_type": "LoadImage", "inputs": {"image": image}},
        "3": {"class_type": "Arc2FaceArcFaceEmbed", "inputs": {"arcface": ["1", 0], "image": ["2", 0],
                                                              "face": "largest"}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 1]}},
    }


def test_no_face_is_an_error_that_names_the_image(comfy):
    entry = comfy.run(_embed_prompt("arc2face_black.png", "auto"))
    assert entry["status"]["status_str"] == "error"
    assert "NoFaceError: No face found in image 1 of 1 (512x512 pixels)" in _error(entry)


def test_an_explicit_gpu_provider_that_cannot_run_is_an_error(comfy):
    """No GPU here: asking for CUDA must fail loudly (not silently run on the CPU)."""
    entry = comfy.run(_embed_prompt("arc2face_face.png", "CUDA"))
    assert entry["status"]["status_str"] == "error"
    error = _error(entry)
    kind, _, message = error.partition(": ")
    assert kind.endswith("ProviderError") and "CUDAExecutionProvider" in message, error


def _identities_prompt(images: list[str]) -> dict:
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
    return prompt


SAMPLING = {"seed": 1234, "steps": 2, "cfg": 3.0, "sampler_name": "dpmpp_2m", "scheduler": "normal"}


def _saved_latent(comfy: Comfy, prefix: str):
    from safetensors.torch import load_file

    files = sorted((comfy.root / "output" / "latents").glob(f"{prefix}_*.latent"))
    return load_file(str(files[-1]))["latent_tensor"]


def test_sampler_equals_stock_ksampler_to_the_bit(comfy):
    tag = uuid.uuid4().hex[:8]
    prompt = _identities_prompt(["arc2face_person_a.png", "arc2face_person_b.png"])
    prompt["10"] = {"class_type": "Arc2FaceSampler", "inputs": dict(
        SAMPLING, model=["1", 0], positive=["6", 0], negative=["6", 1], width=64, height=64, images_per_id=1)}
    prompt["11"] = {"class_type": "SaveLatent", "inputs": {"samples": ["10", 0], "filename_prefix": f"latents/a_{tag}"}}
    prompt["12"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 2}}
    prompt["13"] = {"class_type": "KSampler", "inputs": dict(
        SAMPLING, model=["1", 0], positive=["6", 0], negative=["6", 1], latent_image=["12", 0], denoise=1.0)}
    prompt["14"] = {"class_type": "SaveLatent", "inputs": {"samples": ["13", 0], "filename_prefix": f"latents/k_{tag}"}}
    entry = comfy.run(prompt)
    assert entry["status"]["status_str"] == "success", _error(entry)
    ours, stock = _saved_latent(comfy, f"a_{tag}"), _saved_latent(comfy, f"k_{tag}")
    assert ours.shape == (2, 4, 8, 8)
    assert np.array_equal(ours.numpy(), stock.numpy())
    assert not np.allclose(ours[0].numpy(), ours[1].numpy())   # two identities, two different results


def test_images_per_id_take_the_ksampler_noise_of_their_batch_index(comfy):
    """Image j of identity i == KSampler on identity i alone with batch_index i*k+j (same seed)."""
    tag = uuid.uuid4().hex[:8]
    k = 2
    prompt = _identities_prompt(["arc2face_person_a.png", "arc2face_person_b.png"])
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
    assert entry["status"]["status_str"] == "success", _error(entry)
    grouped, alone = _saved_latent(comfy, f"g_{tag}"), _saved_latent(comfy, f"b_{tag}")
    assert grouped.shape == (4, 4, 8, 8) and alone.shape == (2, 4, 8, 8)
    # Same noise and conditioning; only the batch the UNet sees differs (4 vs 2 rows), so allow float rounding.
    np.testing.assert_allclose(grouped[2:].numpy(), alone.numpy(), rtol=1e-4, atol=1e-3)
    assert not np.allclose(grouped[0].numpy(), grouped[2].numpy(), atol=1e-2)


# ------------------------------------------------------------------------------------------------- pose control

def _pose_prompt(images: list[str], hints: list[str], tag: str, *, strength: float = 1.0, start: float = 0.0,
                 end: float = 1.0, images_per_id: int = 1, size: int = 64, steps: int = 2) -> dict:
    """identities → Arc2Face Pose ControlNet (our loader) → Arc2Face Sampler → SaveLatent ``latents/p_<tag>``."""
    prompt = _identities_prompt(images)
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
    """Both CFG halves, strength and range exactly as ComfyUI's own Apply ControlNet; each loader's ControlNet works
    with the other's node. At 512 px the hint is used as is (no resize), so the results must be identical."""
    tag = uuid.uuid4().hex[:8]
    prompt = _pose_prompt(["arc2face_face.png"], ["arc2face_normals_front.png"], tag, strength=0.7, start=0.0,
                          end=0.5, size=512, steps=2)
    prompt["30"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name":
                                                                 "arc2face_pose_controlnet.safetensors"}}
    prompt.update({
        "40": {"class_type": "Arc2FaceControlNetLoader", "inputs": {}},
        "41": {"class_type": "ControlNetApplyAdvanced", "inputs": {
            "positive": ["6", 0], "negative": ["6", 1], "control_net": ["40", 0], "image": ["31", 0],
            "strength": 0.7, "start_percent": 0.0, "end_percent": 0.5}},
        "42": {"class_type": "KSampler", "inputs": dict(SAMPLING, model=["1", 0], positive=["41", 0],
                                                        negative=["41", 1], latent_image=["43", 0], denoise=1.0)},
        "43": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
        "44": {"class_type": "SaveLatent", "inputs": {"samples": ["42", 0], "filename_prefix": f"latents/s_{tag}"}},
        "45": {"class_type": "KSampler", "inputs": dict(SAMPLING, model=["1", 0], positive=["6", 0],
                                                        negative=["6", 1], latent_image=["43", 0], denoise=1.0)},
        "46": {"class_type": "SaveLatent", "inputs": {"samples": ["45", 0], "filename_prefix": f"latents/n_{tag}"}},
    })
    entry = comfy.run(prompt)
    assert entry["status"]["status_str"] == "success", _error(entry)
    ours, stock, free = (_saved_latent(comfy, f"{p}_{tag}") for p in ("p", "s", "n"))
    assert np.array_equal(ours.numpy(), stock.numpy())
    assert not np.allclose(ours.numpy(), free.numpy(), atol=1e-3)   # the control does act


def test_pose_strength_zero_is_no_control(comfy):
    tag = uuid.uuid4().hex[:8]
    prompt = _pose_prompt(["arc2face_face.png"], ["arc2face_normals_front.png"], tag, strength=0.0)
    prompt["37"] = {"class_type": "Arc2FaceSampler", "inputs": dict(
        SAMPLING, model=["1", 0], positive=["6", 0], negative=["6", 1], width=64, height=64, images_per_id=1)}
    prompt["38"] = {"class_type": "SaveLatent", "inputs": {"samples": ["37", 0], "filename_prefix": f"latents/f_{tag}"}}
    entry = comfy.run(prompt)
    assert entry["status"]["status_str"] == "success", _error(entry)
    assert np.array_equal(_saved_latent(comfy, f"p_{tag}").numpy(), _saved_latent(comfy, f"f_{tag}").numpy())


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
    assert entry["status"]["status_str"] == "success", _error(entry)
    grouped, alone = _saved_latent(comfy, f"p_{tag}"), _saved_latent(comfy, f"b_{tag}")
    assert grouped.shape == (4, 4, 8, 8)
    np.testing.assert_allclose(grouped[2:].numpy(), alone.numpy(), rtol=1e-4, atol=1e-3)


def test_pose_errors(comfy):
    tag = uuid.uuid4().hex[:8]
    prompt = _pose_prompt(["arc2face_face.png"], ["arc2face_normals_front.png", "arc2face_normals_turned.png"], tag)
    entry = comfy.run(prompt)   # one identity, two normal maps
    assert entry["status"]["status_str"] == "error"
    assert "normal_map has a batch of 2 but the conditioning holds 1 identities" in _error(entry)


# ----------------------------------------------------------------------------------------------- expression

SD15_ATTN2_KEYS = sorted([["input", n] for n in (1, 2, 4, 5, 7, 8)] + [["middle", 0]] +
                         [["output", n] for n in range(3, 12)])


def test_expression_adapter_patch_inside_comfyui(comfy):
    """Run in ComfyUI's own interpreter on its UNet: keys, weight 0, cond/uncond tokens, range, stacking, memory."""
    base = Path(COMFYUI_DIR).resolve()
    result = subprocess.run([str(base / "venv" / "bin" / "python"), str(REPO / "tests" / "comfyui_checks" /
                                                                        "expression_patch.py"), str(REPO)],
                            cwd=base / "ComfyUI", capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    m = json.loads(result.stdout.strip().splitlines()[-1])
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
