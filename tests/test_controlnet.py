"""The pose ControlNet in the headless pipeline (arc2face_core.diffusers_backend.controlnet) and the CLI, on tiny
random models.

Independent routes:
* sampling with a hint against diffusers' own ``StableDiffusionControlNetPipeline`` (the reference's pipeline), built
  in memory from the same UNet, VAE and ControlNet with a scheduler made the reference's way, fed the same
  conditioning, initial latents and hint image; at several scales and control ranges, with and without CFG;
* the strict ControlNet loader against diffusers' ``ControlNetModel.from_pretrained`` of the same folder;
* per-identity hints against each identity run alone with its own hint and noise slice;
* the control range rule against steps listed by hand;
* the CLI's images against the in-process API.
Every tensor of the tiny ControlNet is random, its zero convolutions included (a trained one's are not zero), so the
hint changes the images. The tiny VAE and UNet scale by 2: 32x32 images use 16x16 latents.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from arc2face_core.cli.main import main as cli_main
from arc2face_core.diffusers_backend.controlnet import control_active, control_image, find_controlnet, load_controlnet
from arc2face_core.diffusers_backend.model_files import load_unet, load_vae
from arc2face_core.diffusers_backend.pipeline import Arc2FacePipeline
from arc2face_core.errors import CorruptWeightsError, InvalidInputError, WeightsNotFoundError, WrongModelError
from arc2face_core.identity.embeddings import random_identities
from arc2face_core.pose.hint import prepare_normal_map
from arc2face_core.weights import ModelRoots
from builders.tiny_diffusers import SD15_SCHEDULER_CONFIG, TINY_CONTROLNET_CONFIG, write_tiny_controlnet
from fixtures_models import link_or_copy

diffusers = pytest.importorskip("diffusers")

# diffusers' DPM-Solver hands numpy a torch tensor (numpy 2 deprecation, not this pack's code).
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")

REPO = Path(__file__).resolve().parents[1]
SIZE, STEPS = 32, 3     # 32x32 images, 16x16 latents: the tiny UNet's attention over 256 cells, not 1024
BACKGROUND = 0.5        # the training hints' background: a zero normal encoded as n * 0.5 + 0.5


def sphere_normals(size: int, centre: tuple[float, float] = (0.0, 0.0), radius: float = 0.8) -> torch.Tensor:
    """A sphere's normals as RGB (n*0.5+0.5) on mid-grey, centred at ``centre`` (x right, y up, -1..1): [1,s,s,3]."""
    ys, xs = torch.meshgrid(torch.linspace(1, -1, size), torch.linspace(-1, 1, size), indexing="ij")
    x, y = (xs - centre[0]) / radius, (ys - centre[1]) / radius
    r2 = x ** 2 + y ** 2
    n = torch.stack([x, y, torch.sqrt((1 - r2).clamp(min=0))], dim=-1)
    return torch.where((r2 < 1)[..., None], n * 0.5 + 0.5, torch.full_like(n, BACKGROUND)).unsqueeze(0)


def run_reference(pipe: Arc2FacePipeline, embeds, k, noise, hint, guidance=3.0, scale=1.0, start=0.0, end=1.0):
    """diffusers' StableDiffusionControlNetPipeline on the same parts: no hub, no text encoder (embeddings passed in),
    the hint as a [B, 3, H, W] tensor in 0..1 (what its image processor makes of the reference's PIL image)."""
    from diffusers import DPMSolverMultistepScheduler, PNDMScheduler, StableDiffusionControlNetPipeline

    scheduler = DPMSolverMultistepScheduler.from_config(PNDMScheduler.from_config(SD15_SCHEDULER_CONFIG).config)
    sd = StableDiffusionControlNetPipeline(vae=pipe.vae, text_encoder=None, tokenizer=None, unet=pipe.unet,
                                           controlnet=pipe.controlnet, scheduler=scheduler, safety_checker=None,
                                           feature_extractor=None, requires_safety_checker=False)
    sd.set_progress_bar_config(disable=True)
    positive, _ = pipe.encoder.encode(embeds)
    negative, _ = pipe.encoder.encode_empty()
    return sd(prompt_embeds=positive, negative_prompt_embeds=negative.expand(positive.shape[0], -1, -1),
              image=hint.movedim(-1, 1).clone(), num_images_per_prompt=k, latents=noise.clone(),
              num_inference_steps=STEPS, guidance_scale=guidance, height=SIZE, width=SIZE,
              controlnet_conditioning_scale=scale, control_guidance_start=start, control_guidance_end=end,
              output_type="np").images


