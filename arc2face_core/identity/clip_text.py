"""A CLIP text transformer that reads transformers' ``CLIPTextModel`` checkpoints (``text_model.*`` keys).

Why not transformers' class itself: Arc2Face feeds token *embeddings* (not ids) into the tower, which
``CLIPTextModel.forward`` does not accept, and the internals one would have to call (causal-mask helpers, attention
interfaces) change between transformers releases that ComfyUI users have installed. This module is small, uses
PyTorch's fused attention, and its parameter names mirror transformers' so the real file loads with ``strict=True``.
Tests compare it with transformers' ``CLIPTextModel`` on the same weights.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ClipTextConfig:
    """The fields of transformers' CLIPTextConfig that shape the network. Defaults: CLIP ViT-L/14 (SD1.5)."""

    vocab_size: int = 49408
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ClipTextConfig":
        # A full CLIPConfig nests the text tower under "text_config".
        data = data.get("text_config", data)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "ClipTextConfig":
        with open(path, encoding="utf-8") as fh:
            return cls.from_dict(json.load(fh))

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor], prefix: str = "text_model.") -> "ClipTextConfig":
        """Derive the shape from the weights alone (used when config.json is absent)."""
        vocab, hidden = sd[f"{prefix}embeddings.token_embedding.weight"].shape
        positions = sd[f"{prefix}embeddings.position_embedding.weight"].shape[0]
        layer_ids = {int(k[len(prefix):].split(".")[2]) for k in sd if k.startswith(f"{prefix}encoder.layers.")}
        intermediate = sd[f"{prefix}encoder.layers.0.mlp.fc1.weight"].shape[0]
        # CLIP text towers use 64-dimensional heads (ViT-L/14: 768 = 12 x 64).
        return cls(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
                   num_hidden_layers=len(layer_ids), num_attention_heads=max(1, hidden // 64),
                   max_position_embeddings=positions)


def _activation(name: str):
    if name == "quick_gelu":
        return lambda x: x * torch.sigmoid(1.702 * x)
    if name in ("gelu", "gelu_python"):
        return F.gelu
    raise ValueError(f"unsupported CLIP activation {name!r}")


class _Embeddings(nn.Module):
    def __init__(self, cfg: ClipTextConfig, ops):
        super().__init__()
        self.token_embedding = ops.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embedding = ops.Embedding(cfg.max_position_embeddings, cfg.hidden_size)

    def forward(self, token_embeds: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(token_embeds.shape[1], device=token_embeds.device)
        return token_embeds + self.position_embedding(positions).to(token_embeds.dtype)


class _SelfAttention(nn.Module):
    def __init__(self, cfg: ClipTextConfig, ops):
        super().__init__()
        self.heads = cfg.num_attention_heads
        d = cfg.hidden_size
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (ops.Linear(d, d) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.heads, d // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x)),
                                             is_causal=True)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d))


class _Mlp(nn.Module):
    def __init__(self, cfg: ClipTextConfig, ops):
        super().__init__()
        self.fc1 = ops.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc2 = ops.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.act = _activation(cfg.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _EncoderLayer(nn.Module):
    def __init__(self, cfg: ClipTextConfig, ops):
        super().__init__()
        self.self_attn = _SelfAttention(cfg, ops)
        self.layer_norm1 = ops.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = _Mlp(cfg, ops)
        self.layer_norm2 = ops.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class _Encoder(nn.Module):
    def __init__(self, cfg: ClipTextConfig, ops):
        super().__init__()
        self.layers = nn.ModuleList(_EncoderLayer(cfg, ops) for _ in range(cfg.num_hidden_layers))


class _TextTransformer(nn.Module):
    def __init__(self, cfg: ClipTextConfig, ops):
        super().__init__()
        self.embeddings = _Embeddings(cfg, ops)
        self.encoder = _Encoder(cfg, ops)
        self.final_layer_norm = ops.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)


class SkipInit:
    """``torch.nn``'s Linear, LayerNorm and Embedding without their random initialisation, for a tower whose every
    weight comes from a file. On the meta device the init computes nothing, but ``Embedding``'s ``normal_`` there
    goes through torch's Python reference kernels, whose first use imports torch._dynamo: seconds and hundreds of
    MiB for nothing."""

    class Linear(nn.Linear):
        def reset_parameters(self) -> None:
            pass

    class LayerNorm(nn.LayerNorm):
        def reset_parameters(self) -> None:
            pass

    class Embedding(nn.Embedding):
        def reset_parameters(self) -> None:
            pass


class ClipTextTower(nn.Module):
    """CLIP's text transformer driven by token embeddings: causal self-attention, no padding mask, final LayerNorm.

    ``operations``: any namespace with ``Linear``, ``LayerNorm`` and ``Embedding`` classes (default ``torch.nn``),
    so a host such as ComfyUI can plug in its weight-casting layers for low-VRAM loading.
    """

    def __init__(self, cfg: ClipTextConfig, operations=None):
        super().__init__()
        self.config = cfg
        self.text_model = _TextTransformer(cfg, operations if operations is not None else nn)

    def token_embeddings(self, ids: torch.Tensor) -> torch.Tensor:
        """The learned token embeddings (before positions are added) for integer ``ids``."""
        return self.text_model.embeddings.token_embedding(ids)

    def forward(self, token_embeds: torch.Tensor) -> torch.Tensor:
        """``token_embeds`` [N, T, hidden] → ``last_hidden_state`` after the final LayerNorm, [N, T, hidden]."""
        x = self.text_model.embeddings(token_embeds)
        for layer in self.text_model.encoder.layers:
            x = layer(x)
        return self.text_model.final_layer_norm(x)
