"""The Reference Adapter on a diffusers ``UNet2DConditionModel`` (the headless pipeline), with the pack's own banks,
attention context and LoRA maths: the same path as the ComfyUI patch.

One UNet serves both roles, as ComfyUI's model does: the write pass runs it clean (no LoRA, plain processors), then
the LoRA is added at run time (forward hooks: ``out += strength * alpha/rank * up(down(x))``, the weights are never
touched) and every ``attn1`` gets a processor that adds the stored tokens to its conditional rows.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..batching import IdentityLayout
from ..errors import InvalidInputError
from .attention import extend_self_attention
from .banks import BankRecorder, ReferenceBanks
from .lora import LoraModule, ReferenceLora, check_strength


def transformer_blocks(unet: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """{module name: BasicTransformerBlock} of every transformer block of the UNet."""
    from diffusers.models.attention import BasicTransformerBlock

    return {name: m for name, m in unet.named_modules() if isinstance(m, BasicTransformerBlock)}


class _Writer:
    """attn1 processor of the write pass: stores its input (the block's ``norm1`` output), then attends as before."""

    def __init__(self, base, recorder: BankRecorder, key: str) -> None:
        self.base, self.recorder, self.key = base, recorder, key

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        self.recorder.record(self.key, hidden_states)
        return self.base(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)


class _Reader:
    """attn1 processor while sampling: conditional rows attend to cat(own, stored); unconditional rows as before."""

    def __init__(self, base, bank: torch.Tensor, cond_or_uncond: Sequence[int], layout: IdentityLayout,
                 sizes: dict) -> None:
        self.base, self.bank, self.cond_or_uncond, self.layout, self.sizes = base, bank, cond_or_uncond, layout, sizes

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if encoder_hidden_states is not None:
            raise InvalidInputError("the Reference Adapter expects self-attention in attn1")
        context, _ = extend_self_attention(hidden_states, hidden_states, self.bank, self.cond_or_uncond, self.layout,
                                           **self.sizes)
        return self.base(attn, hidden_states, context, attention_mask, temb, **kwargs)


@contextlib.contextmanager
def _processors(blocks: dict[str, torch.nn.Module], make) -> Iterator[None]:
    originals = {name: block.attn1.processor for name, block in blocks.items()}
    try:
        for name, block in blocks.items():
            block.attn1.set_processor(make(name, originals[name]))
        yield
    finally:
        for name, block in blocks.items():
            block.attn1.set_processor(originals[name])


@torch.no_grad()
def write_pass(unet: torch.nn.Module, latents: torch.Tensor, conditioning: torch.Tensor) -> ReferenceBanks:
    """Run the (clean) UNet once at timestep 0 on scaled reference latents [B, 4, h, w] with conditioning
    [B, 77, 768]; return each block's stored ``norm1`` output [B, tokens, channels]."""
    blocks = transformer_blocks(unet)
    recorder = BankRecorder()
    with _processors(blocks, lambda name, base: _Writer(base, recorder, name)):
        timesteps = torch.zeros(latents.shape[0], dtype=torch.long, device=latents.device)
        unet(latents, timesteps, encoder_hidden_states=conditioning, return_dict=False)
    missing = sorted(set(blocks) - set(recorder.stored))
    if missing:
        raise InvalidInputError(f"the write pass did not reach the transformer blocks {missing[:3]}")
    return recorder.banks(tuple(latents.shape[2:]))


def _lora_hook(module: torch.nn.Module, lora: LoraModule, strength: float):
    weight = module.weight
    down, up = lora.down.to(weight.device, weight.dtype), lora.up.to(weight.device, weight.dtype)
    factor = strength * lora.scale
    if isinstance(module, torch.nn.Linear):
        def hook(mod, args, out):
            return out + F.linear(F.linear(args[0], down.flatten(1)), up.flatten(1)) * factor
    elif isinstance(module, torch.nn.Conv2d):
        down4 = down.reshape(lora.rank, *weight.shape[1:])
        up4 = up.reshape(up.shape[0], lora.rank, 1, 1)

        def hook(mod, args, out):
            low = F.conv2d(args[0], down4, stride=mod.stride, padding=mod.padding, dilation=mod.dilation)
            return out + F.conv2d(low, up4) * factor
    else:
        raise InvalidInputError(f"the LoRA targets a {type(module).__name__}; only Linear and Conv2d are supported")
    return module.register_forward_hook(hook)


def weight_shapes(unet: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """{module name: weight shape} of every module with a weight (what a LoRA can target)."""
    return {name: tuple(m.weight.shape) for name, m in unet.named_modules()
            if isinstance(getattr(m, "weight", None), torch.Tensor)}


@contextlib.contextmanager
def reference_adapter(unet: torch.nn.Module, lora: ReferenceLora, strength: float, banks: ReferenceBanks,
                      cond_or_uncond: Sequence[int], layout: IdentityLayout,
                      generated_size: Sequence[int] | None = None) -> Iterator[None]:
    """Inside the block the UNet samples with the Reference Adapter: the LoRA at ``strength`` and reference
    attention from ``banks`` (made by ``write_pass`` on the clean UNet). Everything is undone on exit."""
    lora.check_fits(weight_shapes(unet), "the UNet")
    blocks = transformer_blocks(unet)
    missing = sorted(set(blocks) - set(banks.keys()))
    if missing:
        raise InvalidInputError(f"no stored reference tokens for the transformer blocks {missing[:3]}")
    sizes = {"reference_size": banks.latent_size, "generated_size": generated_size}
    device = next(unet.parameters()).device
    handles = []
    try:
        if strength:
            handles = [_lora_hook(unet.get_submodule(name), module, strength) for name, module in lora.modules.items()]
        with _processors(blocks, lambda name, base: _Reader(base, banks[name].to(device), cond_or_uncond, layout,
                                                            sizes)):
            yield
    finally:
        for handle in handles:
            handle.remove()


@dataclass(frozen=True)
class ReferencePhotos:
    """What the headless pipeline needs for the Reference Adapter: the LoRA, the aligned reference photos (uint8 RGB
    [1 or N, S, S, 3]: one for every identity or one per identity) and the LoRA strength."""

    lora: ReferenceLora
    images: np.ndarray
    strength: float = 0.8

    def __post_init__(self) -> None:
        images = self.images
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 \
                or images.shape[0] == 0 or images.shape[3] != 3:
            got = f"{images.dtype} {list(images.shape)}" if isinstance(images, np.ndarray) else type(images).__name__
            raise InvalidInputError(f"reference photos must be uint8 RGB [R, H, W, 3], got {got}")
        check_strength(self.strength)

    def for_identities(self, start: int, stop: int) -> "ReferencePhotos":
        """The references of identities start..stop-1 (a single reference serves all)."""
        images = self.images if self.images.shape[0] == 1 else self.images[start:stop]
        return ReferencePhotos(self.lora, images, self.strength)

