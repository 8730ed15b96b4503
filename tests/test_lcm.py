"""LCM speed mode headless: ``--lora FILE --lora-strength S --scheduler lcm`` against diffusers' own LCM route.

Independent route: diffusers' ``StableDiffusionPipeline`` with ``LCMScheduler.from_config`` of SD1.5's scheduler
config (as the official demo switches it), the LoRA loaded by diffusers' ``load_lora_weights`` (its kohya converter
and peft), the same tiny UNet/VAE/encoder weights, and ``generator=torch.Generator().manual_seed(seed)`` (diffusers
draws the initial latents and the noise LCM adds between steps from it). The LoRA is low-rank random in the real
kohya layout of lcm-lora-sdv1-5, on every layer type it changes (attention, feed-forward, resnet convolutions, time
embedding projections, down/upsamplers).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from arc2face_core.cli.main import main as cli_main
from arc2face_core.diffusers_backend.lora import apply_lora
from arc2face_core.diffusers_backend.model_files import load_unet
from arc2face_core.diffusers_backend.pipeline import SD15_SCHEDULER_CONFIG, Arc2FacePipeline
from arc2face_core.errors import InvalidInputError, WeightsNotFoundError, WrongModelError
from arc2face_core.identity.embeddings import random_identities
from arc2face_core.weights import ModelRoots
from builders.lora import LCM_TARGETS, lora_targets, write_lora
from fixtures_models import link_or_copy

pytest.importorskip("peft")   # diffusers' LoRA loading runs on peft (requirements-dev.txt)
SIZE, SEED = 64, 7
# diffusers' DPM/LCM schedulers hand numpy a torch tensor (numpy 2 deprecation, not this pack's code).
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")


@pytest.fixture(scope="module")
def lora_files(tmp_path_factory, tiny_arc2face_root):
    unet = load_unet(tiny_arc2face_root / "arc2face" / "diffusion_pytorch_model.safetensors")
    targets = lora_targets(unet)
    covered = {kind for kind in LCM_TARGETS if any(name.endswith(kind) for name in targets)}
    assert covered == set(LCM_TARGETS)   # every layer kind the LCM-LoRA changes is in the test LoRA
    folder = tmp_path_factory.mktemp("loras")
    return {layout: write_lora(folder / f"lcm_{layout}.safetensors", targets, rank=4, alpha=8.0, seed=3,
                               layout=layout, gain=0.5) for layout in ("kohya", "peft")}


def our_pipeline(root, vae, lora=None, strength=1.0) -> Arc2FacePipeline:
    pipeline = Arc2FacePipeline.load(ModelRoots(arc2face=[root]), vae)
    pipeline.scheduler_name = "lcm"
    if lora is not None:
        apply_lora(pipeline.unet, lora, strength)
    return pipeline


def diffusers_lcm(root, ours: Arc2FacePipeline, embeds, k, steps, guidance, lora, strength):
    from diffusers import LCMScheduler, PNDMScheduler, StableDiffusionPipeline

    unet = load_unet(root / "arc2face" / "diffusion_pytorch_model.safetensors")   # a clean copy for peft
    scheduler = LCMScheduler.from_config(PNDMScheduler.from_config(SD15_SCHEDULER_CONFIG).config)
    sd = StableDiffusionPipeline(vae=ours.vae, text_encoder=None, tokenizer=None, unet=unet, scheduler=scheduler,
                                 safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    sd.set_progress_bar_config(disable=True)
    sd.load_lora_weights(str(lora), adapter_name="lcm")
    sd.set_adapters(["lcm"], adapter_weights=[strength])
    positive, _ = ours.encoder.encode(embeds)
    negative, _ = ours.encoder.encode_empty()
    return sd(prompt_embeds=positive, negative_prompt_embeds=negative.expand(positive.shape[0], -1, -1),
              num_images_per_prompt=k, num_inference_steps=steps, guidance_scale=guidance, height=SIZE, width=SIZE,
              generator=torch.Generator().manual_seed(SEED), output_type="np").images


@pytest.mark.parametrize("layout, steps, guidance, strength", [
    ("kohya", 3, 1.0, 1.0),      # the demo's setting
    ("kohya", 4, 1.5, 0.7),      # CFG on and a partial strength: both routes must still agree
    ("peft", 2, 1.0, 1.0),
])
def test_lcm_equals_diffusers_lcm_scheduler_loop(tiny_arc2face_root, tiny_vae_folder, lora_files, layout, steps,
                                                 guidance, strength):
    ours = our_pipeline(tiny_arc2face_root, tiny_vae_folder, lora_files[layout], strength)
    embeds = random_identities(2, seed=5)
    images = ours.generate(embeds, images_per_id=2, steps=steps, guidance_scale=guidance, width=SIZE, height=SIZE,
                           seed=SEED)
    reference = diffusers_lcm(tiny_arc2face_root, ours, embeds, 2, steps, guidance, lora_files[layout], strength)
    assert images.shape == (4, SIZE, SIZE, 3)
    assert np.abs(images.astype(int) - (reference * 255).round().astype(int)).max() <= 1
    assert 20 < images.std()   # a picture, not a flat image


def test_each_part_matters(tiny_arc2face_root, tiny_vae_folder, lora_files):
    """Negative controls: without the LoRA, with DPM-Solver, or with other noise between steps the images differ."""
    embeds = random_identities(1, seed=5)
    args = dict(images_per_id=1, steps=3, guidance_scale=1.0, width=SIZE, height=SIZE, seed=SEED)
    lcm = our_pipeline(tiny_arc2face_root, tiny_vae_folder, lora_files["kohya"])
    base = lcm.generate(embeds, **args).astype(int)
    no_lora = our_pipeline(tiny_arc2face_root, tiny_vae_folder).generate(embeds, **args).astype(int)
    assert np.abs(base - no_lora).mean() > 1
    noise = lcm.noise(1, SIZE, SIZE, SEED, steps=3)
    assert noise.shape == (1, 3, 4, SIZE // 2, SIZE // 2)
    assert torch.equal(noise[:, 0], torch.randn((1, 4, 32, 32), generator=torch.Generator().manual_seed(SEED)))
    other = noise.clone()
    other[:, 1:] = torch.randn(other[:, 1:].shape, generator=torch.Generator().manual_seed(99))
    assert np.abs(lcm.generate(embeds, noise=other, **{k: v for k, v in args.items() if k != "seed"}).astype(int)
                  - base).mean() > 1
    lcm.scheduler_name = "dpmpp_2m"
    assert np.abs(lcm.generate(embeds, **args).astype(int) - base).mean() > 1


def test_the_lcm_schedule_is_the_demos():
    from arc2face_core.diffusers_backend.pipeline import make_scheduler

    scheduler = make_scheduler("lcm")
    scheduler.set_timesteps(3)
    assert type(scheduler).__name__ == "LCMScheduler" and scheduler.timesteps.tolist() == [999, 679, 339]


def test_lora_changes_exactly_the_layers_it_names(tiny_arc2face_root, lora_files):
    """The merged weights equal W + strength * alpha/rank * up @ down, computed here by hand for two layer kinds."""
    unet = load_unet(tiny_arc2face_root / "arc2face" / "diffusion_pytorch_model.safetensors")
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    changed = apply_lora(unet, lora_files["kohya"], 0.5)
    lora = load_file(lora_files["kohya"])
    assert changed == len(lora) // 3
    after = unet.state_dict()
    for module in ("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", "down_blocks.0.resnets.0.conv1"):
        key = "lora_unet_" + module.replace(".", "_")
        down, up, alpha = lora[f"{key}.lora_down.weight"], lora[f"{key}.lora_up.weight"], lora[f"{key}.alpha"]
        by_hand = torch.einsum("or,rihw->oihw" if down.ndim == 4 else "or,ri->oi",
                               up.reshape(up.shape[0], -1), down) * (alpha / down.shape[0]) * 0.5
        torch.testing.assert_close(after[f"{module}.weight"], before[f"{module}.weight"] + by_hand)
    untouched = [k for k in before if k.endswith(".weight") and not k[:-7].endswith(LCM_TARGETS)]
    assert untouched and all(torch.equal(before[k], after[k]) for k in untouched)


def test_bad_loras_are_refused_and_change_nothing(tiny_arc2face_root, lora_files, tmp_path):
    unet = load_unet(tiny_arc2face_root / "arc2face" / "diffusion_pytorch_model.safetensors")
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    lora = load_file(lora_files["kohya"])

    def variant(name: str, change) -> str:
        sd = dict(lora)
        change(sd)
        save_file(sd, str(tmp_path / name))
        return str(tmp_path / name)

    te = variant("te.safetensors", lambda sd: sd.update({"lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down."
                                                         "weight": torch.zeros(4, 768)}))
    with pytest.raises(WrongModelError, match=r"te\.safetensors also changes a text encoder"):
        apply_lora(unet, te)
    sdxl = variant("sdxl.safetensors", lambda sd: sd.update({
        "lora_unet_down_blocks_9_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 8),
        "lora_unet_down_blocks_9_attentions_0_proj_in.lora_up.weight": torch.zeros(8, 4)}))
    with pytest.raises(WrongModelError, match=r"does not fit this UNet: 1 of its \d+ layers are not in it"):
        apply_lora(unet, sdxl)
    key = "lora_unet_down_blocks_0_attentions_0_proj_in"
    wide = variant("wide.safetensors", lambda sd: sd.update({f"{key}.lora_up.weight": torch.zeros(64, 4)}))
    with pytest.raises(WrongModelError, match=r"proj_in has down \[4, 32, 1, 1\] / up \[64, 4\].*does not fit "
                                              r"the layer.s weight \[32, 32, 1, 1\]"):
        apply_lora(unet, wide)
    half = variant("half.safetensors", lambda sd: sd.pop(f"{key}.lora_up.weight"))
    with pytest.raises(WrongModelError, match="no matching down/up pair"):
        apply_lora(unet, half)
    with pytest.raises(WeightsNotFoundError, match=r"LoRA file not found: .*nowhere\.safetensors"):
        apply_lora(unet, tmp_path / "nowhere.safetensors")
    with pytest.raises(InvalidInputError, match="finite"):
        apply_lora(unet, lora_files["kohya"], float("nan"))
    assert all(torch.equal(before[k], v) for k, v in unet.state_dict().items())   # nothing half-applied


@pytest.fixture(scope="module")
def lcm_models(tmp_path_factory, tiny_arc2face_root):
    models = tmp_path_factory.mktemp("lcm_cli") / "models"
    for part in ("encoder", "arc2face"):
        link_or_copy(tiny_arc2face_root / part, models / "arc2face" / part)
    return models


def test_cli_lcm_in_batches_equals_diffusers(lcm_models, tiny_arc2face_root, tiny_vae_folder, lora_files, tmp_path):
    """--scheduler lcm --lora: the images diffusers makes, also when made one identity at a time."""
    out = tmp_path / "out"
    args = ["--models", str(lcm_models), "--vae", str(tiny_vae_folder), "--random-identities", "2", "--seed", str(SEED),
            "--identity-seed", "5", "--images-per-id", "2", "--steps", "3", "--cfg", "1.0", "--width", str(SIZE),
            "--height", str(SIZE), "--scheduler", "lcm", "--lora", str(lora_files["kohya"]), "--lora-strength", "0.8",
            "--ids-per-batch", "1", "--device", "cpu", "--out", str(out), "-q"]
    assert cli_main(args) == 0
    from PIL import Image

    got = np.stack([np.asarray(Image.open(p)) for p in sorted(out.glob("*.png"))]).astype(int)
    ours = our_pipeline(tiny_arc2face_root, tiny_vae_folder)
    reference = diffusers_lcm(tiny_arc2face_root, ours, random_identities(2, seed=5), 2, 3, 1.0, lora_files["kohya"],
                              0.8)
    assert np.abs(got - (reference * 255).round().astype(int)).max() <= 1
    import json

    settings = json.loads((out / "settings.json").read_text())
    assert "LCMScheduler.from_config" in settings["scheduler"] and settings["lora_strength"] == 0.8


@pytest.mark.parametrize("extra, message", [
    (["--lora-strength", "0.5"], "--lora-strength needs a LoRA"),
    (["--scheduler", "lcm", "--steps", "60"], "steps must be 1 to 50 with the lcm scheduler"),
    (["--lora", "nowhere.safetensors"], "LoRA file not found: nowhere.safetensors"),
])
def test_cli_lcm_misuse_is_a_clear_error_before_anything_loads(lcm_models, tmp_path, capsys, extra, message):
    """Refused before loading: the VAE given does not even exist, and that is not what is reported."""
    args = ["--models", str(lcm_models), "--vae", str(tmp_path / "no_vae"), "--random-identities", "1", "--width",
            "64", "--height", "64", "--device", "cpu", "--out", str(tmp_path / "o"), "-q", *extra]
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "no_vae" not in err
