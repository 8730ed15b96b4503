"""The one-command main job: ``python -m arc2face_core --download --image astronaut --out out/`` against local fakes.

Three fake hosts stand in for the real sources: a Hugging Face hub (FoivosPar/Arc2Face, stable-diffusion-v1-5,
latent-consistency/lcm-lora-sdv1-5), insightface's GitHub release (antelopev2.zip behind a 302 redirect, as GitHub
serves assets) and MediaPipe's model storage. The models are the tiny ones of the other tests in their real layouts;
the VAE is SD1.5-shaped (the CLI reads a single-file VAE as SD1.5's). Offline is a closed local port.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from arc2face_core.cli import downloads
from arc2face_core.cli.downloads import GROUPS, INSIGHTFACE_RELEASES, DownloadError, fetch_missing
from arc2face_core.errors import WeightsNotFoundError
from builders.fake_hub import FakeFileServer, FakeHub
from builders.onnx_faces import astronaut_face, build_recogniser, build_rigged_detector
from builders.sd15_random import write_vae
from builders.tiny_diffusers import write_tiny_unet

REPO = Path(__file__).resolve().parents[1]
RELEASE = "/deepinsight/insightface/releases/download/model-zoo/antelopev2.zip"
LANDMARKER = "/mediapipe-models/face_landmarker/face_landmarker/float16/1/face_landmarker.task"
NOT_USED = ("glintr100.onnx", "genderage.onnx", "2d106det.onnx")


@pytest.fixture(scope="module")
def sources(tmp_path_factory, encoder_root) -> dict:
    """What each fake host serves: {hub repo: {file: bytes}}, the release archive's members, the landmarker."""
    work = tmp_path_factory.mktemp("sources")
    write_tiny_unet(work, seed=0)
    build_recogniser(work / "arcface.onnx", seed=1234)
    build_rigged_detector(work / "scrfd_10g_bnkps.onnx", [astronaut_face()], (512, 512))
    write_vae(work / "vae.safetensors", seed=1)
    read = lambda p: Path(p).read_bytes()   # noqa: E731
    arc2face = {"arc2face/config.json": read(work / "arc2face/config.json"),
                "arc2face/diffusion_pytorch_model.safetensors": read(work / "arc2face/diffusion_pytorch_model"
                                                                                ".safetensors"),
                "encoder/config.json": read(encoder_root / "encoder/config.json"),
                "encoder/pytorch_model.bin": read(encoder_root / "encoder/pytorch_model.bin"),
                "arcface.onnx": read(work / "arcface.onnx"),
                "controlnet/config.json": b"{}", "controlnet/diffusion_pytorch_model.safetensors": os.urandom(2048),
                "exp_adapter/exp_adapter.bin": os.urandom(1024),
                "ref_adapter/pytorch_lora_weights.safetensors": os.urandom(1024)}
    members = {"scrfd_10g_bnkps.onnx": read(work / "scrfd_10g_bnkps.onnx"), "1k3d68.onnx": os.urandom(3000),
               **{name: os.urandom(500) for name in NOT_USED}}
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:   # the real archive nests its files in an antelopev2/ folder
        for name, data in members.items():
            zf.writestr(f"antelopev2/{name}", data)
    return {"hub": {"FoivosPar/Arc2Face": arc2face,
                    "stable-diffusion-v1-5/stable-diffusion-v1-5": {"vae/diffusion_pytorch_model.safetensors":
                                                                    read(work / "vae.safetensors")},
                    "latent-consistency/lcm-lora-sdv1-5": {"pytorch_lora_weights.safetensors": os.urandom(4096)}},
            "members": members, "zip": archive.getvalue(), "landmarker": os.urandom(5000)}


