"""Write a random-weight Arc2Face encoder in the real Hugging Face layout.

``encoder/config.json`` as transformers 4.x wrote it for SD1.5's text encoder (eos_token_id 2, quick_gelu), and
``encoder/pytorch_model.bin``: a zip-format torch pickle of a flat state dict with ``text_model.*`` keys — the layout of
the real 492 MB file. Every tensor is random (LayerNorm weights near 1), so a swapped or skipped tensor shows.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

# The fields of SD1.5's text_encoder/config.json (CLIP ViT-L/14 text tower), which Arc2Face fine-tuned.
SD15_TEXT_CONFIG = {
    "_name_or_path": "openai/clip-vit-large-patch14",
    "architectures": ["CLIPTextModel"],
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "dropout": 0.0,
    "eos_token_id": 2,
    "hidden_act": "quick_gelu",
    "hidden_size": 768,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "model_type": "clip_text_model",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 1,
    "projection_dim": 768,
    "torch_dtype": "float32",
    "transformers_version": "4.34.1",
}

TINY = {"num_hidden_layers": 2, "intermediate_size": 128}


def random_text_model_state_dict(cfg: dict, seed: int) -> dict[str, torch.Tensor]:
    """A random state dict with exactly the keys and shapes of transformers' CLIPTextModel (``text_model.*``)."""
    g = torch.Generator().manual_seed(seed)
    d, ff, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]

    def rnd(*shape, std=0.02, mean=0.0):
        return torch.randn(*shape, generator=g) * std + mean

    sd = {
        "text_model.embeddings.token_embedding.weight": rnd(cfg["vocab_size"] if "vocab_size" in cfg else 49408, d,
                                                            std=0.05),
        "text_model.embeddings.position_embedding.weight": rnd(cfg["max_position_embeddings"], d, std=0.05),
    }
    for i in range(layers):
        p = f"text_model.encoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            sd[f"{p}self_attn.{proj}.weight"] = rnd(d, d, std=0.04)
            sd[f"{p}self_attn.{proj}.bias"] = rnd(d, std=0.02)
        for ln in ("layer_norm1", "layer_norm2"):
            sd[f"{p}{ln}.weight"] = rnd(d, std=0.1, mean=1.0)
            sd[f"{p}{ln}.bias"] = rnd(d, std=0.1)
        sd[f"{p}mlp.fc1.weight"] = rnd(ff, d, std=0.04)
        sd[f"{p}mlp.fc1.bias"] = rnd(ff, std=0.02)
        sd[f"{p}mlp.fc2.weight"] = rnd(d, ff, std=0.04)
        sd[f"{p}mlp.fc2.bias"] = rnd(d, std=0.02)
    sd["text_model.final_layer_norm.weight"] = rnd(d, std=0.1, mean=1.0)
    sd["text_model.final_layer_norm.bias"] = rnd(d, std=0.1)
    return sd


def write_encoder(arc2face_root: Path, *, seed: int = 0, fmt: str = "bin", full_size: bool = False,
                  with_position_ids: bool = True, dtype: torch.dtype = torch.float32) -> Path:
    """Write ``<root>/encoder/{config.json, pytorch_model.bin | model.safetensors}``; returns the weights path.

    ``with_position_ids`` adds the ``position_ids`` buffer that transformers 4.x saved in such files.
    """
    cfg = dict(SD15_TEXT_CONFIG, vocab_size=49408)
    if not full_size:
        cfg.update(TINY)
    folder = Path(arc2face_root) / "encoder"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    sd = {k: v.to(dtype) for k, v in random_text_model_state_dict(cfg, seed).items()}
    if with_position_ids:
        sd["text_model.embeddings.position_ids"] = torch.arange(77).unsqueeze(0)
    if fmt == "bin":
        path = folder / "pytorch_model.bin"
        torch.save(sd, path)
    elif fmt == "safetensors":
        from safetensors.torch import save_file

        sd.pop("text_model.embeddings.position_ids", None)
        path = folder / "model.safetensors"
        save_file(sd, str(path), metadata={"format": "pt"})
    else:
        raise ValueError(fmt)
    return path
