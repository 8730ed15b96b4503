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
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{name} must be a whole number of at least 1, got {value!r}")

    @property
    def rows(self) -> int:
        return self.identities * self.images_per_id

    def describe(self) -> str:
        return (f"{plural(self.identities, 'identity', 'identities')} × "
                f"{plural(self.images_per_id, 'image')} per identity")


def chunk_layout(recorded: IdentityLayout | None, rows: int) -> IdentityLayout:
    """The layout of a chunk of ``rows`` latents: the one the Arc2Face Sampler recorded or, without a record (the
    stock KSampler), one identity per row."""
    if recorded is None:
        return IdentityLayout(rows, 1)
    if recorded.rows != rows:
        raise InvalidInputError(f"the Arc2Face Sampler laid out {recorded.describe()} = {recorded.rows} latents, but "
                                f"the model was called with {rows}; sample this model with one sampler node")
    return recorded


def per_row(values: torch.Tensor, layout: IdentityLayout, what: str, what_plural: str) -> torch.Tensor:
    """Per-identity ``values`` [1 or N, ...] laid out on the chunk's rows [N·k, ...] (one value serves every row).

    Anything else is an error naming the counts given and allowed: pairing values with the wrong identities would
    go unnoticed in the images.
    """
    count = values.shape[0] if values.ndim else 0
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
    if images_per_id < 1:
        raise InvalidInputError(f"images_per_id must be at least 1, got {images_per_id}")
    batch = tensor.shape[0]
    if batch == 1:
        return tensor
    if batch != identities:
        raise InvalidInputError(f"{what} has a batch of {batch}, but the conditioning holds {identities} "
                                f"identities: give 1 (shared) or {identities} (one per identity)")
    return tensor.repeat_interleave(images_per_id, dim=0)


def identity_count(batch_sizes: list[int], what: str = "positive") -> int:
    """The number of identities N in a conditioning whose entries have these batch sizes (all equal, or 1).

    Entries are parts of the *same* images, never extra images: ComfyUI adds the predictions of all entries (each
    inside its mask or area). So two people made with Conditioning (Set Mask) + Conditioning (Combine), one identity
    per entry, are ONE image with two regions (N = 1), and an entry of batch 1 (a shared region, a style) serves every
    identity of the entries of batch N.
    """
    sizes = set(batch_sizes) - {1}
    if len(sizes) > 1:
        raise InvalidInputError(f"the {what} conditioning mixes batches of {sorted(sizes)} identities; "
                                "combine conditionings of the same identities")
    if not batch_sizes:
        raise InvalidInputError(f"the {what} conditioning is empty")
    return sizes.pop() if sizes else 1


def empty_latent(batch: int, width: int, height: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Zeros [batch, 4, height/8, width/8], as ComfyUI's Empty Latent Image makes them."""
    for name, value in (("width", width), ("height", height)):
        if value < LATENT_SCALE or value % LATENT_SCALE:
            raise InvalidInputError(f"{name} must be a positive multiple of {LATENT_SCALE}, got {value}")
    return torch.zeros([batch, LATENT_CHANNELS, height // LATENT_SCALE, width // LATENT_SCALE], device=device)


def expand_latent(samples: torch.Tensor, identities: int, images_per_id: int) -> torch.Tensor:
    """A user latent for img2img: 1 (shared), N (one per identity) or N·k (one per image) → N·k."""
    total = identities * images_per_id
    batch = samples.shape[0]
    if batch == total:
        return samples
    if batch == 1:
        return samples.repeat((total,) + (1,) * (samples.ndim - 1))
    if batch == identities:
        return samples.repeat_interleave(images_per_id, dim=0)
    raise InvalidInputError(f"latent_image has a batch of {batch}; with {identities} identities × {images_per_id} "
                            f"images it must be 1, {identities} or {total}")


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
    for cond, options in conditioning:
        options = dict(options)
        for key in _PER_IDENTITY_OPTIONS:
            value = options.get(key)
            if isinstance(value, torch.Tensor) and value.ndim >= (3 if key == "mask" else 1) \
                    and value.shape[0] == cond.shape[0]:
                options[key] = expand_per_identity(value, identities, images_per_id, f"{what} {key}")
        expanded.append([expand_per_identity(cond, identities, images_per_id, what), options])
    return expanded
