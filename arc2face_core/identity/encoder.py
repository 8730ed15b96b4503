"""The Arc2Face ID encoder: ArcFace vectors → SD1.5 conditioning, exactly as the paper and reference code do it.

1. Token ids of "photo of a id person", padded to 77 with <|endoftext|>.
2. The encoder's token embeddings for those ids; the row of the "id" token is replaced by the ArcFace vector
   zero-padded at the end from 512 to the hidden size (768).
3. The fine-tuned CLIP text tower runs on these embeddings (positions added, causal mask, no padding mask);
   the output is ``last_hidden_state`` after the final LayerNorm: [N, 77, 768].
The negative for classifier-free guidance is the same encoder run on the empty prompt "".
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable

import torch

from ..checkpoints import check_finite, load_state_dict
from ..errors import CorruptWeightsError
from ..weights import ENCODER, HF_URL, find_weight, safe_join
from . import prompt_tokens as tok
from .clip_text import ClipTextConfig, ClipTextTower, SkipInit
from .embeddings import ARCFACE_DIM, unit_rows, validate_embeds

log = logging.getLogger(__name__)

_PREFIX = "text_model."
_TOKEN_TABLE = "text_model.embeddings.token_embedding.weight"
# The only rows of the token table the encoder ever reads: the pseudo-prompt's and the empty prompt's ids.
_USED_TOKENS = sorted(set(tok.PSEUDO_PROMPT_IDS + tok.EMPTY_PROMPT_IDS))
# Buffers older transformers versions saved with the weights; they carry no learned values.
_IGNORED_KEYS = {"text_model.embeddings.position_ids"}


class Arc2FaceIDEncoder(ClipTextTower):
    """The fine-tuned CLIP text tower with Arc2Face's identity projection."""

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    def _run(self, ids: tuple[int, ...], token_embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self(token_embeds)
        pooled = hidden[:, tok.first_eos_position(ids)]
        return hidden, pooled

    def identity_token_embeddings(self, embeds: torch.Tensor) -> torch.Tensor:
        """Step 2: pseudo-prompt token embeddings with the "id" row replaced by the padded ArcFace vector."""
        weight = self.text_model.embeddings.token_embedding.weight
        ids = tok.padded_ids(tok.PSEUDO_PROMPT_IDS).to(weight.device)
        rows = self.token_embeddings(ids).to(embeds.dtype).unsqueeze(0).repeat(embeds.shape[0], 1, 1)
        padded = torch.nn.functional.pad(embeds, (0, self.hidden_size - embeds.shape[1]))
        rows[:, tok.ID_POSITION] = padded
        return rows

    @torch.no_grad()
    def encode(self, embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ArcFace embeddings [N,512] → (conditioning [N,77,hidden], pooled [N,hidden]) in the encoder's dtype.

        Rows are L2-normalised first (the encoder was trained on unit vectors; a unit row is unchanged).
        """
        embeds = unit_rows(validate_embeds(embeds, "embeds"))   # overflow-safe: huge rows keep their direction
        weight = self.text_model.embeddings.token_embedding.weight
        token_embeds = self.identity_token_embeddings(embeds.to(device=weight.device, dtype=weight.dtype))
        return self._run(tok.PSEUDO_PROMPT_IDS, token_embeds)

    @torch.no_grad()
    def encode_empty(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The official negative: the encoder on "" → ([1,77,hidden], [1,hidden])."""
        ids = tok.padded_ids(tok.EMPTY_PROMPT_IDS).to(self.text_model.embeddings.token_embedding.weight.device)
        return self._run(tok.EMPTY_PROMPT_IDS, self.token_embeddings(ids).unsqueeze(0))


def _strip_to_text_model(sd: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """Accept the real layout (``text_model.*``) and a bare one (``embeddings.*``); drop known buffers."""
    if not any(k.startswith(_PREFIX) for k in sd):
        sd = {_PREFIX + k: v for k, v in sd.items()}
    return {k: v for k, v in sd.items() if k not in _IGNORED_KEYS}


def _config_for(sd: dict[str, torch.Tensor], config_path: Path | None, weights_path: Path) -> ClipTextConfig:
    if config_path is not None and config_path.is_file():
        try:
            return ClipTextConfig.from_json(config_path)
        except (ValueError, TypeError, OSError) as exc:
            raise CorruptWeightsError(f"{config_path} is not a readable CLIP text config ({exc}). "
                                      f"Download encoder/config.json again from {HF_URL}.") from exc
    log.warning("Arc2Face: %s has no config.json beside it; deriving the encoder shape from the weights.",
                weights_path)
    try:
        return ClipTextConfig.from_state_dict(sd)
    except (KeyError, IndexError, ValueError) as exc:
        raise CorruptWeightsError(f"{weights_path} does not look like a CLIP text encoder (missing {exc}). "
                                  f"Is it the Arc2Face encoder from {HF_URL}?") from exc


def load_id_encoder(weights_path: str | os.PathLike, config_path: str | os.PathLike | None = None,
                    dtype: torch.dtype = torch.float32, operations=None) -> Arc2FaceIDEncoder:
    """Build the encoder from ``config.json`` and load its weights strictly (every key, every shape).

    ``operations`` lets a host (ComfyUI) supply its own Linear/LayerNorm/Embedding classes; by default torch.nn's
    (without their random init). The weights stay memory-mapped (``read_checkpoint``) and become the parameters
    as they are: no second copy unless ``dtype`` differs from the file's.
    """
    weights_path = Path(weights_path)
    config_path = Path(config_path) if config_path is not None else weights_path.with_name("config.json")
    sd = _strip_to_text_model(load_state_dict(weights_path, source=HF_URL), weights_path)
    check_finite(_checked_part(sd), weights_path)
    cfg = _config_for(sd, config_path, weights_path)
    if cfg.hidden_size < ARCFACE_DIM:
        raise CorruptWeightsError(f"{weights_path}: hidden size {cfg.hidden_size} is smaller than the "
                                  f"{ARCFACE_DIM}-d ArcFace vector; this is not an Arc2Face encoder.")
    if cfg.max_position_embeddings < tok.MAX_LENGTH:
        raise CorruptWeightsError(f"{weights_path}: {cfg.max_position_embeddings} positions, need {tok.MAX_LENGTH}.")
    with torch.device("meta"):
        model = Arc2FaceIDEncoder(cfg, operations=operations if operations is not None else SkipInit)
    missing, unexpected = _key_diff(model, sd)
    if missing or unexpected:
        raise CorruptWeightsError(
            f"{weights_path} does not match the encoder described by {config_path.name}: "
            f"missing {len(missing)} tensors {missing[:4]}, unexpected {len(unexpected)} {unexpected[:4]}. "
            f"Is it Arc2Face's encoder/pytorch_model.bin from {HF_URL}?")
    try:
        model.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as exc:  # shape mismatches
        raise CorruptWeightsError(f"{weights_path} does not fit {config_path.name}: {exc}") from exc
    return model.to(dtype=dtype).eval().requires_grad_(False)


def _checked_part(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What the NaN/inf check reads: every tensor, but of the 49,408-row token table only the rows the encoder ever
    looks up (a NaN elsewhere in it cannot reach an output). The rest of the memory-mapped table is never read, so
    it never becomes resident memory (152 MB for the real encoder)."""
    table = sd.get(_TOKEN_TABLE)
    if table is None or table.ndim != 2 or table.shape[0] <= _USED_TOKENS[-1]:
        return sd   # a malformed table: the key and shape checks below name the problem
    checked = {k: v for k, v in sd.items() if k != _TOKEN_TABLE}
    checked[f"{_TOKEN_TABLE} (rows {', '.join(map(str, _USED_TOKENS))})"] = table[_USED_TOKENS]
    return checked


def _key_diff(model: torch.nn.Module, sd: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    expected = set(model.state_dict().keys())
    return sorted(expected - sd.keys()), sorted(sd.keys() - expected)


def find_id_encoder(arc2face_roots: Iterable[str | os.PathLike], *, download: bool = False) -> tuple[Path, Path]:
    """(weights, config.json) of the encoder under the arc2face roots; prefers model.safetensors over the pickle."""
    weights = find_weight(ENCODER, arc2face_roots, download=download)
    return weights, safe_join(weights.parent.parent, "encoder/config.json")
