"""Finding and loading the diffusers-format models of the headless pipeline: the Arc2Face UNet and SD1.5's VAE."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Optional

import torch

from ..checkpoints import BackgroundRead, check_safetensors_file
from ..errors import CorruptWeightsError, WeightsNotFoundError, WrongModelError
from ..weights import HF_URL, UNET, find_with_config

# stable-diffusion-v1-5/vae/config.json. scaling_factor is not in that file; AutoencoderKL's default is SD1.5's.
SD15_VAE_CONFIG = {
    "_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4, "in_channels": 3, "latent_channels": 4, "layers_per_block": 2,
    "norm_num_groups": 32, "out_channels": 3, "sample_size": 512, "up_block_types": ["UpDecoderBlock2D"] * 4,
}


VAE_SCALING_FACTOR = 0.18215


SD15_VAE_URL = ("https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5/resolve/main/vae/"
                "diffusion_pytorch_model.safetensors")


VAE_WEIGHTS = "diffusion_pytorch_model.safetensors"


# diffusers < 0.14 named the VAE mid-block attention like this; such files are still around (SD1.5's vae/ dates then).
_LEGACY_ATTENTION = {".query.": ".to_q.", ".key.": ".to_k.", ".value.": ".to_v.", ".proj_attn.": ".to_out.0."}


def read_json(path: Path, what: str, hint: str) -> dict:
    if not path.is_file():
        raise WeightsNotFoundError(f"{what}: {path} is missing (it must sit beside the weights). {hint}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CorruptWeightsError(f"{path} is not readable JSON ({exc}). {hint}") from exc
    if not isinstance(config, dict):
        raise CorruptWeightsError(f"{path} holds no JSON object. {hint}")
    return config


def load_model(cls, config: dict, weights: BackgroundRead, config_name: str, hint: str, *,
               check_before_first_use: bool = False, without: tuple[str, ...] = ()):
    """Build ``cls`` from ``config`` without initialising it and load ``weights`` strictly (every key, every shape).

    ``weights`` is being read (memory-mapped) and checked for NaN/inf in the background meanwhile; its tensors become
    the model's parameters as they are, with no copy. diffusers' ``from_pretrained`` only warns about missing
    tensors and leaves them random (the silent-miss pitfall), and without ``accelerate`` it first initialises every
    weight at random: this does neither.

    With ``check_before_first_use`` the model is returned as soon as the file is read and the NaN/inf check goes on
    in the background while the caller does other work (loading the other models); the model's first forward call
    (or ``wait_for_weight_check``) waits for it and raises its error, so no output is ever computed from weights
    that were not checked.

    ``without`` names submodules left out (set to None): the caller's ``prepare`` drops their tensors, which are then
    never read (nor become resident memory).
    """
    try:
        return _build_and_assign(cls, config, weights, config_name, hint, check_before_first_use, without)
    finally:
        weights.start_check()   # never leave a deferred check waiting (the reader thread holds the interpreter open)


def _build_and_assign(cls, config: dict, weights: BackgroundRead, config_name: str, hint: str,
                      check_before_first_use: bool, without: tuple[str, ...]):
    try:
        with _no_weight_init(), torch.device("meta"):
            model = cls.from_config(config)
        for name in without:
            setattr(model, name, None)
    except Exception as exc:  # diffusers raises TypeError/ValueError/KeyError/... for bad configs
        weights.result()   # a broken weight file is the first thing to report, as when it was read first
        raise CorruptWeightsError(f"{config_name} is not a valid {cls.__name__} config ({exc}). {hint}") from exc
    sd = weights.loaded() if check_before_first_use else weights.result()
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(expected.keys() - sd.keys())
    unexpected = sorted(sd.keys() - expected.keys())
    wrong = sorted(k for k in expected.keys() & sd.keys() if tuple(sd[k].shape) != expected[k])
    if missing or unexpected or wrong:
        raise CorruptWeightsError(
            f"{weights.path} does not match the {cls.__name__} described by {config_name}: missing {len(missing)} "
            f"tensors {missing[:4]}, unexpected {len(unexpected)} {unexpected[:4]}, wrong shape {len(wrong)} "
            f"{wrong[:4]}. {_ldm_hint(sd)}{hint}")
    model.load_state_dict(sd, strict=True, assign=True)
    model.eval().requires_grad_(False)
    if check_before_first_use:
        handle = model.register_forward_pre_hook(lambda module, args: wait_for_weight_check(module))
        model.__dict__[_PENDING_CHECK] = (weights, handle)
    else:
        weights.release()
    return model


_PENDING_CHECK = "_arc2face_pending_weight_check"


def wait_for_weight_check(model: torch.nn.Module) -> None:
    """Wait until the NaN/inf check of the file ``model`` was loaded from has finished, and raise its error (which
    names the file and the tensor). A no-op for a model with no check pending. On an error the model stays refused:
    every later forward call raises it again."""
    pending = model.__dict__.get(_PENDING_CHECK)
    if pending is None:
        return
    reading, handle = pending
    reading.result()
    handle.remove()
    del model.__dict__[_PENDING_CHECK]
    reading.release()


def _no_weight_init():
    """diffusers' own switch that skips torch.nn.init while a model is built (its from_pretrained uses it): on the
    meta device the random init computes nothing, yet costs time; a nullcontext where diffusers lacks it."""
    try:
        from diffusers.models.modeling_utils import no_init_weights
    except ImportError:
        return contextlib.nullcontext()
    return no_init_weights()


def _ldm_hint(sd: dict) -> str:
    """Files in the original Stable Diffusion layout (ComfyUI/A1111 checkpoints) are not converted here: say so."""
    prefixes = ("first_stage_model.", "encoder.down.", "decoder.up.", "model.diffusion_model.", "input_blocks.")
    if any(key.startswith(prefixes) for key in sd):
        return "It is in the original Stable Diffusion (LDM) layout; this loader reads diffusers' layout. "
    return ""


def _rename_legacy_attention(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    renamed = {}
    for key, value in sd.items():
        if ".mid_block.attentions." in key:
            for old, new in _LEGACY_ATTENTION.items():
                key = key.replace(old, new)
        renamed[key] = value
    return renamed


def find_unet(arc2face_roots, *, download: bool = False) -> tuple[Path, Path]:
    """(weights, config.json) of the Arc2Face UNet: ``<root>/arc2face/{diffusion_pytorch_model.safetensors,
    config.json}``. With ``download`` a missing config.json beside present weights is fetched too."""
    return find_with_config(UNET, arc2face_roots, download=download)


def load_unet(weights: str | os.PathLike, config_path: str | os.PathLike | None = None):
    """The Arc2Face UNet (``UNet2DConditionModel``) from its diffusers folder files, loaded strictly, fp32 as stored.

    The 3.4 GB file is memory-mapped while diffusers is imported and the model built (``BackgroundRead``); its
    NaN/inf check starts in the background when this returns, overlapping whatever the caller loads next, and the
    UNet's first forward call waits for it (``wait_for_weight_check``): a corrupt file is refused, naming the file
    and the tensor, before anything is computed with it.
    """
    weights = Path(weights)
    config_path = Path(config_path) if config_path is not None else weights.with_name("config.json")
    hint = f"Download arc2face/config.json and arc2face/diffusion_pytorch_model.safetensors from {HF_URL}."
    config = read_json(config_path, "Arc2Face UNet config", hint)
    reading = BackgroundRead(weights, source=HF_URL, check_later=True)
    try:
        from diffusers import UNet2DConditionModel
    except BaseException:
        reading.start_check()   # let the reader thread finish, or the interpreter would wait for it at exit
        raise
    return load_model(UNet2DConditionModel, config, reading, str(config_path), hint, check_before_first_use=True)


VAE_ENCODER_PARTS = ("encoder", "quant_conv")   # what only VAE Encode uses: generation decodes alone


def _vae_files(path: Path, config: Optional[dict]) -> tuple[Path, dict, str, str]:
    """(weights file, config, config name, hint) of a VAE path, checked as far as the files' names and the config
    go."""
    hint = f"Use SD1.5's VAE: {SD15_VAE_URL} (or the vae/ folder of stable-diffusion-v1-5)."
    if path.is_dir():
        weights, config_name = path / VAE_WEIGHTS, str(path / "config.json")
        if config is None:
            config = read_json(path / "config.json", "VAE config", hint)
        if not weights.is_file():
            raise WeightsNotFoundError(f"VAE weights not found: {weights} is missing. {hint}")
    elif path.is_file():
        weights, config_name = path, "the given VAE config" if config is not None else "SD1.5's VAE config"
        config = config if config is not None else SD15_VAE_CONFIG
    else:
        raise WeightsNotFoundError(f"VAE not found: {path} does not exist. {hint}")
    if weights.suffix != ".safetensors":
        raise CorruptWeightsError(f"{weights}: the VAE must be a .safetensors file. {hint}")
    scaling = config.get("scaling_factor", VAE_SCALING_FACTOR)
    if config.get("latent_channels") != 4 or scaling != VAE_SCALING_FACTOR:
        raise WrongModelError(f"{config_name} describes a VAE with {config.get('latent_channels')} latent channels "
                              f"and scaling factor {scaling}: not SD1.5's (4, {VAE_SCALING_FACTOR}). {hint}")
    return weights, config, config_name, hint


def check_vae(path: str | os.PathLike) -> None:
    """What ``load_vae`` would refuse that the file names and the safetensors header tell (a missing or truncated
    file, a UNet or a LoRA given as the VAE), found without reading a tensor: for checks before a long run writes
    anything."""
    from .vae_files import check_vae_names

    weights, _, _, _ = _vae_files(Path(path), None)
    check_safetensors_file(weights, source=SD15_VAE_URL)
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(os.fspath(weights), framework="pt") as handle:
            names = list(handle.keys())
    except (SafetensorError, OSError, ValueError) as exc:
        raise CorruptWeightsError(f"{weights} is not a readable safetensors file ({exc}). Use SD1.5's VAE: "
                                  f"{SD15_VAE_URL}") from exc
    check_vae_names(names, weights)


def load_vae(path: str | os.PathLike, config: Optional[dict] = None, *, encoder: bool = True):
    """SD1.5's VAE (``AutoencoderKL``) from a diffusers folder (``config.json`` +
    ``diffusion_pytorch_model.safetensors``: stable-diffusion-v1-5's ``vae/``) or one ``.safetensors`` file with
    diffusers' key names or the original Stable Diffusion ones (``vae_files``: what ComfyUI's models/vae holds).

    ``config`` overrides the architecture; by default a folder's ``config.json``, for a file ``SD15_VAE_CONFIG``.
    The attention names of files saved by diffusers < 0.14 (``query``/``key``/``value``/``proj_attn``, the era of
    SD1.5's own vae/ file) are accepted, as diffusers' ``from_pretrained`` accepts them.

    ``encoder=False`` loads the decoder half only (``VAE_ENCODER_PARTS`` are None): the encoder's 34M weights are
    then never read, checked or held in memory; ``vae.encode`` is unavailable.
    """
    weights, config, config_name, hint = _vae_files(Path(path), config)
    from .vae_files import to_diffusers_names

    # a file in the original Stable Diffusion layout gets diffusers' names, then old diffusers' attention names
    without = () if encoder else VAE_ENCODER_PARTS

    def prepare(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        sd = _rename_legacy_attention(to_diffusers_names(sd, config, weights))
        return {k: v for k, v in sd.items() if k.split(".", 1)[0] not in without}

    reading = BackgroundRead(weights, prepare=prepare)
    from diffusers import AutoencoderKL

    return load_model(AutoencoderKL, config, reading, config_name, hint, without=without)
