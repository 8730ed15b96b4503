"""The reference algorithm's write pass, computed independently of the pack on a diffusers UNet: what each
transformer block's self-attention sees (the output of its ``norm1``) when the clean UNet runs on the reference at
timestep 0. The tests of the headless path and of the ComfyUI node both compare the pack's stored tokens with it."""

from __future__ import annotations

import torch


def clean_tokens(unet, latents: torch.Tensor, conditioning: torch.Tensor) -> dict[str, torch.Tensor]:
    """{block name: norm1 output} of every BasicTransformerBlock of ``unet`` run at t = 0, in module order."""
    from diffusers.models.attention import BasicTransformerBlock

    stored, handles = {}, []
    for name, module in unet.named_modules():
        if isinstance(module, BasicTransformerBlock):
            handles.append(module.norm1.register_forward_hook(
                lambda m, args, out, name=name: stored.__setitem__(name, out.detach().clone())))
    try:
        with torch.no_grad():
            unet(latents, torch.zeros(latents.shape[0], dtype=torch.long), encoder_hidden_states=conditioning)
    finally:
        for handle in handles:
            handle.remove()
    return stored
