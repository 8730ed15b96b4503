"""Reference attention: the self-attention keys/values of a sampler batch with the stored reference tokens added to
its conditional rows.

The reference runs ``attn1(query=n, key=value=cat([n, bank]))`` on conditional rows and plain self-attention on
unconditional ones, in two calls. A host that runs one attention over the whole batch (ComfyUI) needs one K/V length
for every row: attending to ``m`` copies of the own tokens equals attending to them once (every key ``m`` times, each
softmax weight divided by ``m``, the same values), so unconditional rows get their own tokens ``1 + Tr/T`` times
(``T`` own tokens, ``Tr`` stored ones) and stay exactly what plain self-attention gives. That needs ``Tr`` to be a
whole multiple of ``T`` in every block, which holds when the reference has the generated size (or a whole multiple of
its area).
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..batching import IdentityLayout, chunk_layout, per_row
from ..errors import InvalidInputError


def _size_text(size: Sequence[int] | None) -> str:
    return f"{size[1]}x{size[0]} cells ({size[1] * 8}x{size[0] * 8} pixels)" if size else "of another size"


def extend_self_attention(context: torch.Tensor, value: torch.Tensor, bank: torch.Tensor,
                          cond_or_uncond: Sequence[int] | None, layout: IdentityLayout | None, *,
                          reference_size: Sequence[int] | None = None,
                          generated_size: Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(keys, values) inputs [B, T+Tr, C] of one block's self-attention with the reference added.

    ``context``/``value`` [B, T, C]: the block's own tokens (``norm1`` output). ``bank`` [banks, Tr, C]: the stored
    tokens, one bank per identity (or one for all). The batch is ``len(cond_or_uncond)`` equal chunks, 0 = cond,
    1 = uncond (None: all conditional); ``layout`` says which rows of a chunk belong to which identity (None = one
    identity per row, the stock KSampler). Conditional rows get ``cat(own, their identity's bank)``, unconditional
    rows their own tokens repeated. A batch without conditional rows is returned unchanged.
    """
    chunks = [0] if cond_or_uncond is None else list(cond_or_uncond)
    if not chunks or any(c not in (0, 1) for c in chunks):
        raise InvalidInputError(f"cond_or_uncond must list 0 (cond) and 1 (uncond), got {cond_or_uncond!r}")
    if context.ndim != 3 or value.shape[:2] != context.shape[:2] or bank.ndim != 3 \
            or bank.shape[-1] != context.shape[-1]:
        raise InvalidInputError(f"tokens {list(context.shape)} / {list(value.shape)} and stored tokens "
                                f"{list(bank.shape)} do not fit: they need shapes [B, T, C] and [banks, Tr, C]")
    batch, own = context.shape[:2]
    if batch % len(chunks):
        raise InvalidInputError(f"a batch of {batch} cannot be split into {len(chunks)} equal cond/uncond chunks")
    stored_count = bank.shape[1]
    if stored_count % own:
        raise InvalidInputError(
            f"the reference latent is {_size_text(reference_size)} and the latent being generated "
            f"{_size_text(generated_size)}: in a block they give {stored_count} and {own} tokens, and the reference "
            "must give the same number or a whole multiple (so that conditional and unconditional rows keep one "
            "attention length). Encode the reference at the size you generate (Face Align's size).")
    if 0 not in chunks:
        return context, value
    rows = batch // len(chunks)
    stored = per_row(bank, chunk_layout(layout, rows), "reference", "references").to(context.device, context.dtype)
    copies = 1 + stored_count // own

    def extend(tokens: torch.Tensor) -> torch.Tensor:
        parts = []
        for i, kind in enumerate(chunks):
            mine = tokens[i * rows:(i + 1) * rows]
            parts.append(mine.repeat(1, copies, 1) if kind else torch.cat([mine, stored], dim=1))
        return torch.cat(parts)

    keys = extend(context)
    return keys, (keys if value is context else extend(value))
