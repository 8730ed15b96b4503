"""The Reference Adapter headless (diffusers UNet) and ``python -m arc2face_core --reference``, on tiny models.

The independent computation is the reference's own recipe, written here with diffusers alone: the LoRA loaded by
diffusers' loader (peft) and fused into a copy of the UNet, forward hooks on ``norm1`` of a clean UNet run at t=0, and
an attn1 processor that, like the reference's ``ReferenceAdapter(cfg=True)``, attends plainly on the first (negative)
half of the batch and to cat(own, stored) on the second (positive) half — driven by diffusers' own
StableDiffusionPipeline for the end-to-end images.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0
from PIL import Image
from test_pipeline import SIZE, run_reference

from arc2face_core.batching import IdentityLayout
from arc2face_core.cli.main import main as cli_main
from arc2face_core.diffusers_backend.pipeline import Arc2FacePipeline
from arc2face_core.errors import InvalidInputError, NoFaceError
from arc2face_core.faces.align import align_faces
from arc2face_core.faces.ffhq import image_align
from arc2face_core.reference.diffusers_unet import ReferencePhotos, reference_adapter, write_pass
from arc2face_core.reference.lora import load_reference_lora
from arc2face_core.weights import ModelRoots
from builders.onnx_landmarks import build_rigged_landmarks, posed_mean_shape
from builders.ref_lora import lora_pairs, lora_state_dict, write_lora
from builders.reference_oracle import clean_tokens
from builders.tiny_diffusers import TINY_UNET_CONFIG
from fixtures_faces import write_face_models
from fixtures_models import link_or_copy

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")

ROLL = 12.0   # degrees: the rigged landmarks are tilted, so alignment has something to undo
CPU = ["CPUExecutionProvider"]


def _roll(degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


@pytest.fixture(scope="module")
def reference_models(tmp_path_factory, astronaut_scene, tiny_arc2face_root) -> Path:
    """models/ with the tiny Arc2Face models, the rigged face models, a tilted rigged 1k3d68 and a tiny-UNet LoRA in
    the diffusers style; the astronaut and a black photo beside it."""
    base = tmp_path_factory.mktemp("reference")
    models = base / "models"
    write_face_models(models, astronaut_scene)
    build_rigged_landmarks(models / "insightface/models/antelopev2/1k3d68.onnx", posed_mean_shape(_roll(ROLL)))
    for part in ("encoder", "arc2face"):
        link_or_copy(tiny_arc2face_root / part, models / "arc2face" / part)
    write_lora(models / "arc2face/ref_adapter/pytorch_lora_weights.safetensors",
               lora_state_dict("diffusers", lora_pairs(TINY_UNET_CONFIG, rank=4, seed=3, gain=1.0)))
    Image.fromarray(astronaut_scene.image).save(base / "astronaut.png")
    Image.fromarray(np.zeros_like(astronaut_scene.image)).save(base / "black.png")
    return base


@pytest.fixture(scope="module")
def lora_file(reference_models) -> Path:
    return reference_models / "models/arc2face/ref_adapter/pytorch_lora_weights.safetensors"


@pytest.fixture(scope="module")
def aligner(reference_models):
    from arc2face_core.faces.analysis import load_face_analyzer
    from arc2face_core.faces.landmarks import load_landmark_model

    roots = ModelRoots.under(reference_models / "models")
    return load_face_analyzer(roots, CPU), load_landmark_model(roots, CPU)


# ------------------------------------------------------------------------------------------------ the oracle


class OracleReader:
    """The reference's read mode with cfg=True: first half (negative) plain, second half attends to cat(own, bank)."""

    def __init__(self, bank_rows: torch.Tensor) -> None:
        from diffusers.models.attention_processor import AttnProcessor2_0

        self.bank_rows, self.plain = bank_rows, AttnProcessor2_0()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        half = hidden_states.shape[0] // 2
        uncond = self.plain(attn, hidden_states[:half])
        cond = self.plain(attn, hidden_states[half:],
                          encoder_hidden_states=torch.cat([hidden_states[half:], self.bank_rows], dim=1))
        return torch.cat([uncond, cond])


def oracle_unet(clean, lora_path: Path, strength: float, tokens: dict, images_per_id: int):
    """A copy of the UNet with the LoRA fused by diffusers and the reader processors on every attn1."""
    unet = copy.deepcopy(clean)
    unet.load_lora_adapter(str(lora_path.parent), weight_name=lora_path.name, use_safetensors=True, prefix="unet",
                           adapter_name="ref")
    unet.set_adapters(["ref"], [strength])
    unet.fuse_lora()
    for name, bank in tokens.items():
        unet.get_submodule(name).attn1.set_processor(OracleReader(bank.repeat_interleave(images_per_id, dim=0)))
    return unet


