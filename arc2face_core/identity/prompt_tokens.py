"""The pseudo-prompt Arc2Face was trained with, as CLIP token ids.

The encoder is overfitted to "photo of a id person": the ids are constants, so no tokenizer (and no download) is
needed. They are the SD1 CLIP BPE vocabulary ids; tests/test_prompt_tokens.py checks them against the vocabulary file.
"""

from __future__ import annotations

import torch

BOS = 49406            # <|startoftext|>
EOS = 49407            # <|endoftext|>, also the padding token of SD1's tokenizer
MAX_LENGTH = 77        # CLIP text context length

PSEUDO_PROMPT = "photo of a id person"
PSEUDO_PROMPT_IDS = (BOS, 1125, 539, 320, 1014, 2533, EOS)   # photo, of, a, id, person
ID_TOKEN = 1014        # "id": its token embedding is replaced by the ArcFace vector
ID_POSITION = 4        # index of the "id" token in the padded sequence

EMPTY_PROMPT_IDS = (BOS, EOS)    # "" : the negative for classifier-free guidance


def padded_ids(ids: tuple[int, ...], length: int = MAX_LENGTH) -> torch.Tensor:
    """Pad with EOS to ``length`` (SD1's tokenizer pads with <|endoftext|>): a LongTensor of shape [length]."""
    if len(ids) > length:
        raise ValueError(f"{len(ids)} tokens do not fit into {length} positions")
    return torch.tensor(list(ids) + [EOS] * (length - len(ids)), dtype=torch.long)


def first_eos_position(ids: tuple[int, ...]) -> int:
    """Where the pooled output is read (the first <|endoftext|>), as transformers' CLIPTextModel does."""
    return ids.index(EOS)
