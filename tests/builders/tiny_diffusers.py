"""A tiny random UNet2DConditionModel and AutoencoderKL in diffusers' real file layouts, for the headless pipeline.

* UNet: ``<arc2face root>/arc2face/{config.json, diffusion_pytorch_model.safetensors}``, the layout of the Hugging Face
  repo. cross_attention_dim stays 768 because the ID encoder outputs 768-d tokens; two blocks, so the UNet
  downsamples latents by 2.
* VAE: a diffusers folder ``{config.json, diffusion_pytorch_model.safetensors}`` (the ``vae/`` folder of
  stable-diffusion-v1-5) and the same weights saved alone as one ``.safetensors`` file (what ComfyUI's models/vae
  holds). Two blocks, so it scales images by 2, not SD1.5's 8: the pipeline must read the factor from the config.

Tensor names and shapes come from diffusers' own classes built on the meta device (``sd15_random``), never hand-listed.
Values are seeded random, scaled by 1/sqrt(fan_in), so a swapped or skipped tensor changes the output.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

# stable-diffusion-v1-5's scheduler/scheduler_config.json, written out here: the reference pipelines of the tests are
# built from it (the reference's DPMSolverMultistepScheduler.from_config(<this>)), never from the pack's own copy.
SD15_SCHEDULER_CONFIG = {
    "_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
    "clip_sample": False, "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True,
    "steps_offset": 1, "trained_betas": None,
}

from builders.sd15_random import _init_args, random_like_module, write_unet

TINY_UNET_CONFIG = {
    "_class_name": "UNet2DConditionModel",
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [32, 64],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 1,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 8,
    "out_channels": 4,
    "sample_size": 8,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
}

TINY_VAE_CONFIG = {
    "_class_name": "AutoencoderKL",
    "act_fn": "silu",
    "block_out_channels": [8, 16],
    "down_block_types": ["DownEncoderBlock2D"] * 2,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "out_channels": 3,
    "sample_size": 64,
    "scaling_factor": 0.18215,
    "up_block_types": ["UpDecoderBlock2D"] * 2,
}
TINY_VAE_SCALE = 2 ** (len(TINY_VAE_CONFIG["block_out_channels"]) - 1)

# diffusers < 0.14 named the VAE's mid-block attention projections like this; SD1.5's VAE file was saved then.
LEGACY_ATTENTION_NAMES = {"to_q.": "query.", "to_k.": "key.", "to_v.": "value.", "to_out.0.": "proj_attn."}


def write_tiny_unet(arc2face_root: Path, *, seed: int = 0) -> Path:
    """``<arc2face_root>/arc2face/{config.json, diffusion_pytorch_model.safetensors}`` (fp32); returns the weights."""
    return write_unet(Path(arc2face_root) / "arc2face", config=TINY_UNET_CONFIG, seed=seed, dtype=torch.float32)


def tiny_vae_state_dict(seed: int = 1) -> dict[str, torch.Tensor]:
    from diffusers import AutoencoderKL

    with torch.device("meta"):
        vae = AutoencoderKL(**_init_args(TINY_VAE_CONFIG))
    return random_like_module(vae, seed, torch.float32, gain=0.5)


def _save(sd: dict[str, torch.Tensor], path: Path) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path), metadata={"format": "pt"})
    return path


def write_tiny_vae_folder(folder: Path, *, seed: int = 1) -> Path:
    """``<folder>/{config.json, diffusion_pytorch_model.safetensors}``; returns the folder."""
    folder = Path(folder)
    _save(tiny_vae_state_dict(seed), folder / "diffusion_pytorch_model.safetensors")
    (folder / "config.json").write_text(json.dumps(TINY_VAE_CONFIG, indent=2))
    return folder


def write_tiny_vae_file(path: Path, *, seed: int = 1, legacy_attention_names: bool = False) -> Path:
    """The same weights as ``write_tiny_vae_folder(seed=...)`` in one file; optionally with pre-0.14 attention names."""
    sd = tiny_vae_state_dict(seed)
    if legacy_attention_names:
        renamed = {}
        for key, value in sd.items():
            if ".mid_block.attentions." in key:
                for new, old in LEGACY_ATTENTION_NAMES.items():
                    key = key.replace(new, old)
            renamed[key] = value
        sd = renamed
    return _save(sd, Path(path))


# ------------------------------------------------------------------------------------- tiny pose ControlNet
# The tiny UNet's architecture (its residuals must fit the UNet's skip connections). The hint embedding downsamples by
# 2 ** (len(conditioning_embedding_out_channels) - 1) = 2, the tiny VAE's factor (SD1.5: 4 entries, 8), so a 64x64
# hint meets 32x32 latents.
TINY_CONTROLNET_CONFIG = {
    "_class_name": "ControlNetModel",
    **{k: TINY_UNET_CONFIG[k] for k in ("act_fn", "attention_head_dim", "block_out_channels", "cross_attention_dim",
                                         "down_block_types", "downsample_padding", "flip_sin_to_cos", "freq_shift",
                                         "in_channels", "layers_per_block", "mid_block_scale_factor", "norm_eps",
                                         "norm_num_groups")},
    "conditioning_embedding_out_channels": [4, 8],
    "controlnet_conditioning_channel_order": "rgb",
}
assert 2 ** (len(TINY_CONTROLNET_CONFIG["conditioning_embedding_out_channels"]) - 1) == TINY_VAE_SCALE


# Gain of the hint embedding's weights (a stack of convolutions from the hint to the first feature map). At the
# common 0.5 its output would be ~1/50 of the UNet's conv_in features and every hint would look alike; at 1.5 it is of
# the same order, so different poses give visibly different images, as with the trained model.
HINT_EMBEDDING_GAIN = 1.5


def tiny_controlnet_state_dict(seed: int = 2, config: dict | None = None) -> dict[str, torch.Tensor]:
    """Every tensor random, the zero convolutions included: a trained ControlNet's are not zero."""
    from diffusers import ControlNetModel

    with torch.device("meta"):
        controlnet = ControlNetModel(**_init_args(config or TINY_CONTROLNET_CONFIG))
    sd = random_like_module(controlnet, seed, torch.float32, gain=0.5)
    for name in sd:
        if name.startswith("controlnet_cond_embedding.") and name.endswith(".weight"):
            sd[name] = sd[name] * (HINT_EMBEDDING_GAIN / 0.5)
    return sd


