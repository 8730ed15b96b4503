"""Reference attention's keys/values: conditional rows get their identity's stored tokens, unconditional rows keep
exactly the attention they had, one K/V length for the whole batch; references, identities and latents checked."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from arc2face_core.batching import IdentityLayout
from arc2face_core.errors import InvalidInputError
from arc2face_core.reference.attention import extend_self_attention
from arc2face_core.reference.banks import BankRecorder, ReferenceBanks, bank_sources, check_reference_latent


def attention(q, kv, heads=2):
    b, _, c = q.shape
    split = [t.reshape(b, -1, heads, c // heads).transpose(1, 2) for t in (q, kv, kv)]
    return F.scaled_dot_product_attention(*split).transpose(1, 2).reshape(b, -1, c)


def test_attending_to_repeated_own_tokens_equals_plain_self_attention():
    """The fact the uncond rows rely on: m copies of every key/value leave softmax attention unchanged."""
    g = torch.Generator().manual_seed(0)
    n = torch.randn(3, 16, 8, generator=g, dtype=torch.float64)
    plain = attention(n, n)
    for copies in (2, 5):
        torch.testing.assert_close(attention(n, n.repeat(1, copies, 1)), plain, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(attention(n, torch.cat([n, n[:, :4]], 1)), plain)   # uneven copies do change it


def _tokens(batch, count, seed, width=8):
    return torch.randn(batch, count, width, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_cond_rows_get_their_identitys_bank_and_uncond_rows_attend_as_before():
    """2 identities x 2 images; ComfyUI's order [uncond chunk, cond chunk]."""
    own, bank = _tokens(8, 16, 1), _tokens(2, 16, 2)
    keys, values = extend_self_attention(own, own, bank, [1, 0], IdentityLayout(2, 2))
    assert keys.shape == (8, 32, 8) and values is keys
    for row in range(4):                                   # uncond chunk: own tokens twice
        torch.testing.assert_close(keys[row], own[row].repeat(2, 1), rtol=0, atol=0)
    for row in range(4, 8):                                # cond chunk rows 0,1 -> identity 0; rows 2,3 -> identity 1
        torch.testing.assert_close(keys[row], torch.cat([own[row], bank[(row - 4) // 2]]), rtol=0, atol=0)
    # the attention each row gets: cond = attention over cat(own, its bank), uncond = plain self-attention
    out = attention(own, keys)
    torch.testing.assert_close(out[:4], attention(own[:4], own[:4]), rtol=1e-12, atol=1e-12)
    reference = torch.stack([attention(own[r:r + 1], torch.cat([own[r:r + 1], bank[(r - 4) // 2][None]], 1))[0]
                             for r in range(4, 8)])
    torch.testing.assert_close(out[4:], reference, rtol=1e-12, atol=1e-12)


def test_a_larger_reference_repeats_uncond_tokens_to_the_same_length():
    own, bank = _tokens(2, 16, 3), _tokens(1, 64, 4)        # reference 4x the generated area
    keys, values = extend_self_attention(own, own.flip(0), bank, [0, 1], None)
    assert keys.shape == values.shape == (2, 80, 8)
    torch.testing.assert_close(attention(own[1:], keys[1:]), attention(own[1:], own[1:]), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(values[0], torch.cat([own[1], bank[0]]), rtol=0, atol=0)   # value extended on its own


def test_without_a_layout_every_row_is_its_own_identity_and_uncond_only_batches_pass_through():
    own, bank = _tokens(3, 4, 5), _tokens(3, 4, 6)
    keys, _ = extend_self_attention(own, own, bank, [0], None)
    for row in range(3):
        torch.testing.assert_close(keys[row], torch.cat([own[row], bank[row]]), rtol=0, atol=0)
    same, _ = extend_self_attention(own, own, bank, [1], None)
    assert same is own
    all_cond, _ = extend_self_attention(own, own, bank, None, None)       # no cond_or_uncond: all conditional
    torch.testing.assert_close(all_cond, keys, rtol=0, atol=0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(bank=_tokens(2, 16, 7), cond_or_uncond=[0, 1], layout=IdentityLayout(3, 1)),
     "2 references for 3 identities × 1 image per identity: give 1 reference (for every image) or 3"),
    (dict(bank=_tokens(1, 24, 7), cond_or_uncond=[0, 1], layout=None, reference_size=(12, 8), generated_size=(8, 8)),
     "reference latent is 8x12 cells (64x96 pixels) and the latent being generated 8x8 cells (64x64 pixels): in a "
     "block they give 24 and 16 tokens"),
    (dict(bank=_tokens(1, 16, 7), cond_or_uncond=[0, 2], layout=None), "cond_or_uncond must list 0"),
    (dict(bank=_tokens(1, 16, 7)[..., :4], cond_or_uncond=[0], layout=None), "do not fit"),
    (dict(bank=_tokens(1, 16, 7), cond_or_uncond=[0, 1, 1, 0], layout=None), "cannot be split into 4 equal"),
])
def test_mismatches_are_errors_in_words(kwargs, message):
    own = _tokens(6, 16, 8)
    with pytest.raises(InvalidInputError, match=re.escape(message)):
        extend_self_attention(own, own, **kwargs)


def test_bank_sources_pair_references_with_identities():
    assert bank_sources(1, 3) == [(0, 0), (0, 1), (0, 2)]
    assert bank_sources(3, 3) == [(0, 0), (1, 1), (2, 2)]
    assert bank_sources(2, 1) == [(0, 0), (1, 0)]          # the stock KSampler: a latent per reference
    with pytest.raises(InvalidInputError, match=r"2 references for 3 identities: give 1 reference \(for every "
                                                r"identity\) or 3 \(one per identity"):
        bank_sources(2, 3)


@pytest.mark.parametrize("samples, message", [
    (torch.zeros(1, 16, 64, 64), "has 16 channels; Arc2Face's SD1.5 UNet takes 4"),
    (torch.zeros(1, 4, 2, 64, 64), r"must have shape \[batch, 4, height/8, width/8\], got \[1, 4, 2, 64, 64\]"),
    (torch.zeros(0, 4, 64, 64), "must have shape"),
    (torch.zeros(1, 4, 4, 64), r"is 64x4 cells \(512x32 pixels\); it must be at least 8x8"),
    (torch.full((2, 4, 8, 8), float("nan")), r"rows \[1, 2\] contain NaN"),
    (torch.zeros(1, 4, 8, 8, dtype=torch.int64), "must be floating point"),
    ([[0.0]], "must be a LATENT"),
])
def test_bad_reference_latents_are_refused(samples, message):
    with pytest.raises(InvalidInputError, match=message):
        check_reference_latent(samples)


def test_banks_keep_what_the_recorder_saw():
    recorder = BankRecorder()
    a, b = torch.randn(2, 16, 8), torch.randn(2, 4, 16)
    recorder.record(("input", 1, 0), a)
    recorder.record(("middle", 0, 0), b)
    with pytest.raises(InvalidInputError, match="reached block"):
        recorder.record(("input", 1, 0), a)
    banks = recorder.banks((4, 4))
    assert isinstance(banks, ReferenceBanks) and banks.count == 2 and banks.latent_size == (4, 4)
    assert torch.equal(banks[("input", 1, 0)], a) and torch.equal(banks[("middle", 0, 0)], b)
    assert not any(p.requires_grad for p in banks.parameters())
    assert ("output", 3, 0) not in banks
