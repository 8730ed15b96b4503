"""The headless pipeline's speed options give the default's images: stated tolerances, on the tiny models (CPU).

Measured on these models (3 seeds, 2 images of 32x32, 2 steps, in 0..255 levels): bf16 mean 0.41, max 3; fp16 mean
0.05, max 1; channels_last and torch.compile (inductor) mean <= 0.0002, max <= 1. The bounds below leave room
for other CPUs; a different seed (the negative control) moves the images by far more. CFG in one batch of
[negative, positive] rows is checked against two separate UNet passes computed here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from arc2face_core.diffusers_backend.pipeline import Arc2FacePipeline, make_scheduler
from arc2face_core.identity.embeddings import random_identities
from arc2face_core.weights import ModelRoots

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")

SIZE, STEPS = 32, 2


def load(root, vae, **kwargs) -> Arc2FacePipeline:
    return Arc2FacePipeline.load(ModelRoots(arc2face=[root]), vae, **kwargs)


def make(pipeline: Arc2FacePipeline, seed: int = 1) -> np.ndarray:
    return pipeline.generate(random_identities(2, seed=5), 1, STEPS, 3.0, SIZE, SIZE, seed=seed).astype(int)


@pytest.fixture(scope="module")
def default(tiny_pipeline) -> np.ndarray:
    return make(tiny_pipeline)


def test_the_tolerances_can_tell_images_apart(tiny_pipeline, default):
    assert np.abs(make(tiny_pipeline, seed=2) - default).mean() > 5


@pytest.mark.parametrize("dtype, mean, worst", [(torch.bfloat16, 1.0, 8), (torch.float16, 0.25, 3)])
def test_half_precision(tiny_arc2face_root, tiny_vae_folder, default, dtype, mean, worst):
    pipeline = load(tiny_arc2face_root, tiny_vae_folder, dtype=dtype)
    assert pipeline.unet.dtype == dtype and pipeline.vae.dtype == dtype
    diff = np.abs(make(pipeline) - default)
    assert diff.mean() <= mean and diff.max() <= worst


def test_channels_last(tiny_arc2face_root, tiny_vae_folder, default):
    pipeline = load(tiny_arc2face_root, tiny_vae_folder).optimize(channels_last=True)
    weight = pipeline.unet.conv_in.weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    diff = np.abs(make(pipeline) - default)
    assert diff.mean() <= 0.01 and diff.max() <= 1


def test_torch_compile(tiny_arc2face_root, tiny_vae_folder, default):
    pipeline = load(tiny_arc2face_root, tiny_vae_folder).optimize(compile=True)
    assert type(pipeline.unet).__name__ == "OptimizedModule"      # the UNet really runs through torch.compile
    diff = np.abs(make(pipeline) - default)
    assert diff.mean() <= 0.01 and diff.max() <= 1


def test_cfg_in_one_batch_equals_two_passes(tiny_pipeline):
    """The loop's single UNet call on cat([negative, positive]) equals separate unconditional and conditional calls."""
    embeds = random_identities(2, seed=8)
    positive, negative = tiny_pipeline.conditioning(embeds, 1)
    noise = tiny_pipeline.noise(2, SIZE, SIZE, seed=4)
    batched = tiny_pipeline.denoise(positive, negative, noise, STEPS, 3.0)
    scheduler = make_scheduler()
    scheduler.set_timesteps(STEPS)
    latents = noise.clone()
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.scale_model_input(latents, t)
            uncond = tiny_pipeline.unet(x, t, encoder_hidden_states=negative).sample
            cond = tiny_pipeline.unet(x, t, encoder_hidden_states=positive).sample
            latents = scheduler.step(uncond + 3.0 * (cond - uncond), t, latents, return_dict=False)[0]
    torch.testing.assert_close(batched, latents, atol=1e-4, rtol=1e-4)
    assert (batched - noise).abs().mean() > 0.1