# ------------------------------------------------------------------------------------------------ the checks


def test_one_prediction_equals_the_oracle_for_cond_and_uncond_rows(tiny_pipeline, lora_file):
    g = torch.Generator().manual_seed(0)
    unet, lora = tiny_pipeline.unet, load_reference_lora(lora_file)
    ref_latents = torch.randn(2, 4, 16, 16, generator=g)              # two identities, one reference each
    identity = torch.randn(2, 77, 768, generator=g)
    x, t = torch.randn(4, 4, 16, 16, generator=g), torch.tensor(500)
    context = torch.cat([torch.randn(2, 77, 768, generator=g), identity])   # [negative, positive]

    banks = write_pass(unet, ref_latents, identity)
    tokens = clean_tokens(unet, ref_latents, identity)
    assert set(banks.keys()) == set(tokens) and len(tokens) == 4
    for name, stored in tokens.items():                               # stored by the clean (un-LoRA'd) pass
        torch.testing.assert_close(banks[name], stored, rtol=0, atol=0)

    with torch.no_grad():
        with reference_adapter(unet, lora, 0.8, banks, [1, 0], IdentityLayout(2, 1)):
            ours = unet(x, t, encoder_hidden_states=context).sample
        plain = unet(x, t, encoder_hidden_states=context).sample        # everything undone on exit
        oracle = oracle_unet(unet, lora_file, 0.8, tokens, 1)
        expected = oracle(x, t, encoder_hidden_states=context).sample
        oracle.set_attn_processor(AttnProcessor2_0())                  # the same LoRA'd UNet, no reference
        lora_only = oracle(x, t, encoder_hidden_states=context).sample
    lora_tokens = clean_tokens(oracle, ref_latents, identity)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5)
    assert (ours[2:] - lora_only[2:]).abs().max() > 1e-2          # the reference changes the conditional rows
    torch.testing.assert_close(ours[:2], lora_only[:2], rtol=1e-4, atol=1e-5)   # and leaves the unconditional ones
    assert (lora_only - plain).abs().max() > 1e-2                  # the LoRA acts too
    assert max((lora_tokens[n] - tokens[n]).abs().max() for n in tokens) > 1e-2   # a LoRA'd write pass would differ
    with torch.no_grad():
        torch.testing.assert_close(unet(x, t, encoder_hidden_states=context).sample, plain, rtol=0, atol=0)


def test_generate_with_a_reference_equals_diffusers_pipeline_with_the_oracle(tiny_pipeline, lora_file):
    """2 identities x 2 images, one reference each, CFG 3: the whole loop against diffusers' StableDiffusionPipeline."""
    g = torch.Generator().manual_seed(1)
    embeds = torch.nn.functional.normalize(torch.randn(2, 512, generator=g), dim=1)
    photos = (torch.rand(2, SIZE, SIZE, 3, generator=g) * 255).to(torch.uint8).numpy()
    noise = tiny_pipeline.noise(4, SIZE, SIZE, seed=3)
    reference = ReferencePhotos(load_reference_lora(lora_file), photos, 0.7)
    ours = tiny_pipeline.generate(embeds, 2, steps=3, width=SIZE, height=SIZE, noise=noise, reference=reference)

    with torch.no_grad():   # the oracle's own reference latents (posterior mean) and identity conditioning
        x = torch.from_numpy(photos).permute(0, 3, 1, 2).float() / 255 * 2 - 1
        latents = tiny_pipeline.vae.encode(x).latent_dist.mean * 0.18215
        identity, _ = tiny_pipeline.encoder.encode(embeds)
    tokens = clean_tokens(tiny_pipeline.unet, latents, identity)
    oracle = Arc2FacePipeline(oracle_unet(tiny_pipeline.unet, lora_file, 0.7, tokens, 2), tiny_pipeline.vae,
                              tiny_pipeline.encoder)
    expected = run_reference(oracle, embeds, 2, noise, 3, 3.0)
    expected = (expected * 255).round().astype(np.uint8)
    assert np.abs(ours.astype(int) - expected.astype(int)).max() <= 1
    without = tiny_pipeline.generate(embeds, 2, steps=3, width=SIZE, height=SIZE, noise=noise)
    assert np.abs(ours.astype(int) - without.astype(int)).max() > 10


