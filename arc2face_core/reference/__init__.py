"""The Arc2Face Reference Adapter (2025): a LoRA on the denoising UNet plus reference attention.

A clean (un-LoRA'd) UNet sees the reference photo's latent once, at timestep 0, with the identity conditioning; every
transformer block stores the input of its self-attention (``norm1`` output). While sampling, the conditional rows'
self-attention attends to their own tokens and the stored ones; the unconditional rows are left alone.

* ``lora``: the LoRA file in its three diffusers/peft key styles, normalised to diffusers module names;
* ``banks``: the reference latent, which reference and identity feed each bank, the stored tokens;
* ``attention``: the self-attention context of a mixed cond/uncond batch (one K/V length for every row);
* ``diffusers_unet``: the same algorithm on a diffusers UNet (the headless pipeline).
"""
