"""Hint preparation for the pose ControlNet: the training form (n·0.5+0.5, mid-grey background, square, 512)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from arc2face_core.errors import InvalidInputError
from arc2face_core.pose.hint import check_hint_batch, prepare_normal_map

# The training hints (EMOCA renders, uint8): a zero normal is uint8(0.5 * 255) = 127, read back as 127/255;
# 512x512 FFHQ-aligned frames.
BACKGROUND, HINT_SIZE = 127 / 255, 512


def sphere_normals(size: int) -> torch.Tensor:
    """A hemisphere's normals encoded as RGB on a mid-grey background: an analytic normal map."""
    ys, xs = torch.meshgrid(torch.linspace(1, -1, size), torch.linspace(-1, 1, size), indexing="ij")
    r2 = xs ** 2 + ys ** 2
    inside = r2 < 0.8
    n = torch.stack([xs, ys, torch.sqrt((1 - r2).clamp(min=0))], dim=-1)
    rgb = torch.where(inside[..., None], n * 0.5 + 0.5, torch.full_like(n, BACKGROUND))
    return rgb.unsqueeze(0)


def test_a_training_like_hint_passes_through_unchanged():
    hint = sphere_normals(HINT_SIZE)
    out = prepare_normal_map(hint)
    assert out.shape == (1, 512, 512, 3) and out.dtype == torch.float32
    torch.testing.assert_close(out, hint, atol=0, rtol=0)
    centre = out[0, 256, 256]
    torch.testing.assert_close(centre, torch.tensor([0.5, 0.5, 1.0]), atol=0.01, rtol=0)


@pytest.mark.parametrize("colour", [0.0, 1.0])
def test_black_or_white_backgrounds_become_mid_grey(colour):
    hint = sphere_normals(512)
    background = (hint == BACKGROUND).all(dim=-1)
    painted = torch.where(background[..., None], torch.full_like(hint, colour), hint)
    out = prepare_normal_map(painted)
    assert (out[background] == BACKGROUND).all()
    torch.testing.assert_close(out[~background], hint[~background], atol=0, rtol=0)


def test_alpha_is_composited_on_mid_grey():
    hint = sphere_normals(512)
    alpha = torch.zeros(1, 512, 512, 1)
    alpha[:, 100:400, 100:400] = 1.0
    alpha[:, 250, 250] = 0.25
    rgba = torch.cat([torch.rand(1, 512, 512, 3) * 0.2 + 0.4, alpha], dim=-1)
    rgba[..., :3] = torch.where(alpha > 0, hint, rgba[..., :3])
    out = prepare_normal_map(rgba)
    assert (out[0, :100] == BACKGROUND).all()
    torch.testing.assert_close(out[0, 200, 200], hint[0, 200, 200])
    torch.testing.assert_close(out[0, 250, 250], hint[0, 250, 250] * 0.25 + BACKGROUND * 0.75)


def pil_resize(image: np.ndarray, size: int) -> np.ndarray:
    """PIL's bilinear resize of each float channel (PIL widens the filter when shrinking: antialiased)."""
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c]), mode="F")
                                .resize((size, size), Image.BILINEAR)) for c in range(image.shape[-1])], axis=-1)


@pytest.mark.parametrize("rows, cols", [(slice(None), slice(64, 192)),      # 256 x 128: padded, then enlarged
                                        (slice(100, 900), slice(None))])    # 800 x 1000: padded, then shrunk
def test_non_square_is_padded_centred_with_grey_then_resized(rows, cols):
    full = sphere_normals(256 if rows == slice(None) else 1000)
    crop = full[:, rows, cols]
    h, w = crop.shape[1:3]
    side = max(h, w)
    padded = np.full((side, side, 3), BACKGROUND, np.float32)               # mid-grey square, the crop centred
    top, left = (side - h) // 2, (side - w) // 2
    padded[top:top + h, left:left + w] = crop[0].numpy()
    out = prepare_normal_map(crop)
    assert out.shape == (1, 512, 512, 3)
    np.testing.assert_allclose(out[0].numpy(), pil_resize(padded, 512), atol=1e-6, rtol=0)
    if w < h:   # 64 of 256 columns on each side are padding: 128 of 512 after resizing, minus the blended edge
        assert (out[0, :, :127] == BACKGROUND).all() and (out[0, :, -127:] == BACKGROUND).all()


def test_downscaling_is_antialiased():
    stripes = torch.full((1, 1024, 1024, 3), 0.5)
    stripes[:, :, ::2] = torch.tensor([0.5, 0.5, 1.0])   # alternate columns: a frontal normal and the background
    out = prepare_normal_map(stripes)
    # Averaging pairs of columns gives (0.5, 0.5, 0.75) everywhere; nearest-neighbour would keep the stripes.
    np.testing.assert_allclose(out[0, 200, 100:110, 2].numpy(), 0.75, atol=1e-3)


def test_batches_and_a_single_image():
    batch = torch.cat([sphere_normals(512), torch.full((1, 512, 512, 3), BACKGROUND)])
    assert prepare_normal_map(batch).shape == (2, 512, 512, 3)
    assert prepare_normal_map(sphere_normals(512)[0]).shape == (1, 512, 512, 3)


@pytest.mark.parametrize("bad, message", [
    (torch.rand(1, 64, 64, 1), "1 channel"),
    (torch.rand(1, 64, 64, 2), "2 channel"),
    (torch.full((1, 64, 64, 3), float("nan")), "NaN"),
    (torch.rand(1, 64, 64, 3) * 255, "0-255"),
    (torch.rand(0, 64, 64, 3), "empty"),
    (torch.rand(64, 64), "shape"),
])
def test_bad_normal_maps(bad, message):
    with pytest.raises(InvalidInputError, match=message):
        prepare_normal_map(bad)


def test_hint_batch_pairs_or_broadcasts():
    check_hint_batch(1, 3)
    check_hint_batch(3, 3)
    with pytest.raises(InvalidInputError, match="batch of 2 but the conditioning holds 3 identities"):
        check_hint_batch(2, 3)
