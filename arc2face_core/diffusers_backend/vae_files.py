"""Single-file VAEs as ComfyUI users keep them: the original Stable Diffusion (LDM) layout, renamed to diffusers'.

``vae-ft-mse-840000-ema-pruned.safetensors`` and the VAE inside a full SD1.5 checkpoint (``first_stage_model.*``) name
their tensors as the LDM code did: ``encoder.down.{i}.block.{j}``, ``decoder.up.{i}`` (numbered from the *lowest*
resolution, the reverse of diffusers' ``up_blocks``), ``mid.block_{1,2}``, ``mid.attn_1.{q,k,v,proj_out}`` as 1x1
convolutions, ``nin_shortcut``, ``norm_out``. The mapping is diffusers' ``convert_ldm_vae_checkpoint``
(``diffusers/loaders/single_file_utils.py``), written here as one rule per name so the loader stays strict: every
tensor of the file must land on a tensor of the model.

SDXL's VAE has the same names and shapes, so the layout says nothing about *which* VAE a file is: the caller picks the
file (``--vae``), never a guess.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ..errors import WrongModelError

# Prefixes of the VAE inside a whole checkpoint (diffusers' LDM_VAE_KEYS).
CHECKPOINT_PREFIXES = ("first_stage_model.", "vae.")
# Tensors of the VAE's training loss (LPIPS, discriminator) that some LDM VAE files still carry: not part of the model.
TRAINING_ONLY_PREFIXES = ("loss.",)
_VAE_PARTS = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")
_ATTENTION = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}


def is_ldm_layout(keys) -> bool:
    """True when tensor names are the original Stable Diffusion VAE's (``encoder.down.0.block.0...``)."""
    return any(k.startswith(("encoder.down.", "decoder.up.", "encoder.mid.", "decoder.mid.")) for k in keys)


def _own_names(names) -> tuple[str, list[str]]:
    """(prefix, the VAE's own names without it) of a file's tensor names: a whole checkpoint's
    ``first_stage_model.*`` part, the loss tensors dropped."""
    for prefix in CHECKPOINT_PREFIXES:
        if any(k.startswith(prefix + "encoder.") for k in names):
            names = [k[len(prefix):] for k in names if k.startswith(prefix)]
            break
    else:
        prefix = ""
    return prefix, [k for k in names if not k.startswith(TRAINING_ONLY_PREFIXES)]


def check_vae_names(names, path: Path) -> None:
    """Refuse a file whose tensor names hold no encoder/decoder tensor: it is not a VAE (a UNet, a LoRA, a text
    encoder...). Only names: what a safetensors header tells without reading a tensor."""
    _, own = _own_names(list(names))
    if not any(k.startswith(("encoder.", "decoder.")) for k in own):
        sample = sorted(own)[:3]
        raise WrongModelError(
            f"{path} is not a VAE: it holds no encoder./decoder. tensors (its first tensors: {sample}). Pass SD1.5's "
            "VAE with --vae (a diffusers vae/ folder, or one .safetensors file in diffusers' or the original Stable "
            "Diffusion layout, e.g. vae-ft-mse-840000-ema-pruned.safetensors).")


def vae_tensors(sd: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """The VAE's own tensors of a file: a checkpoint's ``first_stage_model.*`` part, the loss tensors dropped.

    A file without any encoder/decoder tensor is not a VAE (a UNet, a LoRA, a text encoder...): refused, naming it.
    """
    check_vae_names(sd, path)
    prefix, own = _own_names(list(sd))
    return {name: sd[prefix + name] for name in own}


def ldm_to_diffusers(sd: dict[str, torch.Tensor], up_blocks: int) -> dict[str, torch.Tensor]:
    """LDM VAE names → diffusers' AutoencoderKL names; ``up_blocks`` = len(config up_block_types) (4 for SD1.5)."""
    return {_rename(key, up_blocks): _linear_if_attention(key, value) for key, value in sd.items()}


def _rename(key: str, up_blocks: int) -> str:
    m = re.match(r"(encoder|decoder)\.(.*)$", key)
    if not m:
        return key   # quant_conv / post_quant_conv: same names
    part, rest = m.groups()
    rules = (
        (r"down\.(\d+)\.block\.(\d+)\.(.*)", lambda g: f"down_blocks.{g[0]}.resnets.{g[1]}.{_resnet(g[2])}"),
        (r"down\.(\d+)\.downsample\.conv\.(.*)", lambda g: f"down_blocks.{g[0]}.downsamplers.0.conv.{g[1]}"),
        (r"up\.(\d+)\.block\.(\d+)\.(.*)",
         lambda g: f"up_blocks.{up_blocks - 1 - int(g[0])}.resnets.{g[1]}.{_resnet(g[2])}"),
        (r"up\.(\d+)\.upsample\.conv\.(.*)", lambda g: f"up_blocks.{up_blocks - 1 - int(g[0])}.upsamplers.0.conv.{g[1]}"),
        (r"mid\.block_(\d+)\.(.*)", lambda g: f"mid_block.resnets.{int(g[0]) - 1}.{_resnet(g[1])}"),
        (r"mid\.attn_1\.(norm|q|k|v|proj_out)\.(.*)", lambda g: f"mid_block.attentions.0.{_ATTENTION[g[0]]}.{g[1]}"),
        (r"norm_out\.(.*)", lambda g: f"conv_norm_out.{g[0]}"),
    )
    for pattern, make in rules:
        found = re.fullmatch(pattern, rest)
        if found:
            return f"{part}.{make(found.groups())}"
    return key   # conv_in, conv_out: same names


def _resnet(name: str) -> str:
    return name.replace("nin_shortcut", "conv_shortcut")


def _linear_if_attention(key: str, value: torch.Tensor) -> torch.Tensor:
    """LDM's attention projections are 1x1 convolutions [C, C, 1, 1]; diffusers' are linear layers [C, C]."""
    if ".mid.attn_1." in key and key.endswith(".weight") and value.ndim > 2:
        return value.reshape(value.shape[0], value.shape[1])
    return value


def to_diffusers_names(sd: dict[str, torch.Tensor], config: dict, path: Path) -> dict[str, torch.Tensor]:
    """The VAE tensors of any accepted single file, in diffusers' names (a diffusers-named file passes unchanged)."""
    sd = vae_tensors(sd, path)
    if is_ldm_layout(sd):
        sd = ldm_to_diffusers(sd, len(config.get("up_block_types", ())))
    return sd
