"""Checks of the Expression Adapter patch inside a real ComfyUI (its UNet, its attention, its memory manager).

Run by tests/integration/test_live_expression.py with ComfyUI's own interpreter, from DIR/ComfyUI:
    DIR/venv/bin/python <this file> <pack dir>
Prints one JSON object of measurements; the test asserts on them. Needs the random full-size models the test writes.
"""

from __future__ import annotations

import json
import os

from comfyui_boot import load_pack as boot_pack
from comfyui_boot import start_comfyui

PACK = os.path.abspath(start_comfyui()[0])

import comfy.model_management as mm  # noqa: E402
import comfy.sampler_helpers  # noqa: E402
import comfy.sd  # noqa: E402
import folder_paths  # noqa: E402
import torch  # noqa: E402


def load_pack():
    return boot_pack(PACK, "nodes.expression")


def prediction(model, x, sigma, context, cond_or_uncond):
    """One UNet evaluation the way ComfyUI's sampler makes it (transformer_options from the model's options)."""
    options = dict(model.model_options["transformer_options"], cond_or_uncond=list(cond_or_uncond),
                   sigmas=sigma.expand(x.shape[0]))
    with torch.no_grad():
        return model.model.apply_model(x, sigma.expand(x.shape[0]), c_crossattn=context, transformer_options=options)


class Counted:
    def __init__(self, patch, key, calls):
        self.patch, self.key, self.calls = patch, key, calls

    def __call__(self, q, k, v, extra_options):
        self.calls[self.key] = self.calls.get(self.key, 0) + 1
        return self.patch(q, k, v, extra_options)


class HalfAttention:
    """Another pack's attn2 replacement, to check stacking: plain attention scaled by 0.5."""

    def __call__(self, q, k, v, extra_options):
        from comfy.ldm.modules.attention import optimized_attention

        return 0.5 * optimized_attention(q, k, v, extra_options["n_heads"])


def main() -> None:
    expression = load_pack()
    models = folder_paths.models_dir
    unet = comfy.sd.load_diffusion_model(os.path.join(models, "arc2face", "arc2face", "diffusion_pytorch_model.safetensors"))
    adapter = expression.Arc2FaceExpressionAdapterLoader().load()[0]
    g = torch.Generator().manual_seed(0)
    exprs = torch.randn(2, 55, generator=g) * 0.5
    exprs[:, 50:] = exprs[:, 50:].abs().clamp(max=0.2)   # eyelids and jaw as SMIRK outputs them
    apply = expression.Arc2FaceExpressionAdapter().apply
    out = {}

    patched = apply(unet, adapter, exprs, 1.0, 0.0, 1.0)[0]
    attn2 = patched.model_options["transformer_options"]["patches_replace"]["attn2"]
    out["registered_keys"] = sorted(map(list, attn2))
    calls = {}
    counted = patched.clone()
    for key, patch in attn2.items():
        counted.set_model_attn2_replace(Counted(patch, key, calls), *key)
    # What a sampler does before sampling: load the model and the models attached to it. The adapter's
    # ModelPatcher (a clone of it, sharing the adapter module) must be among them.
    comfy.sampler_helpers.prepare_sampling(counted, (4, 4, 8, 8), {}, counted.model_options)
    out["adapter_loaded_with_model"] = any(m.model.model is adapter.model for m in mm.current_loaded_models)

    x = torch.randn(4, 4, 8, 8, generator=g)
    context = torch.randn(4, 77, 768, generator=g)
    sampling = unet.get_model_object("model_sampling")
    sigma = sampling.percent_to_sigma(0.3) * torch.ones(1)
    prediction(counted, x, sigma, context, [0, 1])
    out["called_keys"] = sorted([list(k), n] for k, n in calls.items())

    plain = prediction(unet, x, sigma, context, [0, 1])
    zero = prediction(apply(unet, adapter, exprs, 0.0, 0.0, 1.0)[0], x, sigma, context, [0, 1])
    out["weight0_max_diff"] = float((zero - plain).abs().max())
    full = prediction(patched, x, sigma, context, [0, 1])
    out["weight1_max_diff"] = float((full - plain).abs().max())
    # cond rows [0:2] hold identities 0 and 1; uncond rows [2:4] the zero expression
    cond_only = prediction(patched, x[:2], sigma, context[:2], [0])
    uncond_only = prediction(patched, x[2:], sigma, context[2:], [1])
    zero_expr_as_cond = prediction(apply(unet, adapter, torch.zeros(1, 55), 1.0, 0.0, 1.0)[0], x[2:], sigma,
                                   context[2:], [0])
    out["cond_rows_vs_cond_only"] = float((full[:2] - cond_only).abs().max())
    out["uncond_rows_vs_uncond_only"] = float((full[2:] - uncond_only).abs().max())
    out["uncond_vs_zero_expression"] = float((uncond_only - zero_expr_as_cond).abs().max())
    out["uncond_vs_no_adapter"] = float((uncond_only - plain[2:]).abs().max())
    swapped = prediction(apply(unet, adapter, exprs.flip(0), 1.0, 0.0, 1.0)[0], x, sigma, context, [0, 1])
    out["identity_order_matters"] = float((swapped[:2] - full[:2]).abs().max())

    late = apply(unet, adapter, exprs, 1.0, 0.5, 1.0)[0]   # active only in the second half of sampling
    early_sigma = sampling.percent_to_sigma(0.2) * torch.ones(1)
    out["outside_range_vs_plain"] = float((prediction(late, x, early_sigma, context, [0, 1]) -
                                           prediction(unet, x, early_sigma, context, [0, 1])).abs().max())
    late_sigma = sampling.percent_to_sigma(0.8) * torch.ones(1)
    out["inside_range_vs_plain"] = float((prediction(late, x, late_sigma, context, [0, 1]) -
                                          prediction(unet, x, late_sigma, context, [0, 1])).abs().max())

    foreign = unet.clone()
    for key in attn2:
        foreign.set_model_attn2_replace(HalfAttention(), *key)
    foreign_only = prediction(foreign, x, sigma, context, [0, 1])
    stacked0 = prediction(apply(foreign, adapter, exprs, 0.0, 0.0, 1.0)[0], x, sigma, context, [0, 1])
    stacked1 = prediction(apply(foreign, adapter, exprs, 1.0, 0.0, 1.0)[0], x, sigma, context, [0, 1])
    out["stacked_weight0_vs_foreign"] = float((stacked0 - foreign_only).abs().max())
    out["foreign_vs_plain"] = float((foreign_only - plain).abs().max())
    out["stacked_weight1_vs_foreign"] = float((stacked1 - foreign_only).abs().max())
    print(json.dumps(out))


if __name__ == "__main__":
    main()
