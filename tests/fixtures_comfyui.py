"""One real ComfyUI server per test session, with this checkout as a custom node pack and random full-size models.

Runs only when ``COMFYUI_DIR`` points at an install made by ``shared/tools/comfyui/setup.sh`` (``DIR/ComfyUI`` and
``DIR/venv`` with this pack's requirements); tests that use ``comfy`` are skipped otherwise (``.ci/run`` builds the
install and sets ``ARC2FACE_NO_SKIP``, which turns any skip into a failure). The fixture links this checkout into
``DIR/ComfyUI/custom_nodes/arc2face``, writes random-weight models into ``DIR/ComfyUI/models`` (a full-size SD1.5 UNet,
ControlNet and VAE, since ComfyUI detects models by their shapes; tiny encoder, detector, recogniser, landmarks,
adapter, SMIRK and FLAME), rebuilt only when the builders change, and test photos into ``DIR/ComfyUI/input``; then
starts ``main.py --cpu`` on a free port and stops it when the session ends. Use a dedicated install.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import time
import urllib.error
from pathlib import Path

import numpy as np
import pytest

import face_shapes
from builders import (
    clip_encoder,
    exp_adapter,
    flame,
    lora,
    onnx_faces,
    onnx_landmarks,
    ref_lora,
    sd15_random,
    smirk,
    smirk_parts,
)
from comfyui_client import Comfy

COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
REPO = Path(__file__).resolve().parents[1]
PACK_LINK_NAME = "arc2face"
REFERENCE_POSE = (10.0, -25.0, 5.0)   # pitch, yaw, roll of the face the rigged 1k3d68 model reports for the astronaut
STOCK_CONTROLNET = "arc2face_pose_controlnet.safetensors"   # the random ControlNet, also for the stock loader
LCM_LORA = "lcm-lora-sdv1-5.safetensors"   # the name arc2face_lcm.json loads
FLAME_SEED = 21                       # the random FLAME model in models/arc2face/flame/


def comfyui_dir() -> Path:
    if not COMFYUI_DIR:
        pytest.skip("set COMFYUI_DIR to a ComfyUI install (shared/tools/comfyui/setup.sh) to run the real-server tests")
    base = Path(COMFYUI_DIR).resolve()
    if not (base / "ComfyUI" / "main.py").is_file() or not (base / "venv" / "bin" / "python").is_file():
        pytest.fail(f"COMFYUI_DIR={base} has no ComfyUI/main.py and venv (make it with setup.sh)")
    return base


def _builders_stamp() -> str:
    digest = hashlib.sha256()
    for module in (clip_encoder, exp_adapter, flame, lora, onnx_faces, onnx_landmarks, ref_lora, sd15_random, smirk,
                   smirk_parts, face_shapes):
        digest.update(Path(module.__file__).read_bytes())
    digest.update(smirk_parts.LAYOUT_FILE.read_bytes())
    return digest.hexdigest()[:16]


def rigged_reference_landmarks():
    """The 68 3D points the server's rigged 1k3d68 reports for the astronaut: a real face, with an open mouth and
    landmark noise, not an exact rigid copy of the mean shape, at REFERENCE_POSE."""
    from arc2face_core.faces.head_pose import rotation_from_angles

    return face_shapes.posed_landmarks(face_shapes.open_mouth_shape(), rotation_from_angles(*REFERENCE_POSE),
                                       noise=face_shapes.NOISE_OF_FACE_WIDTH)


def write_models(models: Path) -> None:
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
    onnx_landmarks.build_rigged_landmarks(models / "insightface/models/antelopev2/1k3d68.onnx",
                                          rigged_reference_landmarks())
    exp_adapter.write_exp_adapter(models / "arc2face" / "exp_adapter" / "exp_adapter.bin")
    smirk.write_smirk_checkpoint(models / "arc2face" / "smirk" / "SMIRK_em1.pt")
    smirk_parts.add_smirk_parts(models / "arc2face" / "smirk" / "SMIRK_em1.pt", ("pose", "shape"))   # whole encoder
    lora.write_sd15_lcm_lora(models / "loras" / LCM_LORA)   # low-rank random, kohya layout, every LCM target layer
    ref_lora.write_lora(models / "arc2face" / "ref_adapter" / "pytorch_lora_weights.safetensors")
    flame.write_flame_folder(models / "arc2face" / "flame", seed=FLAME_SEED)   # small, in FLAME 2020's pickle layout
    controlnet = sd15_random.write_controlnet(models / "arc2face" / "controlnet")
    stock = models / "controlnet" / STOCK_CONTROLNET
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


def write_inputs(inputs: Path) -> None:
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
        # what a careless user feeds: noise the test detector takes for a face whose landmarks frame none
        "arc2face_noise_8px.png": np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8),
        "arc2face_pose_reference.png": face,
        "arc2face_expression_reference.png": face,
        "arc2face_normals_front.png": sphere_normal_map(),
        "arc2face_normals_turned.png": sphere_normal_map(tilt=0.6),
        # a 128-px normal map in 4x4 blocks: bilinear and nearest-exact resizes to 128 px both give it back exactly
        "arc2face_normals_blocks.png": sphere_normal_map(128, tilt=0.3).repeat(4, axis=0).repeat(4, axis=1),
    }
    for name, array in images.items():
        Image.fromarray(array).save(inputs / name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def link_pack(custom_nodes: Path) -> None:
    link = custom_nodes / PACK_LINK_NAME
    if link.is_symlink():
        link.unlink()
    elif link.exists():
        pytest.fail(f"{link} exists and is not a symlink; remove it to let the tests link this checkout")
    link.symlink_to(REPO, target_is_directory=True)


def start_server(base: Path, log_path: Path, extra_args: tuple[str, ...] = ()) -> tuple[subprocess.Popen, Comfy]:
    """Start ``main.py --cpu`` of ``base`` on a free port and wait until it answers; fails on IMPORT FAILED."""
    root, python = base / "ComfyUI", base / "venv" / "bin" / "python"
    port = _free_port()
    with open(log_path, "w") as log:
        process = subprocess.Popen([str(python), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
                                    "--disable-auto-launch", *extra_args], cwd=root, stdout=log,
                                   stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    client = Comfy(f"http://127.0.0.1:{port}", root, python)
    deadline = time.time() + 300
    while True:
        try:
            client.get("/object_info/LoadImage")
            break
        except (urllib.error.URLError, ConnectionError, OSError):
            if process.poll() is not None or time.time() > deadline:
                stop_server(process)
                pytest.fail(f"ComfyUI did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.3)
    log_text = log_path.read_text()
    if "IMPORT FAILED" in log_text:
        stop_server(process)
        pytest.fail(log_text[-3000:])
    return process, client


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="session")
def comfy_install() -> Path:
    """DIR of the real ComfyUI install, with the random models, test photos and this pack linked in."""
    base = comfyui_dir()
    root = base / "ComfyUI"
    write_models(root / "models")
    write_inputs(root / "input")
    link_pack(root / "custom_nodes")
    return base


@pytest.fixture(scope="session")
def comfy(comfy_install):
    """The one server of the session (all real-server tests share it and its loaded models)."""
    process, client = start_server(comfy_install, comfy_install / "arc2face_integration.log")
    try:
        yield client
    finally:
        stop_server(process)


@pytest.fixture(scope="session")
def object_info(comfy):
    return comfy.get("/object_info")


def run_in_comfyui(comfy_install: Path, script: Path, *args: str, timeout: float = 900) -> dict:
    """Run a check script with ComfyUI's own interpreter from DIR/ComfyUI; returns the JSON its last line prints."""
    result = subprocess.run([str(comfy_install / "venv" / "bin" / "python"), str(script), str(REPO), *args],
                            cwd=comfy_install / "ComfyUI", capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])
