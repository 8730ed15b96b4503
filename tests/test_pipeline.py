"""The headless pipeline (arc2face_core.diffusers_backend.pipeline) and its CLI (python -m arc2face_core), on tiny
random models.

Independent routes:
* the denoising loop and decode against diffusers' own ``StableDiffusionPipeline``, built in memory from the same
  UNet and VAE with a scheduler made the reference's way (``DPMSolverMultistepScheduler.from_config`` of a
  ``PNDMScheduler``'s config), fed the same conditioning and initial latents;
* the strict UNet loader against diffusers' ``from_pretrained`` of the same folder;
* the noise against a plain ``torch.randn`` with the documented generator;
* the CLI's files against the in-process API and against the face analyzer run directly.
The tiny VAE scales by 2 (not 8) and the tiny UNet downsamples by 2, so 64x64 images use 32x32 latents.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from arc2face_core.cli.main import main as cli_main
from arc2face_core.diffusers_backend.model_files import SD15_VAE_CONFIG, load_unet, load_vae
from arc2face_core.diffusers_backend.pipeline import Arc2FacePipeline, initial_noise, make_scheduler
from arc2face_core.errors import CorruptWeightsError, InvalidInputError, WeightsNotFoundError, WrongModelError
from arc2face_core.identity.embeddings import random_identities
from arc2face_core.weights import ModelRoots
from builders.tiny_diffusers import (
    SD15_SCHEDULER_CONFIG,
    TINY_VAE_CONFIG,
    write_tiny_unet,
    write_tiny_vae_file,
    write_tiny_vae_ldm_file,
)
from fixtures_faces import write_face_models
from fixtures_models import link_or_copy

diffusers = pytest.importorskip("diffusers")

# diffusers' DPM-Solver hands numpy a torch tensor (numpy 2 deprecation, not this pack's code).
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")

REPO = Path(__file__).resolve().parents[1]
SIZE, STEPS = 64, 3     # 3 steps: DPM-Solver++ runs a first-order, a second-order and a final first-order step


def run_reference(pipe: Arc2FacePipeline, embeds, k, noise, steps, guidance, output_type="np"):
    """diffusers' StableDiffusionPipeline on the same parts: no hub, no text encoder (embeddings passed in)."""
    from diffusers import DPMSolverMultistepScheduler, PNDMScheduler, StableDiffusionPipeline

    scheduler = DPMSolverMultistepScheduler.from_config(PNDMScheduler.from_config(SD15_SCHEDULER_CONFIG).config)
    sd = StableDiffusionPipeline(vae=pipe.vae, text_encoder=None, tokenizer=None, unet=pipe.unet, scheduler=scheduler,
                                 safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    sd.set_progress_bar_config(disable=True)
    positive, _ = pipe.encoder.encode(embeds)
    negative, _ = pipe.encoder.encode_empty()
    return sd(prompt_embeds=positive, negative_prompt_embeds=negative.expand(positive.shape[0], -1, -1),
              num_images_per_prompt=k, latents=noise.clone(), num_inference_steps=steps, guidance_scale=guidance,
              height=SIZE, width=SIZE, output_type=output_type).images


# ------------------------------------------------------------------------------------------ sampling loop


@pytest.mark.parametrize("guidance", [3.0, 1.0])
def test_images_equal_diffusers_stable_diffusion_pipeline(tiny_pipeline, guidance):
    embeds = random_identities(2, seed=11)
    noise = tiny_pipeline.noise(4, SIZE, SIZE, seed=5)
    ours = tiny_pipeline.generate(embeds, images_per_id=2, steps=STEPS, guidance_scale=guidance, width=SIZE,
                                  height=SIZE, seed=5)
    reference = run_reference(tiny_pipeline, embeds, 2, noise, STEPS, guidance)          # float 0..1, [B,H,W,3]
    latents = tiny_pipeline.denoise(*tiny_pipeline.conditioning(embeds, 2), noise, STEPS, guidance)
    decoded = (tiny_pipeline.decode(latents) / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(decoded, reference, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(ours, (reference * 255).round().astype(np.uint8))
    assert ours.shape == (4, SIZE, SIZE, 3) and ours.dtype == np.uint8
    assert 20 < ours.std() and (ours == 0).mean() < 0.05 and (ours == 255).mean() < 0.05   # a picture, not clipped


def test_cfg_changes_the_result(tiny_pipeline):
    embeds = random_identities(1, seed=12)
    a = tiny_pipeline.generate(embeds, 1, STEPS, 3.0, SIZE, SIZE, seed=1).astype(int)
    b = tiny_pipeline.generate(embeds, 1, STEPS, 1.0, SIZE, SIZE, seed=1).astype(int)
    assert np.abs(a - b).mean() > 1


def test_scheduler_is_the_reference_route():
    from diffusers import DPMSolverMultistepScheduler, PNDMScheduler

    ours = make_scheduler()
    reference = DPMSolverMultistepScheduler.from_config(PNDMScheduler.from_config(SD15_SCHEDULER_CONFIG).config)
    assert dict(ours.config) == dict(reference.config)
    assert ours.config.algorithm_type == "dpmsolver++" and ours.config.solver_order == 2
    assert ours.config.prediction_type == "epsilon" and ours.init_noise_sigma == 1.0
    # SD1.5's scaled_linear betas, computed here from the definition.
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float32) ** 2
    torch.testing.assert_close(ours.alphas_cumprod, torch.cumprod(1 - betas, 0))
    # 25 steps: DPM-Solver's "linspace" spacing of 0..999 (PNDM's own "leading" default is not carried over).
    ours.set_timesteps(25)
    assert ours.timesteps.tolist() == [round(999 - 999 * i / 25) for i in range(25)]
    assert ours.timesteps[:3].tolist() == [999, 959, 919] and ours.timesteps[-1] == 40


def test_vae_config_is_sd15s():
    from diffusers import AutoencoderKL

    from builders.sd15_random import SD15_VAE_CONFIG as WRITTEN_FROM_THE_REPO

    assert SD15_VAE_CONFIG == WRITTEN_FROM_THE_REPO
    with torch.device("meta"):
        vae = AutoencoderKL.from_config(SD15_VAE_CONFIG)
    assert vae.config.scaling_factor == 0.18215 and 2 ** (len(vae.config.block_out_channels) - 1) == 8


# ------------------------------------------------------------------------------------- batches and noise


def test_noise_is_the_documented_draw(tiny_pipeline):
    expected = torch.randn((6, 4, SIZE // 2, SIZE // 2), generator=torch.Generator().manual_seed(123))
    assert torch.equal(tiny_pipeline.noise(6, SIZE, SIZE, seed=123), expected)
    assert torch.equal(initial_noise(6, 4, 32, 32, 123), expected)
    assert tiny_pipeline.latent_size(SIZE, 2 * SIZE) == (SIZE, SIZE // 2)    # (h, w), VAE factor 2


def test_rows_are_grouped_by_identity(tiny_pipeline):
    embeds = random_identities(2, seed=21)
    both = tiny_pipeline.generate(embeds, images_per_id=2, steps=STEPS, width=SIZE, height=SIZE, seed=3)
    noise = tiny_pipeline.noise(4, SIZE, SIZE, seed=3)       # rows i*2+j: image j of identity i
    for i in range(2):
        alone = tiny_pipeline.generate(embeds[i:i + 1], images_per_id=2, steps=STEPS, width=SIZE, height=SIZE,
                                       noise=noise[2 * i:2 * i + 2])
        assert np.abs(alone.astype(int) - both[2 * i:2 * i + 2].astype(int)).max() <= 1
    diff = lambda a, b: np.abs(both[a].astype(int) - both[b].astype(int)).mean()   # noqa: E731
    assert diff(0, 1) > 1 and diff(0, 2) > 1      # other noise, other identity: other images


def test_seed_reproducibility_and_progress(tiny_pipeline):
    embeds = random_identities(1, seed=31)
    calls = []
    a = tiny_pipeline.generate(embeds, 1, STEPS, width=SIZE, height=SIZE, seed=7, progress=lambda *c: calls.append(c))
    b = tiny_pipeline.generate(embeds, 1, STEPS, width=SIZE, height=SIZE, seed=7)
    c = tiny_pipeline.generate(embeds, 1, STEPS, width=SIZE, height=SIZE, seed=8)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 1
    assert calls == [(1, STEPS), (2, STEPS), (3, STEPS)]


@pytest.mark.parametrize("kwargs, message", [
    ({"width": 60}, "width must be a positive multiple of 8"),
    ({"height": 0}, "height must be a positive multiple of 8"),
    ({"embeds": torch.empty(0, 512)}, "empty batch"),
    ({"embeds": torch.full((1, 512), float("nan"))}, "NaN"),
    ({"embeds": torch.randn(1, 77, 768)}, "CONDITIONING"),
    ({"images_per_id": 0}, "images_per_id must be a whole number of at least 1"),
    ({"steps": 0}, "steps must be a whole number of at least 1"),
    ({"seed": -1}, "seed must be an integer"),
    ({"guidance_scale": float("inf")}, "guidance_scale must be a finite number"),
    ({"noise": torch.zeros(1, 4, 8, 8)}, r"noise must be a finite float tensor of shape \[2, 4, 32, 32\]"),
])
def test_bad_inputs_are_refused(tiny_pipeline, kwargs, message):
    args = {"embeds": random_identities(1, seed=0), "images_per_id": 2, "steps": 1, "width": SIZE, "height": SIZE}
    args.update(kwargs)
    with pytest.raises(InvalidInputError, match=message):
        tiny_pipeline.generate(**args)


# ------------------------------------------------------------------------------------------------ loading


def test_strict_unet_loader_equals_diffusers_from_pretrained(tiny_arc2face_root):
    from diffusers import UNet2DConditionModel

    ours = load_unet(tiny_arc2face_root / "arc2face" / "diffusion_pytorch_model.safetensors")
    theirs = UNet2DConditionModel.from_pretrained(tiny_arc2face_root / "arc2face", low_cpu_mem_usage=False,
                                                  local_files_only=True)
    strip = lambda config: {k: v for k, v in config.items() if k != "_name_or_path"}   # noqa: E731
    assert strip(ours.config) == strip(theirs.config)
    mine, other = ours.state_dict(), theirs.state_dict()
    assert mine.keys() == other.keys()
    assert all(torch.equal(mine[k], other[k]) for k in mine)


def test_missing_unet_names_the_file(tmp_path, tiny_vae_folder, encoder_root):
    link_or_copy(encoder_root / "encoder", tmp_path / "encoder")
    with pytest.raises(WeightsNotFoundError, match="arc2face/diffusion_pytorch_model.safetensors"):
        Arc2FacePipeline.load(ModelRoots(arc2face=[tmp_path]), tiny_vae_folder)


def test_missing_unet_config_is_reported(tmp_path):
    weights = write_tiny_unet(tmp_path)
    (weights.parent / "config.json").unlink()
    with pytest.raises(WeightsNotFoundError, match=r"arc2face/config\.json is missing"):
        load_unet(weights)


def test_a_missing_unet_tensor_is_an_error_not_a_random_weight(tmp_path):
    from diffusers import UNet2DConditionModel

    weights = write_tiny_unet(tmp_path)
    sd = load_file(weights)
    del sd["conv_norm_out.weight"]
    save_file(sd, str(weights))
    with pytest.raises(CorruptWeightsError, match=r"diffusion_pytorch_model\.safetensors does not match.*missing 1 "
                                                  r"tensors \['conv_norm_out\.weight'\]"):
        load_unet(weights)
    # The pitfall this guards against: diffusers' own loader accepts the file and leaves the tensor random.
    _, info = UNet2DConditionModel.from_pretrained(weights.parent, low_cpu_mem_usage=False, local_files_only=True,
                                                   output_loading_info=True)
    assert info["missing_keys"] == ["conv_norm_out.weight"]


def test_nan_or_inf_in_the_unet_is_refused_with_file_and_tensor(tmp_path):
    """The check runs on after load_unet returns (beside the other models' loading); the first forward call waits
    for it, so nothing is ever computed from the corrupt weights, and every later call is refused too."""
    from arc2face_core.diffusers_backend.model_files import wait_for_weight_check

    weights = write_tiny_unet(tmp_path)
    clean = load_file(weights)
    named = (r"arc2face/diffusion_pytorch_model\.safetensors: tensor 'mid_block\.resnets\.0\.conv1\.weight' "
             r"contains NaN")
    for poison in (float("nan"), -float("inf")):
        sd = {k: v.clone() for k, v in clean.items()}
        sd["mid_block.resnets.0.conv1.weight"][3, 2, 1, 0] = poison
        save_file(sd, str(weights))
        unet = load_unet(weights)
        sample, context = torch.zeros(1, 4, 8, 8), torch.zeros(1, 77, unet.config.cross_attention_dim)
        for _ in range(2):
            with pytest.raises(CorruptWeightsError, match=named):
                unet(sample, 10, context)
        with pytest.raises(CorruptWeightsError, match=named):
            wait_for_weight_check(unet)


def test_a_clean_unet_is_checked_once_then_runs_without_the_hook(tmp_path):
    from arc2face_core.diffusers_backend.model_files import wait_for_weight_check

    unet = load_unet(write_tiny_unet(tmp_path))
    assert len(unet._forward_pre_hooks) == 1                 # the pending check
    sample, context = torch.randn(1, 4, 8, 8), torch.randn(1, 77, unet.config.cross_attention_dim)
    first = unet(sample, 10, context).sample
    assert len(unet._forward_pre_hooks) == 0                 # settled by the first call, then gone
    torch.testing.assert_close(unet(sample, 10, context).sample, first, atol=0, rtol=0)
    wait_for_weight_check(unet)                              # nothing pending: a no-op


def test_a_broken_unet_file_is_reported_before_a_broken_config(tmp_path):
    """The file is read in the background while the config builds the model: when both are broken, the file's
    error is the one reported, as when the file was read first."""
    weights = write_tiny_unet(tmp_path)
    config = weights.with_name("config.json")
    config.write_text(config.read_text().replace('"CrossAttnDownBlock2D"', '"NoSuchBlock2D"'))
    with pytest.raises(CorruptWeightsError, match=r"config\.json is not a valid UNet2DConditionModel config"):
        load_unet(weights)
    weights.write_bytes(weights.read_bytes()[:5000])
    with pytest.raises(CorruptWeightsError, match=r"diffusion_pytorch_model\.safetensors is not a readable "
                                                  r"safetensors file"):
        load_unet(weights)


def test_single_file_vae_equals_the_folder(tiny_pipeline, tiny_vae_folder, tiny_vae_file, tmp_path):
    legacy = write_tiny_vae_file(tmp_path / "legacy.safetensors", seed=1, legacy_attention_names=True)
    assert any(".query." in k for k in load_file(legacy))
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    folder = load_vae(tiny_vae_folder).decode(latents).sample
    for path in (tiny_vae_file, legacy):
        torch.testing.assert_close(load_vae(path, config=TINY_VAE_CONFIG).decode(latents).sample, folder,
                                   atol=0, rtol=0)


def test_a_decoder_only_vae_decodes_the_same_and_never_reads_the_encoder(tiny_vae_folder, tmp_path,
                                                                         tiny_arc2face_root):
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    whole = load_vae(tiny_vae_folder)
    half = load_vae(tiny_vae_folder, encoder=False)
    assert half.encoder is None and half.quant_conv is None
    assert not any(k.startswith(("encoder.", "quant_conv.")) for k in half.state_dict())
    assert half.state_dict().keys() == {k for k in whole.state_dict() if not k.startswith(("encoder.", "quant_conv."))}
    torch.testing.assert_close(half.decode(latents).sample, whole.decode(latents).sample, atol=0, rtol=0)
    folder = tmp_path / "vae"                              # a NaN in the encoder half: never read, so never refused
    folder.mkdir()
    (folder / "config.json").write_text((tiny_vae_folder / "config.json").read_text())
    sd = load_file(tiny_vae_folder / "diffusion_pytorch_model.safetensors")
    sd["encoder.conv_in.weight"][0, 0, 0, 0] = float("nan")
    save_file(sd, str(folder / "diffusion_pytorch_model.safetensors"))
    load_vae(folder, encoder=False)
    with pytest.raises(CorruptWeightsError, match=r"encoder\.conv_in\.weight.*NaN"):
        load_vae(folder)
    pipeline = Arc2FacePipeline.load(ModelRoots(arc2face=[tiny_arc2face_root]), tiny_vae_folder, vae_encoder=False)
    with pytest.raises(InvalidInputError, match=r"loaded without the VAE's encoder \(vae_encoder=False\)"):
        pipeline.encode_images(np.zeros((1, 16, 16, 3), np.uint8))


def test_vae_errors_name_the_file(tmp_path, tiny_vae_file):
    with pytest.raises(WeightsNotFoundError, match=r"nowhere\.safetensors does not exist.*stable-diffusion-v1-5"):
        load_vae(tmp_path / "nowhere.safetensors")
    # The tiny file read as SD1.5's VAE (the CLI's default config): wrong shapes and missing tensors.
    with pytest.raises(CorruptWeightsError, match=r"tiny_vae\.safetensors does not match the AutoencoderKL"):
        load_vae(tiny_vae_file)
    # An LDM-layout file (converted on load) with a tensor missing: still strict, still named.
    ldm = load_file(write_tiny_vae_ldm_file(tmp_path / "ldm.safetensors"))
    del ldm["decoder.up.0.block.1.conv2.weight"]   # LDM's up.0 is diffusers' last up block
    save_file(ldm, str(tmp_path / "ldm.safetensors"))
    with pytest.raises(CorruptWeightsError, match=r"ldm\.safetensors does not match.*missing 1 tensors "
                                                  r"\['decoder\.up_blocks\.1\.resnets\.1\.conv2\.weight'\]"):
        load_vae(tmp_path / "ldm.safetensors", config=TINY_VAE_CONFIG)
    (tmp_path / "cut.safetensors").write_bytes(tiny_vae_file.read_bytes()[:1000])
    with pytest.raises(CorruptWeightsError, match=r"cut\.safetensors is not a readable safetensors file"):
        load_vae(tmp_path / "cut.safetensors", config=TINY_VAE_CONFIG)
    folder = tmp_path / "empty_vae"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TINY_VAE_CONFIG))
    with pytest.raises(WeightsNotFoundError, match=r"empty_vae/diffusion_pytorch_model\.safetensors is missing"):
        load_vae(folder)
    with pytest.raises(WrongModelError, match="scaling factor 0.13025"):
        load_vae(tiny_vae_file, config=dict(TINY_VAE_CONFIG, scaling_factor=0.13025))   # SDXL's VAE


# ------------------------------------------------------------------------------------------------ the CLI


@pytest.fixture(scope="module")
def cli_models(tmp_path_factory, astronaut_scene, tiny_arc2face_root, tiny_vae_folder):
    """A ComfyUI-style models folder with the tiny Arc2Face models, the rigged face models and an SD1.5-style VAE
    path (the tiny VAE folder), plus the astronaut and a black photo."""
    base = tmp_path_factory.mktemp("cli")
    models = base / "models"
    write_face_models(models, astronaut_scene)
    for part in ("encoder", "arc2face"):
        link_or_copy(tiny_arc2face_root / part, models / "arc2face" / part)
    Image.fromarray(astronaut_scene.image).save(base / "astronaut.png")
    Image.fromarray(np.zeros_like(astronaut_scene.image)).save(base / "black.png")
    return base


def cli_command(base: Path, vae: Path, out: str | Path, *extra: str) -> list[str]:
    """The CLI on the models under ``base``, writing to ``base / out`` (or to ``out`` when it is absolute)."""
    return [sys.executable, "-m", "arc2face_core", "--models", str(base / "models"), "--vae", str(vae), "--steps", "2",
            "--width", "64", "--height", "64", "--images-per-id", "2", "--out", str(base / out), "--device", "cpu",
            *extra]


@pytest.fixture(scope="module")
def cli_runs(cli_models, tiny_vae_folder) -> dict[str, subprocess.CompletedProcess]:
    """Three ``python -m arc2face_core`` runs, started together: each spends seconds importing torch and diffusers."""
    commands = {
        "photo": cli_command(cli_models, tiny_vae_folder, "photo", "--image", str(cli_models / "astronaut.png")),
        "black": cli_command(cli_models, tiny_vae_folder, "black", "--image", str(cli_models / "black.png")),
        "random": cli_command(cli_models, tiny_vae_folder, "random", "--random-identities", "3", "--seed", "4",
                              "--ids-per-batch", "2"),
    }
    # One torch thread each: three processes share the CPU cores.
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    started = {name: subprocess.Popen(cmd, cwd=cli_models, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True) for name, cmd in commands.items()}
    results = {}
    for name, process in started.items():
        stdout, stderr = process.communicate(timeout=180)
        results[name] = subprocess.CompletedProcess(commands[name], process.returncode, stdout, stderr)
    return results


def in_process_args(base: Path, vae: Path, out: str | Path, *extra: str) -> list[str]:
    return cli_command(base, vae, out, *extra)[3:]


def read_pngs(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))}


def test_cli_from_a_photo(cli_models, cli_runs, tiny_pipeline, face_analyzer, astronaut_scene):
    result = cli_runs["photo"]
    assert result.returncode == 0, result.stderr
    out = cli_models / "photo"
    pngs = read_pngs(out)
    assert list(pngs) == ["id000_00.png", "id000_01.png"]
    assert all(image.shape == (64, 64, 3) for image in pngs.values())
    saved = torch.load(out / "embeddings.pt", weights_only=True)
    direct = face_analyzer.embed([np.ascontiguousarray(astronaut_scene.image[..., ::-1])]).embeds
    torch.testing.assert_close(saved, direct, atol=1e-6, rtol=0)
    expected = tiny_pipeline.generate(direct, 2, steps=2, width=64, height=64, seed=0)
    for got, want in zip(pngs.values(), expected):
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    settings = json.loads((out / "settings.json").read_text())
    assert settings["identities"]["source"] == "images" and settings["seed"] == 0 and settings["steps"] == 2
    assert settings["images"] == list(pngs)


def test_cli_average_of_photos(cli_models, tiny_vae_folder, face_analyzer, astronaut_scene, tmp_path):
    photo, mirrored = str(cli_models / "astronaut.png"), tmp_path / "mirrored.png"
    Image.fromarray(np.ascontiguousarray(astronaut_scene.image[:, ::-1])).save(mirrored)   # a second, other photo
    out = tmp_path / "average"   # this test's own folder: it can run again in the same session
    args = in_process_args(cli_models, tiny_vae_folder, out, "--image", photo, "--image", str(mirrored),
                           "--average", "-q")
    # The rigged detector reports the same box in both photos; the mirrored crop gives another embedding.
    assert cli_main(args) == 0
    both = face_analyzer.embed([np.ascontiguousarray(im[..., ::-1]) for im in
                                (astronaut_scene.image, np.ascontiguousarray(astronaut_scene.image[:, ::-1]))]).embeds
    assert (both[0] - both[1]).norm() > 0.1
    mean = both.mean(dim=0, keepdim=True)
    saved = torch.load(out / "embeddings.pt", weights_only=True)
    torch.testing.assert_close(saved, mean / mean.norm(), atol=1e-6, rtol=0)
    assert len(read_pngs(out)) == 2


def test_cli_black_photo_is_a_clear_error(cli_models, cli_runs):
    result = cli_runs["black"]
    assert result.returncode == 2
    assert "black.png: No face found in image" in result.stderr and "Traceback" not in result.stderr
    assert not (cli_models / "black").exists()


def test_cli_random_identities_and_rerun_from_embeddings(cli_models, cli_runs, tiny_vae_folder, capsys, tmp_path):
    result = cli_runs["random"]
    assert result.returncode == 0, result.stderr
    # said before the slow part: the device and dtype (a CPU torch is easy to miss), then progress with time left
    assert "arc2face: generating on cpu in float32 (a CPU-only build of torch" in result.stderr, result.stderr
    assert "'Running on a GPU'" in result.stderr
    assert re.search(r"6 images \[#{20}\] 4/4 steps  [\d.]+ steps/s  elapsed [\d:]+  ETA 0:00", result.stderr), \
        result.stderr                                          # 2 batches (2 + 1 identities) x 2 steps
    out = cli_models / "random"
    pngs = read_pngs(out)
    assert list(pngs) == [f"id{i:03d}_{j:02d}.png" for i in range(3) for j in range(2)]
    saved = torch.load(out / "embeddings.pt", weights_only=True)
    assert torch.equal(saved, random_identities(3, seed=4))    # --identity-seed defaults to --seed

    # Same identities from the saved file, one identity per batch (the default): the same images.
    rerun = in_process_args(cli_models, tiny_vae_folder, tmp_path / "rerun", "--embeddings",
                            str(out / "embeddings.pt"), "--seed", "4")
    assert cli_main(rerun + ["-q"]) == 0
    for name, image in read_pngs(tmp_path / "rerun").items():
        assert np.abs(image.astype(int) - pngs[name].astype(int)).max() <= 1
    # A second run into the same folder refuses to overwrite without --overwrite.
    assert cli_main(rerun + ["-q"]) == 2
    assert "already holds" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["clean", "missing tensor"])
def test_a_process_that_exits_right_after_loading_exits_cleanly(tmp_path, case):
    """The check that outlives load_unet (or the one a failed load leaves) is finished before the interpreter exits:
    no hang, and no abort from a thread still reading the mapped file."""
    weights = write_tiny_unet(tmp_path)
    if case == "missing tensor":
        sd = load_file(weights)
        del sd["conv_norm_out.weight"]
        save_file(sd, str(weights))
    script = ("import sys\nfrom arc2face_core.diffusers_backend.model_files import load_unet\n"
              "try:\n    load_unet(sys.argv[1])\nexcept Exception as exc:\n    print(type(exc).__name__)\n")
    done = subprocess.run([sys.executable, "-c", script, str(weights)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "terminate called" not in done.stderr
    assert done.stdout.strip() == ("CorruptWeightsError" if case == "missing tensor" else "")