def write_tiny_controlnet(arc2face_root: Path, *, seed: int = 2, config: dict | None = None) -> Path:
    """``<arc2face_root>/controlnet/{config.json, diffusion_pytorch_model.safetensors}`` (fp32); returns the weights."""
    config = config or TINY_CONTROLNET_CONFIG
    folder = Path(arc2face_root) / "controlnet"
    weights = _save(tiny_controlnet_state_dict(seed, config), folder / "diffusion_pytorch_model.safetensors")
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return weights


# ------------------------------------------------------------------------ the original Stable Diffusion VAE layout
def _ldm_name(key: str, up_blocks: int) -> str:
    """diffusers' AutoencoderKL name → the LDM name (as in vae-ft-mse-840000-ema-pruned.safetensors)."""
    import re

    attention = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    rules = (
        (r"(encoder|decoder)\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", lambda g: f"{g[0]}.down.{g[1]}.block.{g[2]}.{g[3]}"),
        (r"(encoder|decoder)\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", lambda g: f"{g[0]}.down.{g[1]}.downsample.conv.{g[2]}"),
        (r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)",
         lambda g: f"decoder.up.{up_blocks - 1 - int(g[0])}.block.{g[1]}.{g[2]}"),
        (r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)",
         lambda g: f"decoder.up.{up_blocks - 1 - int(g[0])}.upsample.conv.{g[1]}"),
        (r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", lambda g: f"{g[0]}.mid.block_{int(g[1]) + 1}.{g[2]}"),
        (r"(encoder|decoder)\.mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(.*)",
         lambda g: f"{g[0]}.mid.attn_1.{attention[g[1]]}.{g[2]}"),
        (r"(encoder|decoder)\.conv_norm_out\.(.*)", lambda g: f"{g[0]}.norm_out.{g[1]}"),
    )
    for pattern, make in rules:
        found = re.fullmatch(pattern, key)
        if found:
            return make(found.groups()).replace("conv_shortcut", "nin_shortcut")
    return key


def ldm_vae_state_dict(sd: dict[str, torch.Tensor], up_blocks: int, prefix: str = "") -> dict[str, torch.Tensor]:
    """The LDM layout of a diffusers VAE state dict; attention projections as 1x1 convolutions, as LDM stores them."""
    out = {}
    for key, value in sd.items():
        name = _ldm_name(key, up_blocks)
        if ".mid.attn_1." in name and name.endswith(".weight") and value.ndim == 2:
            value = value[:, :, None, None]
        out[prefix + name] = value.clone()
    return out


def write_tiny_vae_ldm_file(path: Path, *, seed: int = 1, prefix: str = "",
                            extra: dict[str, torch.Tensor] | None = None) -> Path:
    """``write_tiny_vae_file``'s weights in the original Stable Diffusion layout (``prefix`` "first_stage_model." for
    the VAE inside a whole checkpoint; ``extra`` tensors are added as they are, e.g. a checkpoint's UNet part)."""
    sd = ldm_vae_state_dict(tiny_vae_state_dict(seed), len(TINY_VAE_CONFIG["up_block_types"]), prefix)
    sd.update(extra or {})
    return _save(sd, Path(path))
