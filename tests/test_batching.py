"""Several identities × several images: rows grouped by identity, shared tensors left to broadcast."""

from __future__ import annotations

import pytest
import torch

from arc2face_core.batching import (
    IdentityLayout,
    chunk_layout,
    empty_latent,
    expand_batch_index,
    expand_conditioning,
    expand_latent,
    expand_per_identity,
    identity_count,
    per_row,
    plural,
)
from arc2face_core.errors import InvalidInputError


def labelled(n: int, *shape: int) -> torch.Tensor:
    """Row i is filled with the value i, so the layout can be read off the result."""
    return torch.arange(n, dtype=torch.float32).view(n, *([1] * len(shape))).expand(n, *shape).clone()


def test_rows_are_grouped_by_identity():
    out = expand_per_identity(labelled(3, 77, 8), identities=3, images_per_id=2, what="positive")
    assert out.shape == (6, 77, 8)
    assert out[:, 0, 0].tolist() == [0, 0, 1, 1, 2, 2]


def test_a_shared_row_is_left_for_the_sampler_to_broadcast():
    neg = labelled(1, 77, 8)
    assert expand_per_identity(neg, identities=3, images_per_id=4, what="negative") is neg


def test_mismatched_batch_is_an_error():
    with pytest.raises(InvalidInputError, match="negative has a batch of 2, but the conditioning holds 3"):
        expand_per_identity(labelled(2, 4), 3, 2, "negative")
    with pytest.raises(InvalidInputError, match="at least 1"):
        expand_per_identity(labelled(2, 4), 2, 0, "positive")


def test_identity_count():
    assert identity_count([3, 3, 1]) == 3
    assert identity_count([1]) == 1
    with pytest.raises(InvalidInputError, match=r"mixes batches of \[2, 3\]"):
        identity_count([2, 3])
    with pytest.raises(InvalidInputError, match="empty"):
        identity_count([])


def test_expand_conditioning_copies_and_expands_pooled():
    cond = labelled(2, 77, 8)
    options = {"pooled_output": labelled(2, 8), "strength": 1.0}
    original = [[cond, options]]
    out = expand_conditioning(original, 2, 3, "positive")
    assert out[0][0][:, 0, 0].tolist() == [0, 0, 0, 1, 1, 1]
    assert out[0][1]["pooled_output"][:, 0].tolist() == [0, 0, 0, 1, 1, 1]
    assert out[0][1]["strength"] == 1.0
    assert original[0][0] is cond and original[0][1]["pooled_output"].shape[0] == 2  # caller's data untouched


def test_two_masked_people_are_one_image_with_two_regions():
    """Conditioning (Set Mask) per person + Combine: two entries of batch 1 each = ONE identity count (one image)."""
    left, right = torch.zeros(1, 64, 128), torch.zeros(1, 64, 128)
    left[..., :64], right[..., 64:] = 1, 1
    two_people = [[labelled(1, 77, 8), {"mask": left}], [labelled(1, 77, 8) + 5, {"mask": right}]]
    assert identity_count([c.shape[0] for c, _ in two_people]) == 1
    out = expand_conditioning(two_people, 1, 2, "positive")
    assert [c.shape[0] for c, _ in out] == [1, 1]   # ComfyUI serves a batch-1 entry to every image
    assert out[0][1]["mask"] is left and out[1][1]["mask"] is right


def test_per_identity_masks_are_grouped_like_the_identities():
    """Three identities with a mask each, 2 images each: masks follow their identity (ComfyUI itself would tile them
    m0 m1 m2 m0 m1 m2 and pair identity 0's second image with identity 1's mask)."""
    masks = labelled(3, 16, 16)
    out = expand_conditioning([[labelled(3, 77, 8), {"mask": masks}]], 3, 2, "positive")
    assert out[0][1]["mask"][:, 0, 0].tolist() == [0, 0, 1, 1, 2, 2]
    shared = expand_conditioning([[labelled(3, 77, 8), {"mask": masks[:1]}]], 3, 2, "positive")
    assert shared[0][1]["mask"].shape[0] == 1   # one mask for every image stays one
    two_d = torch.ones(3, 16)   # a [H, W] mask whose height happens to equal the batch: not a batch of masks
    assert expand_conditioning([[labelled(3, 77, 8), {"mask": two_d}]], 3, 2, "positive")[0][1]["mask"] is two_d


def test_empty_latent_matches_comfyui_layout():
    lat = empty_latent(6, 512, 384)
    assert lat.shape == (6, 4, 48, 64) and lat.abs().sum() == 0
    with pytest.raises(InvalidInputError, match="multiple of 8"):
        empty_latent(1, 500, 512)