def to_uint8(unit: np.ndarray) -> np.ndarray:
    return (unit * 255).round().astype(np.uint8)


def differ(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(int) - b.astype(int)).mean())


# ------------------------------------------------------------------------------------------ sampling loop


@pytest.mark.parametrize("guidance, scale, start, end", [
    (3.0, 1.0, 0.0, 1.0),    # the reference's settings
    (3.0, 0.5, 0.0, 1.0),
    (3.0, 1.0, 0.0, 0.5),    # 3 steps: step 0 only (1/3 <= 0.5 < 2/3)
    (1.0, 0.5, 0.3, 1.0),    # no CFG (the positive alone); steps 1 and 2 (0/3 < 0.3 <= 1/3)
])
def test_images_equal_diffusers_controlnet_pipeline(tiny_control_pipeline, guidance, scale, start, end):
    """Two identities x two images, one hint per identity: diffusers pairs hint i with prompt i's images itself."""
    pipe = tiny_control_pipeline
    embeds = random_identities(2, seed=11)
    hint = torch.cat([sphere_normals(SIZE, (-0.2, 0.1)), sphere_normals(SIZE, (0.3, -0.2), radius=0.6)])
    noise = pipe.noise(4, SIZE, SIZE, seed=5)
    reference = run_reference(pipe, embeds, 2, noise, hint, guidance, scale, start, end)   # float 0..1, [B,H,W,3]
    latents = pipe.denoise(*pipe.conditioning(embeds, 2), noise, STEPS, guidance,
                           control=control_image(hint, 2, 2, SIZE, SIZE), control_scale=scale, control_start=start,
                           control_end=end)
    decoded = (pipe.decode(latents) / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(decoded, reference, atol=1e-6, rtol=0)
    # The whole API: seeded noise, hint checks and pairing, uint8 out of generate.
    ours = pipe.generate(embeds, images_per_id=2, steps=STEPS, guidance_scale=guidance, width=SIZE, height=SIZE,
                         seed=5, hint=hint, control_scale=scale, control_start=start, control_end=end)
    np.testing.assert_array_equal(ours, to_uint8(reference))
    assert 20 < ours.std()    # a picture


def test_the_hint_changes_the_images_and_scale_zero_is_no_hint(tiny_control_pipeline, tiny_pipeline):
    embeds = random_identities(1, seed=12)
    hint = sphere_normals(512, (0.1, 0.0))
    common = dict(images_per_id=2, steps=STEPS, width=SIZE, height=SIZE, seed=2)
    plain = tiny_pipeline.generate(embeds, **common)
    np.testing.assert_array_equal(tiny_control_pipeline.generate(embeds, **common), plain)   # loaded, not used
    full = tiny_control_pipeline.generate(embeds, **common, hint=hint)
    half = tiny_control_pipeline.generate(embeds, **common, hint=hint, control_scale=0.5)
    early = tiny_control_pipeline.generate(embeds, **common, hint=hint, control_end=0.5)
    zero = tiny_control_pipeline.generate(embeds, **common, hint=hint, control_scale=0.0)
    np.testing.assert_array_equal(zero, plain)
    # Mean differences of whole grey levels; rounding noise between equal computations is far below 0.1.
    assert differ(full, plain) > 2 and differ(half, full) > 0.5 and differ(early, full) > 0.5
    assert differ(early, plain) > 0.5
    other = tiny_control_pipeline.generate(embeds, **common, hint=sphere_normals(512, (-0.4, 0.3), radius=0.5))
    assert differ(other, full) > 1     # another pose, other images


def test_per_identity_hints_pair_with_identities(tiny_control_pipeline):
    """Hints pair with identities, not tiled over the batch (hints change the images: the test above)."""
    pipe = tiny_control_pipeline
    embeds = random_identities(2, seed=21)
    hints = torch.cat([sphere_normals(512, (-0.3, 0.0)), sphere_normals(512, (0.3, 0.2), radius=0.6)])
    common = dict(images_per_id=2, steps=STEPS, width=SIZE, height=SIZE)
    noise = pipe.noise(4, SIZE, SIZE, seed=3)       # rows i*2+j: image j of identity i
    both = pipe.generate(embeds, **common, noise=noise, hint=hints)
    for i in range(2):
        alone = pipe.generate(embeds[i:i + 1], **common, noise=noise[2 * i:2 * i + 2], hint=hints[i:i + 1])
        assert np.abs(alone.astype(int) - both[2 * i:2 * i + 2].astype(int)).max() <= 1


def test_control_image_layout_and_resize():
    hints = torch.cat([sphere_normals(SIZE), sphere_normals(SIZE, (0.2, 0.2))])
    control = control_image(hints, 2, 3, SIZE, SIZE)
    assert control.shape == (6, 3, SIZE, SIZE) and control.dtype == torch.float32
    for row in range(6):    # row i*k + j belongs to identity i: [0, 0, 0, 1, 1, 1]
        assert torch.equal(control[row], hints[row // 3].movedim(-1, 0))
    assert torch.equal(control_image(hints[:1], 2, 3, SIZE, SIZE), hints[:1].movedim(-1, 1).expand(6, -1, -1, -1))
    # Another size is resized (stretched, as diffusers does) with a proper filter: a linear ramp stays that ramp,
    # sampled at the new pixel centres (away from the borders, where the filter is clipped).
    ramp = ((torch.arange(512) + 0.5) / 512).expand(512, 512)
    hint = torch.stack([ramp, ramp.T, torch.full_like(ramp, 0.5)], dim=-1).unsqueeze(0)
    small = control_image(hint, 1, 1, 32, 64)
    centres_x, centres_y = (torch.arange(64) + 0.5) / 64, (torch.arange(32) + 0.5) / 32
    torch.testing.assert_close(small[0, 0, :, 4:-4], centres_x[4:-4].expand(32, -1), atol=1e-5, rtol=0)
    torch.testing.assert_close(small[0, 1, 4:-4, :], centres_y[4:-4, None].expand(-1, 64), atol=1e-5, rtol=0)


def test_control_range_is_diffusers_rule():
    # diffusers' controlnet_keep: step i of n is kept unless i/n < start or (i+1)/n > end. Listed by hand:
    cases = {(4, 0.0, 1.0): [1, 1, 1, 1], (4, 0.0, 0.5): [1, 1, 0, 0], (4, 0.25, 1.0): [0, 1, 1, 1],
             (4, 0.3, 1.0): [0, 0, 1, 1], (4, 0.0, 0.6): [1, 1, 0, 0], (3, 0.0, 0.5): [1, 0, 0],
             (3, 0.5, 1.0): [0, 0, 1], (2, 0.0, 0.4): [0, 0], (25, 0.0, 1.0): [1] * 25}
    for (n, start, end), expected in cases.items():
        assert [int(control_active(i, n, start, end)) for i in range(n)] == expected, (n, start, end)


@pytest.mark.parametrize("kwargs, message", [
    ({"hint": torch.full((3, 512, 512, 3), 0.5)}, "normal_map has a batch of 3 but the conditioning holds 2"),
    ({"hint": torch.full((1, 512, 512, 4), 0.5)}, r"float IMAGE \[B, H, W, 3\]"),
    ({"hint": torch.full((1, 512, 512, 3), 2.0)}, r"values in \[0, 1\]"),
    ({"control_start": 0.5, "control_end": 0.5}, "0 <= start < end <= 1"),
    ({"control_end": 1.5}, "0 <= start < end <= 1"),
    ({"control_scale": float("nan")}, "control_scale must be a finite number"),
    ({"control_start": -0.1}, "control_start must be a finite number >= 0"),
])
def test_bad_control_inputs_are_refused(tiny_control_pipeline, kwargs, message):
    args = {"embeds": random_identities(2, seed=0), "images_per_id": 2, "steps": 1, "width": SIZE, "height": SIZE,
            "hint": torch.full((1, 512, 512, 3), 0.5)}
    args.update(kwargs)
    with pytest.raises(InvalidInputError, match=message):
        tiny_control_pipeline.generate(**args)


def test_a_hint_without_the_controlnet_is_refused(tiny_pipeline):
    with pytest.raises(InvalidInputError, match="load the pipeline with controlnet=True"):
        tiny_pipeline.generate(random_identities(1, seed=0), 1, 1, width=SIZE, height=SIZE,
                               hint=torch.full((1, 512, 512, 3), 0.5))


# ------------------------------------------------------------------------------------------------ loading


def test_strict_loader_equals_diffusers_from_pretrained(tiny_controlnet_root):
    from diffusers import ControlNetModel

    weights, config = find_controlnet([tiny_controlnet_root])
    assert weights == tiny_controlnet_root / "controlnet" / "diffusion_pytorch_model.safetensors"
    assert config == weights.with_name("config.json")
    ours = load_controlnet(weights)
    theirs = ControlNetModel.from_pretrained(tiny_controlnet_root / "controlnet", low_cpu_mem_usage=False,
                                             local_files_only=True)
    strip = lambda config: {k: v for k, v in config.items() if k != "_name_or_path"}   # noqa: E731
    assert strip(ours.config) == strip(theirs.config)
    mine, other = ours.state_dict(), theirs.state_dict()
    assert mine.keys() == other.keys() and all(torch.equal(mine[k], other[k]) for k in mine)
    assert all(v.dtype == torch.float32 for v in mine.values())
    # Trained-like: the zero convolutions hold values.
    assert all(mine[k].abs().max() > 0 for k in mine if k.startswith(("controlnet_down_blocks", "controlnet_mid_block",
                                                                       "controlnet_cond_embedding.conv_out")))


def test_missing_controlnet_names_the_file_and_folders(tmp_path, tiny_vae_folder, tiny_arc2face_root):
    for part in ("encoder", "arc2face"):
        link_or_copy(tiny_arc2face_root / part, tmp_path / part)
    with pytest.raises(WeightsNotFoundError, match=r"(?s)controlnet/diffusion_pytorch_model\.safetensors.*"
                                                   + str(tmp_path)):
        Arc2FacePipeline.load(ModelRoots(arc2face=[tmp_path]), tiny_vae_folder, controlnet=True)
    Arc2FacePipeline.load(ModelRoots(arc2face=[tmp_path]), tiny_vae_folder)    # not asked for: not needed


def test_missing_controlnet_config_is_reported(tmp_path):
    weights = write_tiny_controlnet(tmp_path)
    (weights.parent / "config.json").unlink()
    with pytest.raises(WeightsNotFoundError, match=r"controlnet/config\.json is missing"):
        load_controlnet(weights)


def test_a_wrong_controlnet_tensor_is_an_error_not_a_random_weight(tmp_path):
    weights = write_tiny_controlnet(tmp_path)
    sd = load_file(weights)
    del sd["controlnet_mid_block.weight"]
    save_file(sd, str(weights))
    with pytest.raises(CorruptWeightsError, match=r"controlnet/diffusion_pytorch_model\.safetensors does not match "
                                                  r"the ControlNetModel.*missing 1 tensors "
                                                  r"\['controlnet_mid_block\.weight'\]"):
        load_controlnet(weights)
    sd = load_file(write_tiny_controlnet(tmp_path))
    sd["controlnet_cond_embedding.conv_in.weight"] = torch.zeros(4, 1, 3, 3)
    save_file(sd, str(weights))
    with pytest.raises(CorruptWeightsError, match=r"wrong shape 1 \['controlnet_cond_embedding\.conv_in\.weight'\]"):
        load_controlnet(weights)


@pytest.mark.parametrize("change, message", [
    ({"conditioning_channels": 1}, "1-channel hints"),
    ({"cross_attention_dim": 1024}, "1024-d context tokens"),
    ({"global_pool_conditions": True}, "guess mode"),
])
def test_a_controlnet_for_other_hints_or_tokens_is_the_wrong_model(tmp_path, change, message):
    weights = write_tiny_controlnet(tmp_path, config=dict(TINY_CONTROLNET_CONFIG, **change))
    with pytest.raises(WrongModelError, match=message):
        load_controlnet(weights)


@pytest.mark.parametrize("change, message", [
    ({"block_out_channels": [16, 32], "norm_num_groups": 4}, "block_out_channels is"),
    ({"conditioning_embedding_out_channels": [4, 8, 8]}, "1/4 of the image size but the VAE's latents are 1/2"),
])
def test_a_controlnet_that_does_not_fit_the_unet_is_refused(tmp_path, tiny_arc2face_root, tiny_vae_folder,
                                                            id_encoder, change, message):
    controlnet = load_controlnet(write_tiny_controlnet(tmp_path, config=dict(TINY_CONTROLNET_CONFIG, **change)))
    unet = load_unet(tiny_arc2face_root / "arc2face" / "diffusion_pytorch_model.safetensors")
    with pytest.raises(WrongModelError, match=message):
        Arc2FacePipeline(unet, load_vae(tiny_vae_folder), id_encoder, controlnet=controlnet)


# ------------------------------------------------------------------------------------------------ the CLI


@pytest.fixture(scope="module")
def cli_base(tmp_path_factory, tiny_controlnet_root):
    """A models folder with the tiny encoder, UNet and ControlNet, and two normal-map files: an RGBA sphere on a
    transparent background (512) and an RGB one on black (300)."""
    base = tmp_path_factory.mktemp("cli_pose")
    for part in ("encoder", "arc2face", "controlnet"):
        link_or_copy(tiny_controlnet_root / part, base / "models" / "arc2face" / part)
    sphere = sphere_normals(512, (-0.2, 0.1))[0]
    inside = (sphere != BACKGROUND).any(dim=-1, keepdim=True).float()
    rgba = torch.cat([sphere, inside], dim=-1)
    Image.fromarray((rgba.numpy() * 255).round().astype(np.uint8), "RGBA").save(base / "left.png")
    other = sphere_normals(300, (0.3, -0.1), radius=0.6)[0]
    other = torch.where((other == BACKGROUND).all(dim=-1, keepdim=True), torch.zeros_like(other), other)
    Image.fromarray((other.numpy() * 255).round().astype(np.uint8)).save(base / "right.png")
    return base


def cli_args(base: Path, vae: Path, out: str | Path, *extra: str) -> list[str]:
    """The CLI's arguments for the models under ``base``, writing to ``base / out`` (or ``out`` when absolute)."""
    return ["--models", str(base / "models"), "--vae", str(vae), "--steps", "2", "--width", str(SIZE),
            "--height", str(SIZE), "--images-per-id", "1", "--out", str(base / out), "--device", "cpu", *extra]


def read_map(path: Path) -> torch.Tensor:
    """The file as the documented IMAGE: RGB(A) / 255, independently of the CLI's reader."""
    return torch.from_numpy(np.asarray(Image.open(path), dtype=np.float32) / 255).unsqueeze(0)


def test_cli_with_normal_maps(cli_base, tiny_vae_folder, tiny_control_pipeline, tmp_path):
    """``python -m arc2face_core`` with two identities, one normal map each (files of other sizes and backgrounds),
    one identity per batch: the images are the API's with both identities in one batch, and settings.json records
    the pose."""
    out = tmp_path / "posed"   # this test's own folder: it can run again in the same session
    args = cli_args(cli_base, tiny_vae_folder, out, "--random-identities", "2", "--seed", "6",
                    "--normal-map", str(cli_base / "left.png"), "--normal-map", str(cli_base / "right.png"),
                    "--control-scale", "0.8", "--control-end", "0.9")
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, "-m", "arc2face_core", *args], cwd=cli_base, env=env,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    hints = torch.cat([prepare_normal_map(read_map(cli_base / name)) for name in ("left.png", "right.png")])
    expected = tiny_control_pipeline.generate(random_identities(2, seed=6), 1, steps=2, width=SIZE, height=SIZE, seed=6,
                                              hint=hints, control_scale=0.8, control_end=0.9)
    names = ["id000_00.png", "id001_00.png"]
    for name, want in zip(names, expected):
        got = np.asarray(Image.open(out / name))
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1, name
    settings = json.loads((out / "settings.json").read_text())
    assert settings["pose"] == {"control_scale": 0.8, "control_start": 0.0, "control_end": 0.9,
                                "normal_maps": [str(cli_base / "left.png"), str(cli_base / "right.png")]}
    assert settings["files"]["controlnet"].endswith("controlnet/diffusion_pytorch_model.safetensors")


@pytest.mark.parametrize("extra, message", [
    (["--random-identities", "3", "--normal-map", "left.png", "--normal-map", "right.png"],
     "normal_map has a batch of 2 but the conditioning holds 3 identities"),
    (["--random-identities", "1", "--control-scale", "0.5"], "--control-scale needs a pose: pass --normal-map"),
    (["--random-identities", "1", "--normal-map", "left.png", "--control-start", "1"], "0 <= start < end <= 1"),
    (["--random-identities", "1", "--normal-map", "nowhere.png"], "Cannot read the normal map"),
])
def test_cli_pose_errors(cli_base, tiny_vae_folder, capsys, extra, message):
    extra = [str(cli_base / e) if e.endswith(".png") else e for e in extra]
    assert cli_main(cli_args(cli_base, tiny_vae_folder, "refused", "-q", *extra)) == 2
    assert message in capsys.readouterr().err
    assert not (cli_base / "refused").exists()     # refused before anything was written