def test_headless_reference_inputs_are_checked(tiny_pipeline, lora_file):
    lora = load_reference_lora(lora_file)
    embeds = torch.nn.functional.normalize(torch.randn(3, 512), dim=1)
    photos = np.zeros((2, SIZE, SIZE, 3), np.uint8)
    with pytest.raises(InvalidInputError, match="2 reference photos for 3 identities"):
        tiny_pipeline.generate(embeds, 1, steps=1, width=SIZE, height=SIZE, reference=ReferencePhotos(lora, photos))
    with pytest.raises(InvalidInputError, match="reference photos must be uint8 RGB"):
        ReferencePhotos(lora, photos.astype(np.float32))
    with pytest.raises(InvalidInputError, match="strength must be a number from 0 to 1"):
        ReferencePhotos(lora, photos, 1.2)
    odd = ReferencePhotos(lora, np.zeros((1, 48, 48, 3), np.uint8))   # 24x24 latents against 32x32 ones
    with pytest.raises(InvalidInputError, match=r"reference latent is 24x24 cells .* and the latent being generated "
                                                r"32x32 cells"):
        tiny_pipeline.generate(embeds[:1], 1, steps=1, width=SIZE, height=SIZE, reference=odd)


def test_align_faces_uses_the_chosen_faces_68_landmarks(aligner, astronaut_scene, black_image):
    analyzer, landmarks = aligner
    bgr = np.ascontiguousarray(astronaut_scene.image[..., ::-1])
    aligned = align_faces([bgr, bgr], analyzer, landmarks, "largest", 128)
    assert aligned.shape == (2, 128, 128, 3) and aligned.dtype == np.uint8
    rig = posed_mean_shape(_roll(ROLL))[:, :2]              # what the rigged 1k3d68 reports for this face
    expected = image_align(astronaut_scene.image, rig, output_size=128).image
    assert np.abs(aligned[0].astype(int) - expected.astype(int)).max() <= 1   # 1k3d68 reports float32 points
    upright = image_align(astronaut_scene.image, posed_mean_shape(np.eye(3))[:, :2], output_size=128).image
    assert np.abs(aligned[0].astype(int) - upright.astype(int)).mean() > 5    # the tilt is undone, not ignored
    with pytest.raises(NoFaceError, match=r"^Face Align: No face found in image 2 of 2"):
        align_faces([bgr, black_image], analyzer, landmarks, "largest", 128)


def _cli(base: Path, out: str, *extra: str) -> list[str]:
    return ["--models", str(base / "models"), "--vae", str(base / "vae"), "--steps", "2", "--width", str(SIZE),
            "--height", str(SIZE), "--images-per-id", "2", "--out", str(base / out), "--device", "cpu", "-q", *extra]


def test_cli_reference_is_the_pipeline_with_the_aligned_photo(reference_models, tiny_vae_folder, tiny_pipeline,
                                                              aligner, astronaut_scene, face_analyzer):
    if not (reference_models / "vae").exists():
        link_or_copy(tiny_vae_folder, reference_models / "vae")
    photo = str(reference_models / "astronaut.png")
    assert cli_main(_cli(reference_models, "ref", "--image", photo, "--reference", photo,
                         "--reference-strength", "0.6")) == 0
    pngs = [np.asarray(Image.open(reference_models / "ref" / f"id000_{j:02d}.png")) for j in range(2)]
    analyzer, landmarks = aligner
    bgr = np.ascontiguousarray(astronaut_scene.image[..., ::-1])
    embeds = face_analyzer.embed([bgr]).embeds
    reference = ReferencePhotos(load_reference_lora(reference_models / "models/arc2face/ref_adapter/"
                                                    "pytorch_lora_weights.safetensors"),
                                align_faces([bgr], analyzer, landmarks, "largest", SIZE), 0.6)
    expected = tiny_pipeline.generate(embeds, 2, steps=2, width=SIZE, height=SIZE, seed=0, reference=reference)
    for got, want in zip(pngs, expected):
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    settings = json.loads((reference_models / "ref" / "settings.json").read_text())
    assert settings["reference"]["strength"] == 0.6 and settings["reference"]["aligned_size"] == SIZE


@pytest.mark.parametrize("extra, message", [
    (("--reference-strength", "0.5"), "--reference-strength needs a reference photo"),
    (("--reference", "{photo}", "--reference", "{photo}"), "2 --reference photos for 1 identities"),
    (("--reference", "{photo}", "--reference-strength", "2"), "strength must be a number from 0 to 1"),
    (("--reference", "{black}"), "black.png: Face Align: No face found in image 1 of 1"),
])
def test_cli_reference_errors(reference_models, tiny_vae_folder, capsys, extra, message):
    if not (reference_models / "vae").exists():
        link_or_copy(tiny_vae_folder, reference_models / "vae")
    photo, black = reference_models / "astronaut.png", reference_models / "black.png"
    extra = [e.format(photo=photo, black=black) for e in extra]
    assert cli_main(_cli(reference_models, "bad", "--image", str(photo), *extra)) == 2
    assert message in capsys.readouterr().err
    assert not (reference_models / "bad").exists()