def test_expand_latent_for_img2img():
    assert expand_latent(labelled(1, 4, 8, 8), 2, 3)[:, 0, 0, 0].tolist() == [0] * 6
    assert expand_latent(labelled(2, 4, 8, 8), 2, 3)[:, 0, 0, 0].tolist() == [0, 0, 0, 1, 1, 1]
    full = labelled(6, 4, 8, 8)
    assert expand_latent(full, 2, 3) is full
    with pytest.raises(InvalidInputError, match="must be 1, 2 or 6"):
        expand_latent(labelled(4, 4, 8, 8), 2, 3)


def test_batch_index_of_a_latent_slice_by_hand():
    # rows of a 6-image run taken by Latent From Batch keep their indices when nothing is expanded (KSampler's)
    assert expand_batch_index([2, 5], rows=2, total=2) == [2, 5]
    # one row per identity (2 identities × 2 images): identity rows 2 and 3 of a bigger run → images 4, 5 and 6, 7
    assert expand_batch_index([2, 3], rows=2, total=4) == [4, 5, 6, 7]
    # one shared row that was index 1, for 3 images: the 3 images the Sampler made for index 1 (3, 4, 5)
    assert expand_batch_index([1], rows=1, total=3) == [3, 4, 5]
    assert expand_batch_index([0], rows=1, total=3) == [0, 1, 2]   # index 0 = no batch_index at all
    with pytest.raises(InvalidInputError, match=r"latent_image has 2 rows but its batch_index lists \[4\]"):
        expand_batch_index([4], rows=2, total=4)
    with pytest.raises(InvalidInputError, match=r"batch_index lists \[-1\]: give a latent whose batch_index has one"):
        expand_batch_index([-1], rows=1, total=2)


# ------------------------------------------------------------------------------------ the layout patches read

def test_per_row_lays_identities_out_as_the_sampler_groups_them():
    layout = IdentityLayout(identities=3, images_per_id=2)
    assert per_row(labelled(3, 5), layout, "expression", "expressions")[:, 0].tolist() == [0, 0, 1, 1, 2, 2]
    assert per_row(labelled(1, 5), layout, "expression", "expressions")[:, 0].tolist() == [0] * 6


def test_without_a_record_every_row_is_its_own_identity():
    assert chunk_layout(None, 4) == IdentityLayout(4, 1)
    recorded = IdentityLayout(2, 3)
    assert chunk_layout(recorded, 6) is recorded
    with pytest.raises(InvalidInputError, match="laid out 2 identities × 3 images per identity = 6 latents, but the "
                                                "model was called with 4"):
        chunk_layout(recorded, 4)


@pytest.mark.parametrize("count, layout, message", [
    (2, IdentityLayout(4, 1), "2 references for 4 identities × 1 image per identity: give 1 reference (for every "
                              "image) or 4 (one per identity)"),
    (3, IdentityLayout(1, 2), "3 references for 1 identity × 2 images per identity: give 1 reference (for every "
                              "image) or 1 (one per identity)"),
    (6, IdentityLayout(3, 2), "6 references for 3 identities × 2 images per identity"),
])
def test_counts_that_fit_no_layout_are_named_in_words(count, layout, message):
    with pytest.raises(InvalidInputError) as caught:
        per_row(labelled(count, 2), layout, "reference", "references")
    assert str(caught.value).startswith(message)


def test_layout_and_plural_checks():
    assert plural(1, "identity", "identities") == "1 identity" and plural(0, "image") == "0 images"
    for bad in [(0, 1), (1, -2), (True, 1), (1.5, 1), (None, 1)]:
        with pytest.raises(InvalidInputError, match="must be a whole number of at least 1"):
            IdentityLayout(*bad)


def test_counts_in_messages_read_as_english():
    """One identity is 'identity', not '1 identities' (the wording a user sees in ComfyUI's error panel)."""
    from arc2face_core.pose.hint import check_hint_batch

    with pytest.raises(InvalidInputError, match=r"with 1 identity × 1 image it must be 1, 1 or 1") as caught:
        expand_latent(torch.zeros(3, 4, 8, 8), 1, 1)
    assert "identities" not in str(caught.value)
    with pytest.raises(InvalidInputError, match=r"holds 1 identity: give 1 \(shared\)"):
        expand_per_identity(torch.zeros(3, 4), 1, 2, "mask")
    with pytest.raises(InvalidInputError, match=r"holds 1 identity: give 1 normal map"):
        check_hint_batch(3, 1)
