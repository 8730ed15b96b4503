"""The pose ControlNet's hint, prepared as the model was trained on it.

Training hints were EMOCA renders of whole-head normals: RGB = uint8((n·0.5+0.5)·255) (x right, y up, z toward the
camera) on the background a zero normal gives, 127 (0.5·255 truncated; 127/255 once the pipeline reads it), in an
FFHQ-aligned square frame of 512 pixels. A user's normal map is brought into that form: alpha composited onto that
grey, pixels that cannot encode a normal (pure black or white backgrounds) made that grey, padded to a square with it,
and resized to 512 with antialiasing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..batching import plural
from ..errors import InvalidInputError
from ..validation import MAX_BATCH, MAX_PIXELS_SIDE, positive_int

HINT_SIZE = 512          # the FFHQ-aligned training resolution
BACKGROUND = 127 / 255   # n = 0 → uint8(0.5 * 255) = 127: the training renders' empty background
# A pixel encodes a normal n = 2c-1 of length ≤ 1 (1 on the face, less on edges blended with the background). Pure
# black or white (length √3) cannot be a normal: such pixels are background painted another colour.
MAX_NORMAL_LENGTH = 1.5
_RANGE_SLACK = 1e-3


def _validate(images) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise InvalidInputError(f"normal_map must be an IMAGE tensor, got {type(images).__name__}")
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4:
        raise InvalidInputError(f"normal_map must be an IMAGE [B, H, W, C], got shape {tuple(images.shape)}")
    b, h, w, c = images.shape
    if b == 0:
        raise InvalidInputError("normal_map is an empty batch")
    if h == 0 or w == 0:
        raise InvalidInputError(f"normal_map has no pixels (shape {tuple(images.shape)})")
    if c not in (3, 4):
        raise InvalidInputError(f"normal_map has {c} channel(s); a normal map has 3 (x, y, z as RGB), plus an "
                                "optional alpha")
    images = images.float()
    if not torch.isfinite(images).all():
        raise InvalidInputError("normal_map contains NaN or infinite values")
    low, high = images.min().item(), images.max().item()
    if low < -_RANGE_SLACK or high > 1 + _RANGE_SLACK:
        hint = " (it looks like 0-255 values: ComfyUI images are 0..1)" if high > 2 else ""
        raise InvalidInputError(f"normal_map values must lie in [0, 1], got [{low:.3g}, {high:.3g}]{hint}")
    return images.clamp(0, 1)


def _to_background_grey(rgb: torch.Tensor) -> torch.Tensor:
    length = (rgb * 2 - 1).norm(dim=-1, keepdim=True)
    return torch.where(length > MAX_NORMAL_LENGTH, torch.full_like(rgb, BACKGROUND), rgb)


def _pad_square(images: torch.Tensor) -> torch.Tensor:
    _, h, w, _ = images.shape
    if h == w:
        return images
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    # F.pad pads the last dims first: channels (none), width, height.
    return F.pad(images, (0, 0, left, side - w - left, top, side - h - top), value=BACKGROUND)


def prepare_normal_map(images, size: int = HINT_SIZE) -> torch.Tensor:
    """IMAGE [B,H,W,3|4] (or [H,W,C]) → hint IMAGE [B,size,size,3], float32 on the CPU, background 127/255."""
    size = positive_int(size, "size", upper=MAX_PIXELS_SIDE)
    images = _validate(images).cpu()
    rgb = images[..., :3]
    if images.shape[-1] == 4:
        alpha = images[..., 3:]
        rgb = rgb * alpha + BACKGROUND * (1 - alpha)
    rgb = _pad_square(_to_background_grey(rgb))
    if rgb.shape[1] != size:
        rgb = F.interpolate(rgb.movedim(-1, 1), size=(size, size), mode="bilinear", align_corners=False,
                            antialias=True).movedim(1, -1).clamp(0, 1)
    return rgb.contiguous()


def check_hint_batch(hints: int, identities: int) -> None:
    """A hint batch pairs with the identities (one each) or broadcasts (one for all)."""
    hints, identities = positive_int(hints, "hints", upper=MAX_BATCH), positive_int(identities, "identities",
                                                                                   upper=MAX_BATCH)
    if hints not in (1, identities):
        raise InvalidInputError(f"normal_map has a batch of {hints} but the conditioning holds "
                                f"{plural(identities, 'identity', 'identities')}: give 1 normal map (for all) or "
                                f"{identities} (one per identity)")
