"""Batch layout for several identities and several images per identity.

The sampler generates ``images_per_id`` (k) images for each of N identities in one batch of N·k, grouped by
identity: rows i·k … i·k+k-1 belong to identity i. ComfyUI itself would tile a shorter conditioning batch
(0,1,0,1, …), so every per-identity tensor is expanded here with ``repeat_interleave`` before sampling.

Model patches (the Expression and Reference Adapters) see only a batch of rows. The Arc2Face Sampler records the
layout under ``LAYOUT_KEY`` in the model's ``transformer_options``, which ComfyUI hands every patch as
``extra_options``; a model sampled by the stock KSampler has no record, and then every row is its own identity.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import InvalidInputError
from .validation import MAX_BATCH, MAX_PIXELS_SIDE, batched_tensor, positive_int

LATENT_CHANNELS = 4      # SD1.5 VAE latent channels
LATENT_SCALE = 8         # pixels per latent cell
LAYOUT_KEY = "arc2face_identity_layout"   # transformer_options entry the Arc2Face Sampler sets


def plural(count: int, word: str, words: str | None = None) -> str:
    """``"1 identity"``, ``"3 identities"``: counts in messages read as English."""
    return f"{count} {word if count == 1 else (words or word + 's')}"


@dataclass(frozen=True)
class IdentityLayout:
    """Which rows of one cond (or uncond) chunk belong to which identity: rows i·k … i·k+k-1 are identity i."""

    identities: int
    images_per_id: int

    def __post_init__(self) -> None:
        for name in ("identities", "images_per_id"):
            object.__setattr__(self, name, positive_int(getattr(self, name), name, upper=MAX_BATCH))
        _check_rows(self.identities, self.images_per_id)

    @property
    def rows(self) -> int:
        return self.identities * self.images_per_id

    def describe(self) -> str:
        return (f"{plural(self.identities, 'identity', 'identities')} × "
                f"{plural(self.images_per_id, 'image')} per identity")


def chunk_layout(recorded: IdentityLayout | None, rows: int) -> IdentityLayout:
    """The layout of a chunk of ``rows`` latents: the one the Arc2Face Sampler recorded or, without a record (the
    stock KSampler), one identity per row."""
    rows = positive_int(rows, "rows", upper=MAX_BATCH)
    if recorded is None:
        return IdentityLayout(rows, 1)
    if not isinstance(recorded, IdentityLayout):
        raise InvalidInputError(f"the recorded identity layout must be an IdentityLayout, got "
                                f"{type(recorded).__name__}")
    if recorded.rows != rows:
        raise InvalidInputError(f"the Arc2Face Sampler laid out {recorded.describe()} = {recorded.rows} latents, but "
                                f"the model was called with {rows}; sample this model with one sampler node")
    return recorded


def per_row(values: torch.Tensor, layout: IdentityLayout, what: str, what_plural: str) -> torch.Tensor:
    """Per-identity ``values`` [1 or N, ...] laid out on the chunk's rows [N·k, ...] (one value serves every row).

    Anything else is an error naming the counts given and allowed: pairing values with the wrong identities would
    go unnoticed in the images.
    """
    count = batched_tensor(values, what).shape[0]
    if not isinstance(layout, IdentityLayout):
        raise InvalidInputError(f"layout must be an IdentityLayout, got {type(layout).__name__}")
    if count == 1:
        return values.expand(layout.rows, *values.shape[1:])
    if count == layout.identities:
        return values.repeat_interleave(layout.images_per_id, dim=0)
    raise InvalidInputError(
        f"{plural(count, what, what_plural)} for {layout.describe()}: give 1 {what} (for every image) or "
        f"{layout.identities} (one per identity). With the stock KSampler every latent counts as its own identity; "
        "the Arc2Face Sampler groups images_per_id latents per identity.")


def expand_per_identity(tensor: torch.Tensor, identities: int, images_per_id: int, what: str) -> torch.Tensor:
    """[N, ...] → [N·k, ...] grouped by identity; a batch of 1 stays 1 (it applies to every image)."""
    identities, images_per_id = _check_rows(identities, images_per_id)
    batch = batched_tensor(tensor, what).shape[0]
    if batch == 1:
        return tensor
    if batch != identities:
        raise InvalidInputError(f"{what} has a batch of {batch}, but the conditioning holds "
                                f"{plural(identities, 'identity', 'identities')}: give 1 (shared) or {identities} "
                                "(one per identity)")
    return tensor.repeat_interleave(images_per_id, dim=0)


def identity_count(batch_sizes: list[int], what: str = "positive") -> int:
    """The number of identities N in a conditioning whose entries have these batch sizes (all equal, or 1).

    Entries are parts of the *same* images, never extra images: ComfyUI adds the predictions of all entries (each
    inside its mask or area). So two people made with Conditioning (Set Mask) + Conditioning (Combine), one identity
    per entry, are ONE image with two regions (N = 1), and an entry of batch 1 (a shared region, a style) serves every
    identity of the entries of batch N.
    """
    if isinstance(batch_sizes, (str, bytes)) or not hasattr(batch_sizes, "__iter__"):
        raise InvalidInputError(f"the {what} conditioning's batch sizes must be a list of whole numbers, got "
                                f"{type(batch_sizes).__name__}")
    batch_sizes = [positive_int(size, f"a {what} conditioning batch size", upper=MAX_BATCH) for size in batch_sizes]
    if not batch_sizes:
        raise InvalidInputError(f"the {what} conditioning is empty")
    sizes = set(batch_sizes) - {1}
    if len(sizes) > 1:
        raise InvalidInputError(f"the {what} conditioning mixes batches of {sorted(sizes)} identities; "
                                "combine conditionings of the same identities")
    return sizes.pop() if sizes else 1


def empty_latent(batch: int, width: int, height: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Zeros [batch, 4, height/8, width/8], as ComfyUI's Empty Latent Image makes them."""
    batch = positive_int(batch, "batch", upper=MAX_BATCH)
    for name, value in (("width", width), ("height", height)):
        if positive_int(value, name, upper=MAX_PIXELS_SIDE) < LATENT_SCALE or value % LATENT_SCALE:
            raise InvalidInputError(f"{name} must be a positive multiple of {LATENT_SCALE}, got {value}")
    return torch.zeros([batch, LATENT_CHANNELS, height // LATENT_SCALE, width // LATENT_SCALE], device=device)


def expand_latent(samples: torch.Tensor, identities: int, images_per_id: int) -> torch.Tensor:
    """A user latent for img2img: 1 (shared), N (one per identity) or N·k (one per image) → N·k."""
    identities, images_per_id = _check_rows(identities, images_per_id)
    total = identities * images_per_id
    batch = batched_tensor(samples, "latent_image").shape[0]
    if samples.is_floating_point() and not torch.isfinite(samples).all():
        raise InvalidInputError("latent_image contains NaN or infinite values: it would make black images")
    if batch == total:
        return samples
    if batch == 1:
        return samples.repeat((total,) + (1,) * (samples.ndim - 1))
    if batch == identities:
        return samples.repeat_interleave(images_per_id, dim=0)
    people = plural(identities, 'identity', 'identities')
    raise InvalidInputError(f"latent_image has a batch of {batch}; with {people} × {plural(images_per_id, 'image')} "
                            f"it must be 1, {identities} or {total}")


def _check_rows(identities, images_per_id) -> tuple[int, int]:
    identities = positive_int(identities, "identities", upper=MAX_BATCH)
    images_per_id = positive_int(images_per_id, "images_per_id", upper=MAX_BATCH)
    if identities * images_per_id > MAX_BATCH:
        raise InvalidInputError(f"{identities} identities × {images_per_id} images per identity make "
                                f"{identities * images_per_id} rows; one batch holds at most {MAX_BATCH}")
    return identities, images_per_id


def expand_batch_index(batch_index, rows: int, total: int) -> list[int]:
    """The noise indices of the N·k images for a latent of ``rows`` rows that carries ComfyUI's ``batch_index``.

    ComfyUI gives row r of a latent the noise of index ``batch_index[r]`` of a bigger batch (Latent From Batch keeps
    the indices of the rows it takes). A latent row that stands for g = total/rows images (one identity's k images,
    or all of them) gives image j the index ``batch_index[r]·g + j``: the images the Sampler made for that row's
    place in the bigger run, and exactly KSampler's indices when nothing is expanded.
    """
    indices = [int(i) for i in batch_index]
    if len(indices) != rows or any(i < 0 for i in indices):
        raise InvalidInputError(f"latent_image has {rows} rows but its batch_index lists {indices}: give a latent "
                                "whose batch_index has one index (0 or more) per row, or none")
    group = total // rows
    return [index * group + j for index in indices for j in range(group)]


# Conditioning entries (ComfyUI's [[cond, {options}], ...] list) whose option tensors are per identity. ComfyUI tiles
# a mask batch shorter than the latent batch (m0, m1, m0, m1), so per-identity masks are grouped here like the conds.
_PER_IDENTITY_OPTIONS = ("pooled_output", "mask")


def expand_conditioning(conditioning: list, identities: int, images_per_id: int, what: str) -> list:
    """Expand every entry of a ``[[cond [B,77,768], options], ...]`` list to the grouped N·k layout.

    Returns new lists and dicts; the caller's conditioning (shared with other nodes) is never modified.
    """
    expanded = []
    for entry in conditioning if isinstance(conditioning, (list, tuple)) else [None]:
        if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[1], dict)):
            raise InvalidInputError(f"the {what} conditioning must be ComfyUI's CONDITIONING, a list of "
                                    f"[tensor, options] pairs, got {type(conditioning).__name__} of "
                                    f"{type(entry).__name__}")
        cond, options = batched_tensor(entry[0], f"the {what} conditioning"), dict(entry[1])
        for key in _PER_IDENTITY_OPTIONS:
            value = options.get(key)
            if isinstance(value, torch.Tensor) and value.ndim >= (3 if key == "mask" else 1) \
                    and value.shape[0] == cond.shape[0]:
                options[key] = expand_per_identity(value, identities, images_per_id, f"{what} {key}")
        expanded.append([expand_per_identity(cond, identities, images_per_id, what), options])
    return expanded
