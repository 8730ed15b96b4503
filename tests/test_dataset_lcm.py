"""``dataset --scheduler lcm --lora FILE``: the LCM speed mode in datasets, on tiny models.

Independent route: every image is made again by the ``generate`` subcommand alone (one identity from a file, one
image, the manifest row's seed, the same LoRA and LCM settings), whose LCM path test_lcm holds to diffusers' own
``LCMScheduler`` pipeline; dataset and generate must agree bit for bit (both a batch of one on one thread). That
checks the per-image seed scheme's extension to LCM's per-step noise: an image drawing other noise between steps
would differ. Then crops, the identity check's redraws, shards and a resume together, in LCM mode.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_datasets import (  # noqa: F401  (models: shared fixture)
    THREADS,
    files_of,
    manifest,
    models,
    pixels,
    run,
    run_killed_before_the_record,
)

from arc2face_core.cli.main import main as cli_main
from arc2face_core.diffusers_backend.model_files import load_unet
from arc2face_core.identity.files import load_embeddings, save_embeddings
from builders.lora import lora_targets, write_lora

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning",
                                        "ignore:`estimate` is deprecated:FutureWarning")

SIZE, STEPS = 32, 4
BASE = ("--identities", "4", "--images-per-id", "1", "--ids-per-batch", "1", "--seed", "9")


@pytest.fixture(scope="module")
def lcm_lora(tmp_path_factory, tiny_arc2face_root):
    unet = load_unet(tiny_arc2face_root / "arc2face" / "diffusion_pytorch_model.safetensors")
    return write_lora(tmp_path_factory.mktemp("lcm_lora") / "lcm.safetensors", lora_targets(unet), rank=4,
                      alpha=8.0, seed=3, layout="kohya", gain=0.5)


def lcm_args(lora) -> tuple[str, ...]:
    return ("--scheduler", "lcm", "--lora", str(lora), "--steps", str(STEPS), "--cfg", "1.0")


@pytest.fixture(scope="module")
def plain(models, tiny_vae_folder, lcm_lora, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("lcm_plain") / "faces"
    assert run(models, tiny_vae_folder, out, *BASE, *lcm_args(lcm_lora)) == 0
    return out


def generated_alone(models_dir, vae, lora, dataset, row, tmp_path) -> np.ndarray:
    """Image ``row`` of ``dataset`` made by ``generate`` from the row alone."""
    identity = load_embeddings(dataset / "identities.safetensors")[0][row["identity"]:row["identity"] + 1]
    key = f"{row['identity']}_{row['image']}_{row['attempt']}"
    save_embeddings(tmp_path / f"{key}.safetensors", identity, {"made_by": "a test"})
    out = tmp_path / f"generate_{key}"
    torch.set_num_threads(1)
    try:
        assert cli_main(["generate", "--models", str(models_dir), "--vae", str(vae), "--embeddings",
                         str(tmp_path / f"{key}.safetensors"), "--images-per-id", "1", "--seed", str(row["seed"]),
                         "--width", str(SIZE), "--height", str(SIZE), "--device", "cpu", "--out", str(out), "-q",
                         *lcm_args(lora)]) == 0
    finally:
        torch.set_num_threads(THREADS)
    return pixels(out / "id000_00.png")


def test_lcm_dataset_images_equal_generates_lcm_path(plain, models, tiny_vae_folder, lcm_lora, tmp_path):  # noqa: F811
    rows = manifest(plain)
    assert len(rows) == 4 and all(r["mode"] == "lcm" and r["attempt"] == 0 for r in rows)
    for row in rows:
        assert np.array_equal(pixels(plain / row["file"]),
                              generated_alone(models, tiny_vae_folder, lcm_lora, plain, row, tmp_path)), row
    record = json.loads((plain / "dataset.json").read_text())
    assert record["mode"] == "lcm"
    settings = record["settings"]
    assert settings["sampling"] == {"scheduler": "lcm", "lora_strength": 1.0}
    assert settings["steps"] == STEPS and settings["guidance_scale"] == 1.0
    assert settings["files"]["lora"] == {"file": "lcm.safetensors", "bytes": lcm_lora.stat().st_size}
    images = [pixels(plain / r["file"]).astype(int) for r in rows]
    assert np.abs(images[0] - images[1]).mean() > 1


@pytest.fixture(scope="module")
def recipe(plain, lcm_lora) -> tuple[str, ...]:
    """Crops and a --min-similarity that half the first tries fail (the plain run's median score)."""
    threshold = float(np.median([r["similarity"] for r in manifest(plain)]))
    return (*BASE, *lcm_args(lcm_lora), "--crop", "arcface", "--min-similarity", str(threshold), "--max-attempts",
            "3")


@pytest.fixture(scope="module")
def whole(models, tiny_vae_folder, recipe, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("lcm_whole") / "faces"
    assert run(models, tiny_vae_folder, out, *recipe) == 0
    return out


def test_redrawn_lcm_images_regenerate_from_their_rows(whole, plain, models, tiny_vae_folder, lcm_lora,  # noqa: F811
                                                       tmp_path):
    rows = manifest(whole)
    first = {r["identity"]: r for r in manifest(plain)}
    redrawn = [r for r in rows if r["attempt"] > 0 and not r["dropped"]]
    assert redrawn, "no image was redrawn: the threshold does not exercise the redraw path"
    for row in rows:
        assert row["tries"][0] == first[row["identity"]]["similarity"]     # attempt 0 is the plain run's image
        if row["dropped"]:
            assert row["crop"] is None and row["file"] is None
        else:
            assert (whole / row["crop"]).is_file()
    for row in redrawn:
        assert np.array_equal(pixels(whole / row["file"]),
                              generated_alone(models, tiny_vae_folder, lcm_lora, whole, row, tmp_path)), row


def test_lcm_with_crops_resumes_after_a_half_written_batch(whole, models, tiny_vae_folder, recipe, tmp_path,  # noqa: F811
                                                           monkeypatch):
    out = tmp_path / "faces"
    run_killed_before_the_record(monkeypatch, models, tiny_vae_folder, out, recipe, 2,
                                 "arcface112/00002/.000.png.tmp-host-1")
    assert run(models, tiny_vae_folder, out, *recipe) == 0
    assert files_of(out) == files_of(whole)
    assert not any(".tmp-" in p.name for p in out.rglob("*"))


def test_lcm_with_crops_in_shards_equals_one_run(whole, models, tiny_vae_folder, recipe, tmp_path):  # noqa: F811
    out = tmp_path / "faces"
    for shard in ("1/2", "0/2"):
        assert run(models, tiny_vae_folder, out, *recipe, "--shard", shard) == 0
    assert files_of(out) == files_of(whole)


@pytest.mark.parametrize("extra, message", [
    (("--scheduler", "lcm", "--steps", "60"), "steps must be 1 to 50 with the lcm scheduler"),
    (("--lora-strength", "0.5"), "--lora-strength needs a LoRA"),
    (("--lora", "nowhere.safetensors"), "LoRA file not found: nowhere.safetensors"),
])
def test_lcm_misuse_is_refused(models, tiny_vae_folder, tmp_path, capsys, extra, message):  # noqa: F811
    assert run(models, tiny_vae_folder, tmp_path / "out", "--identities", "1", *extra) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / "dataset.json").exists()
