"""Single-file VAEs in the original Stable Diffusion (LDM) layout, the file a ComfyUI user keeps in models/vae.

Independent routes: the test builder writes the LDM names from diffusers' names; diffusers' own
``convert_ldm_vae_checkpoint`` must turn them back into exactly the diffusers weights (so the test file is right), and
the pack's converter must give what diffusers' gives; the VAE loaded from the LDM file must decode as the diffusers
folder does. The tiny VAE has two blocks, so the up-block numbering really is reversed (0 <-> 1).
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from arc2face_core.diffusers_backend.model_files import load_vae
from arc2face_core.diffusers_backend.vae_files import is_ldm_layout, to_diffusers_names
from arc2face_core.errors import WrongModelError
from builders.tiny_diffusers import TINY_VAE_CONFIG, tiny_vae_state_dict, write_tiny_vae_ldm_file


@pytest.fixture(scope="module")
def ldm_file(tmp_path_factory):
    return write_tiny_vae_ldm_file(tmp_path_factory.mktemp("ldm") / "vae-ft-mse-tiny.safetensors", seed=1)


def test_the_test_file_is_what_diffusers_reads_as_the_same_vae(ldm_file):
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    ldm = load_file(ldm_file)
    assert "decoder.up.0.block.0.conv1.weight" in ldm and "encoder.mid.attn_1.q.weight" in ldm
    assert ldm["encoder.mid.attn_1.q.weight"].ndim == 4 and is_ldm_layout(ldm)
    theirs = convert_ldm_vae_checkpoint(ldm, TINY_VAE_CONFIG)
    original = tiny_vae_state_dict(1)
    assert theirs.keys() == original.keys()
    assert all(torch.equal(theirs[k], original[k]) for k in original)


@pytest.mark.parametrize("prefix", ["", "first_stage_model."])
def test_the_pack_converts_as_diffusers_does(tmp_path, prefix):
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    path = write_tiny_vae_ldm_file(tmp_path / "vae.safetensors", prefix=prefix, extra={
        "model.diffusion_model.out.2.weight": torch.zeros(4, 8, 3, 3)} if prefix else None)
    sd = load_file(path)
    ours = to_diffusers_names(sd, TINY_VAE_CONFIG, path)
    theirs = convert_ldm_vae_checkpoint(sd, TINY_VAE_CONFIG)
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_an_ldm_vae_file_decodes_as_the_diffusers_folder(ldm_file, tiny_vae_folder, tmp_path):
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    folder = load_vae(tiny_vae_folder).decode(latents).sample
    checkpoint = write_tiny_vae_ldm_file(tmp_path / "sd15-full.safetensors", prefix="first_stage_model.",
                                         extra={"model.diffusion_model.input_blocks.0.0.weight": torch.ones(4, 4)})
    with_loss = load_file(ldm_file)
    with_loss["loss.discriminator.main.0.weight"] = torch.ones(2)   # training leftovers some VAE files carry
    save_file(with_loss, str(tmp_path / "with_loss.safetensors"))
    for path in (ldm_file, checkpoint, tmp_path / "with_loss.safetensors"):
        decoded = load_vae(path, config=TINY_VAE_CONFIG).decode(latents).sample
        torch.testing.assert_close(decoded, folder, atol=0, rtol=0)


def test_an_unconverted_file_would_decode_differently(ldm_file, tiny_vae_folder):
    """Negative control: the up-block reversal matters (a converter that kept LDM's order would be caught)."""
    from arc2face_core.diffusers_backend import vae_files

    sd = load_file(ldm_file)
    unreversed = vae_files.ldm_to_diffusers(sd, up_blocks=1)   # up.{i} -> up_blocks.{0 - i}: wrong numbering
    assert unreversed.keys() != set(tiny_vae_state_dict(1))


@pytest.mark.parametrize("content, name", [
    ({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3)}, "unet.safetensors"),
    ({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 320)}, "lora.safetensors"),
    ({"conv_in.weight": torch.zeros(32, 4, 3, 3), "down_blocks.0.resnets.0.conv1.weight": torch.zeros(32, 32, 3, 3)},
     "diffusers_unet.safetensors"),
])
def test_what_is_not_a_vae_is_refused_by_name(tmp_path, content, name):
    save_file(content, str(tmp_path / name))
    with pytest.raises(WrongModelError, match=rf"{name} is not a VAE: it holds no encoder\./decoder\. tensors"):
        load_vae(tmp_path / name)
