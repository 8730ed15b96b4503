"""Weight discovery: several roots, safe names, clear errors, and the opt-in download through huggingface_hub.

The download tests run the real ``hf_hub_download`` in a subprocess whose ``HF_ENDPOINT`` points at a local server
speaking the Hub's resolve protocol, so nothing leaves the machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from arc2face_core.errors import UnsafePathError, WeightsNotFoundError
from arc2face_core.weights import DETECTOR, ENCODER, UNET, ModelRoots, find_weight, safe_join
from builders.fake_hub import FakeHub

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["../x.bin", "a/../../x.bin", "/etc/passwd", "", ".", "a/.."])
def test_names_that_escape_are_refused(tmp_path, name):
    with pytest.raises(UnsafePathError, match="model"):
        safe_join(tmp_path, name)


def test_names_inside_are_joined_without_resolving_symlinks(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "root").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "root" / "encoder")
    path = safe_join(tmp_path / "root", "encoder/./pytorch_model.bin")
    assert path == tmp_path / "root" / "encoder" / "pytorch_model.bin"


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"w")
    return path


def test_first_root_wins_and_candidates_keep_their_order(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _touch(b / "encoder/model.safetensors")
    _touch(a / "encoder/pytorch_model.bin")
    assert find_weight(ENCODER, [a, b]) == a / "encoder/pytorch_model.bin"
    _touch(a / "encoder/model.safetensors")
    assert find_weight(ENCODER, [a, b]) == a / "encoder/model.safetensors"


def test_missing_file_message(tmp_path):
    roots = [tmp_path / "one", tmp_path / "two"]
    with pytest.raises(WeightsNotFoundError) as err:
        find_weight(UNET, roots)
    text = str(err.value)
    for part in ("Arc2Face UNet", "arc2face/diffusion_pytorch_model.safetensors", str(roots[0]), str(roots[1]),
                 "https://huggingface.co/FoivosPar/Arc2Face", "arc2face/config.json", "download switch"):
        assert part in text


def test_detector_cannot_be_downloaded_and_says_where_to_get_it(tmp_path):
    with pytest.raises(WeightsNotFoundError) as err:
        find_weight(DETECTOR, [tmp_path / "insightface"], download=True)
    text = str(err.value)
    assert "scrfd_10g_bnkps.onnx" in text and "antelopev2" in text and "cannot be downloaded automatically" in text


def test_model_roots_under_a_models_folder(tmp_path):
    roots = ModelRoots.under(tmp_path)
    assert roots.arc2face == [tmp_path / "arc2face"] and roots.insightface == [tmp_path / "insightface"]


def _run_find(root: Path, endpoint: str, download: bool) -> subprocess.CompletedProcess:
    code = ("import json, sys; from arc2face_core.weights import ENCODER, find_weight\n"
            f"p = find_weight(ENCODER, [sys.argv[1]], download={download})\n"
            "print(json.dumps(str(p)))")
    env = dict(os.environ, HF_ENDPOINT=endpoint, HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_TELEMETRY="1",
               HF_HOME=str(root.parent / "hf_home"), PYTHONPATH=str(REPO_ROOT))
    return subprocess.run([sys.executable, "-c", code, str(root)], env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture()
def hub():
    files = {"encoder/config.json": json.dumps({"hidden_size": 768}).encode(),
             "encoder/pytorch_model.bin": os.urandom(4096)}
    with FakeHub("FoivosPar/Arc2Face", files).running() as server:
        yield server


def test_download_fetches_the_file_and_its_config_into_the_repo_layout(tmp_path, hub):
    root = tmp_path / "models" / "arc2face"
    result = _run_find(root, hub.endpoint, download=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == str(root / "encoder/pytorch_model.bin")
    assert (root / "encoder/pytorch_model.bin").read_bytes() == hub.files["encoder/pytorch_model.bin"]
    assert (root / "encoder/config.json").read_bytes() == hub.files["encoder/config.json"]


def test_without_the_switch_nothing_is_requested(tmp_path, hub):
    result = _run_find(tmp_path / "arc2face", hub.endpoint, download=False)
    assert result.returncode != 0
    assert "WeightsNotFoundError" in result.stderr and "download switch" in result.stderr
    assert hub.file_requests() == []


def test_a_failed_download_is_a_clear_error(tmp_path):
    with FakeHub("FoivosPar/Arc2Face", {}).running() as empty_hub:
        result = _run_find(tmp_path / "arc2face", empty_hub.endpoint, download=True)
    assert result.returncode != 0
    assert "Downloading encoder/config.json from https://huggingface.co/FoivosPar/Arc2Face" in result.stderr
    assert "failed" in result.stderr
