"""Fixtures for the tiny torch models (encoder, UNet, ...), built once per session in the real layouts."""

from __future__ import annotations

import pytest

from builders.clip_encoder import write_encoder


@pytest.fixture(scope="session")
def encoder_root(tmp_path_factory):
    """An ``arc2face`` model root holding a tiny random encoder (2 layers, full vocabulary, hidden 768)."""
    root = tmp_path_factory.mktemp("arc2face_encoder")
    write_encoder(root, seed=0)
    return root


@pytest.fixture(scope="session")
def id_encoder(encoder_root):
    from arc2face_core.identity.encoder import load_id_encoder

    return load_id_encoder(encoder_root / "encoder" / "pytorch_model.bin")


# ---------------------------------------------------------------- tiny diffusers UNet/VAE for the headless pipeline
import os  # noqa: E402
import shutil  # noqa: E402

from builders.tiny_diffusers import write_tiny_unet, write_tiny_vae_file, write_tiny_vae_folder  # noqa: E402


def link_or_copy(source, target) -> None:
    """Make ``target`` show the folder ``source`` (a symlink where the OS allows it, else a copy)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.symlink(source, target, target_is_directory=True)
    except OSError:
        shutil.copytree(source, target)


@pytest.fixture(scope="session")
def tiny_arc2face_root(tmp_path_factory, encoder_root):
    """An ``arc2face`` root: the tiny encoder of ``encoder_root`` under encoder/ and a tiny UNet under arc2face/."""
    root = tmp_path_factory.mktemp("arc2face_tiny")
    link_or_copy(encoder_root / "encoder", root / "encoder")
    write_tiny_unet(root, seed=0)
    return root


@pytest.fixture(scope="session")
def tiny_vae_folder(tmp_path_factory):
    """A tiny AutoencoderKL as a diffusers folder (config.json + diffusion_pytorch_model.safetensors)."""
    return write_tiny_vae_folder(tmp_path_factory.mktemp("tiny_vae") / "vae", seed=1)


@pytest.fixture(scope="session")
def tiny_vae_file(tmp_path_factory):
    """The same tiny VAE weights as ``tiny_vae_folder``, saved alone in one .safetensors file."""
    return write_tiny_vae_file(tmp_path_factory.mktemp("tiny_vae_file") / "tiny_vae.safetensors", seed=1)


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_arc2face_root, tiny_vae_folder):
    """Arc2FacePipeline on the tiny UNet, encoder and VAE (CPU, fp32)."""
    from arc2face_core.diffusers_backend.pipeline import Arc2FacePipeline
    from arc2face_core.weights import ModelRoots

    return Arc2FacePipeline.load(ModelRoots(arc2face=[tiny_arc2face_root]), tiny_vae_folder)


# ---------------------------------------------------------------------------------- tiny pose ControlNet
from builders.tiny_diffusers import write_tiny_controlnet  # noqa: E402


@pytest.fixture(scope="session")
def tiny_controlnet_root(tmp_path_factory, tiny_arc2face_root):
    """An ``arc2face`` root like ``tiny_arc2face_root`` (same encoder and UNet) plus a tiny random ControlNet under
    controlnet/, in diffusers' layout."""
    root = tmp_path_factory.mktemp("arc2face_controlnet")
    for part in ("encoder", "arc2face"):
        link_or_copy(tiny_arc2face_root / part, root / part)
    write_tiny_controlnet(root, seed=2)
    return root


@pytest.fixture(scope="session")
def tiny_control_pipeline(tiny_controlnet_root, tiny_vae_folder):
    """Arc2FacePipeline on the tiny UNet, encoder and VAE with the tiny pose ControlNet (CPU, fp32)."""
    from arc2face_core.diffusers_backend.pipeline import Arc2FacePipeline
    from arc2face_core.weights import ModelRoots

    return Arc2FacePipeline.load(ModelRoots(arc2face=[tiny_controlnet_root]), tiny_vae_folder, controlnet=True)