@pytest.fixture()
def hosts(sources, monkeypatch):
    hub_repos = dict(sources["hub"])
    first = hub_repos.pop("FoivosPar/Arc2Face")
    release = FakeFileServer({"/assets/antelopev2.zip": sources["zip"]}, redirects={RELEASE: "/assets/antelopev2.zip"})
    storage = FakeFileServer({LANDMARKER: sources["landmarker"]})
    with FakeHub("FoivosPar/Arc2Face", first, hub_repos).running() as hub, release.running(), storage.running():
        env = {"HF_ENDPOINT": hub.endpoint,
               "ARC2FACE_INSIGHTFACE_RELEASES": release.endpoint + RELEASE.rsplit("/", 1)[0],
               "ARC2FACE_MEDIAPIPE_MODELS": storage.endpoint + "/mediapipe-models"}
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        yield {"hub": hub, "release": release, "storage": storage, "env": env}


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"   # nothing listens once the socket is closed


def run_cli(cwd: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", **env)
    full_env.pop("HF_HUB_OFFLINE", None)
    return subprocess.run([sys.executable, "-m", "arc2face_core", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=300)


def test_insightface_url_is_the_one_insightface_downloads_from():
    """The release URL comes from insightface's own source (insightface.utils.storage), not from a mirror."""
    from insightface.utils.storage import model_zoo_download_url

    assert model_zoo_download_url("antelopev2.zip") == f"{INSIGHTFACE_RELEASES}/antelopev2.zip"


def test_the_main_job_in_one_command(tmp_path, hosts, sources, face_analyzer, astronaut_scene):
    result = run_cli(tmp_path, hosts["env"], "--download", "--image", "astronaut", "--out", "out/", "--steps", "2",
                     "--width", "64", "--height", "64", "--images-per-id", "1", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    models = tmp_path / "models"
    hub = sources["hub"]
    for name in ("arc2face/config.json", "arc2face/diffusion_pytorch_model.safetensors", "encoder/config.json",
                 "encoder/pytorch_model.bin", "arcface.onnx"):
        assert (models / "arc2face" / name).read_bytes() == hub["FoivosPar/Arc2Face"][name]
    assert (models / "vae/sd15_vae.safetensors").read_bytes() == \
        hub["stable-diffusion-v1-5/stable-diffusion-v1-5"]["vae/diffusion_pytorch_model.safetensors"]
    antelope = models / "insightface/models/antelopev2"
    assert sorted(p.name for p in antelope.iterdir()) == ["scrfd_10g_bnkps.onnx"]   # only what a photo run needs
    assert (antelope / "scrfd_10g_bnkps.onnx").read_bytes() == sources["members"]["scrfd_10g_bnkps.onnx"]
    assert not list(models.rglob("*.part")) and not list(models.rglob("*.zip*"))
    assert "non-commercial research" in result.stderr
    assert not any("controlnet" in r or "exp_adapter" in r for r in hosts["hub"].requests)   # not needed here
    out = tmp_path / "out"
    assert [p.name for p in sorted(out.glob("*.png"))] == ["id000_00.png"]
    # The identity is the astronaut's, embedded by insightface's code with the downloaded models.
    expected = face_analyzer.embed([np.ascontiguousarray(astronaut_scene.image[..., ::-1])]).embeds
    torch.testing.assert_close(torch.load(out / "embeddings.pt", weights_only=True), expected, atol=1e-6, rtol=0)
    assert json.loads((out / "settings.json").read_text())["identities"]["images"] == ["astronaut"]

    # A second run finds everything in place: nothing is fetched again.
    requests = len(hosts["hub"].requests) + len(hosts["release"].requests)
    again = run_cli(tmp_path, hosts["env"], "--download", "--random-identities", "1", "--out", "out2/", "--steps", "1",
                    "--width", "64", "--height", "64", "--images-per-id", "1", "--device", "cpu", "-q")
    assert again.returncode == 0, again.stderr
    assert len(hosts["hub"].requests) + len(hosts["release"].requests) == requests


def test_offline_it_fails_at_once_listing_what_is_missing(tmp_path):
    dead = closed_port_url()
    env = {"HF_ENDPOINT": dead, "ARC2FACE_INSIGHTFACE_RELEASES": dead, "ARC2FACE_MEDIAPIPE_MODELS": dead}
    result = run_cli(tmp_path, env, "--download", "--image", "astronaut", "--out", "out/")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    err = result.stderr
    assert "Downloading Arc2Face UNet config from" in err and "failed (URLError" in err
    models = tmp_path / "models"
    for target in ("arc2face/arc2face/config.json", "arc2face/arc2face/diffusion_pytorch_model.safetensors",
                   "arc2face/encoder/config.json", "arc2face/encoder/pytorch_model.bin", "arc2face/arcface.onnx",
                   "insightface/models/antelopev2/scrfd_10g_bnkps.onnx", "vae/sd15_vae.safetensors"):
        assert f"{models / target}  <-  " in err, target
    assert f"{dead}/stable-diffusion-v1-5/stable-diffusion-v1-5/resolve/main/vae/diffusion_pytorch_model" in err
    assert not list(models.rglob("*.part"))
    assert not (tmp_path / "out").exists()


def test_a_short_download_is_refused_and_leaves_nothing(tmp_path, monkeypatch, sources):
    with FakeFileServer({LANDMARKER: sources["landmarker"]}, truncated=(LANDMARKER,)).running() as storage:
        monkeypatch.setenv("ARC2FACE_MEDIAPIPE_MODELS", storage.endpoint + "/mediapipe-models")
        with pytest.raises(DownloadError, match=r"(?s)MediaPipe face landmarker .* failed .*sent 2500 bytes, "
                                                r"expected 5000.*arc2face/mediapipe/face_landmarker\.task  <-  "):
            fetch_missing(tmp_path, GROUPS["mediapipe"], quiet=True)
    assert not list(tmp_path.rglob("face_landmarker.task*"))


def test_the_download_tool_fills_a_comfyui_models_folder(tmp_path, hosts, sources, capsys):
    models = tmp_path / "ComfyUI" / "models"
    (models / "arc2face" / "encoder").mkdir(parents=True)
    (models / "arc2face" / "encoder" / "model.safetensors").write_bytes(b"kept")   # an accepted alternative
    assert downloads.main(["--models", str(models), "--all", "-q"]) == 0
    assert (models / "arc2face/mediapipe/face_landmarker.task").read_bytes() == sources["landmarker"]
    assert (models / "loras/lcm-lora-sdv1-5.safetensors").read_bytes() == \
        sources["hub"]["latent-consistency/lcm-lora-sdv1-5"]["pytorch_lora_weights.safetensors"]
    assert (models / "arc2face/exp_adapter/exp_adapter.bin").is_file()
    assert (models / "arc2face/ref_adapter/pytorch_lora_weights.safetensors").is_file()
    assert (models / "arc2face/controlnet/diffusion_pytorch_model.safetensors").is_file()
    antelope = sorted(p.name for p in (models / "insightface/models/antelopev2").iterdir())
    assert antelope == ["1k3d68.onnx", "scrfd_10g_bnkps.onnx"] and not set(NOT_USED) & set(antelope)
    assert hosts["release"].requests.count(f"GET {RELEASE}") == 1   # one archive for both files
    assert not (models / "arc2face/encoder/pytorch_model.bin").exists()   # model.safetensors was there already
    assert downloads.main(["--models", str(models), "--list", "--all"]) == 0
    listing = capsys.readouterr().out
    assert "non-commercial research purposes only" in listing and "Apache-2.0" in listing
    assert "https://github.com/georgeretsi/smirk" in listing and "https://flame.is.tue.mpg.de/" in listing


def test_without_download_a_missing_default_vae_asks_for_vae(tmp_path):
    from arc2face_core.cli.downloads import prepare_run
    from arc2face_core.cli.main import parse_args

    args = parse_args(["--random-identities", "1", "--out", str(tmp_path / "o"), "--models", str(tmp_path / "models")])
    with pytest.raises(WeightsNotFoundError, match=r"No VAE: --vae was not given and the default .*models/vae/"
                                                   r"sd15_vae\.safetensors does not exist\. Pass --vae"):
        prepare_run(args)


def test_astronaut_is_scikit_images_photo_unless_a_file_has_that_name(tmp_path, monkeypatch):
    from PIL import Image
    from skimage import data

    from arc2face_core.cli.main import read_rgb

    assert np.array_equal(read_rgb(Path("astronaut")), data.astronaut())
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "astronaut", format="PNG")
    assert read_rgb(Path("astronaut")).shape == (8, 8, 3)
