"""The Reference Adapter inside a real ComfyUI against an independent diffusers computation of the reference recipe.

Run by tests/integration/test_live_reference.py with ComfyUI's own interpreter, from DIR/ComfyUI:
    DIR/venv/bin/python <this file> <pack dir>
Prints one JSON object of measurements; the test asserts on them. Needs the random full-size models the test writes.

The diffusers side: the same UNet file in UNet2DConditionModel; forward hooks on norm1 of every BasicTransformerBlock
while the clean UNet runs the reference latent at t=0; the LoRA loaded by diffusers' own loader (peft), fused at the
strength; an attn1 processor that attends to cat(own, stored) on the conditional rows only.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path

from comfyui_boot import load_pack as boot_pack
from comfyui_boot import start_comfyui

PACK = os.path.abspath(start_comfyui()[0])
sys.path.insert(0, os.path.join(PACK, "tests"))

import comfy.model_management as mm  # noqa: E402
import comfy.sampler_helpers  # noqa: E402
import comfy.sd  # noqa: E402
import folder_paths  # noqa: E402
import torch  # noqa: E402

STRENGTH = 0.8


def load_pack():
    return boot_pack(PACK, "nodes.reference", "nodes.expression")


def eps(model, x, sigma, context, cond_or_uncond):
    """One noise prediction the way ComfyUI's sampler makes it: load the model (its LoRA patched into the weights,
    its banks alongside), then apply_model with the model's transformer_options; epsilon from the denoised output."""
    comfy.sampler_helpers.prepare_sampling(model, x.shape, {}, model.model_options)
    options = dict(model.model_options["transformer_options"], cond_or_uncond=list(cond_or_uncond),
                   sigmas=sigma.expand(x.shape[0]))
    with torch.no_grad():
        denoised = model.model.apply_model(x, sigma.expand(x.shape[0]), c_crossattn=context,
                                           transformer_options=options)
    return (x - denoised) / sigma


# --------------------------------------------------------------------------------------------- diffusers side
def diffusers_unet(folder: Path):
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file

    config = {k: v for k, v in json.loads((folder / "config.json").read_text()).items() if not k.startswith("_")}
    with torch.device("meta"):
        unet = UNet2DConditionModel(**config)
    weights = {k: v.float() for k, v in load_file(str(folder / "diffusion_pytorch_model.safetensors")).items()}
    unet.load_state_dict(weights, strict=True, assign=True)
    return unet.eval()


def block_order(name: str) -> tuple:
    """down blocks, then the mid block, then up blocks: the order the reference pairs writer and reader blocks."""
    parts = name.split(".")
    stage = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}[parts[0]]
    numbers = [int(p) for p in parts if p.isdigit()]
    return (stage, *numbers)


def clean_tokens(unet, latents, conditioning) -> dict:
    """The oracle's stored tokens (builders/reference_oracle.py) in the order of ComfyUI's blocks."""
    from builders.reference_oracle import clean_tokens as oracle_tokens

    return dict(sorted(oracle_tokens(unet, latents, conditioning).items(), key=lambda item: block_order(item[0])))


class OracleReader:
    """Conditional rows (a boolean mask) attend to cat(own, their stored tokens); the others plainly."""

    def __init__(self, bank_rows, cond_mask):
        from diffusers.models.attention_processor import AttnProcessor2_0

        self.bank_rows, self.cond, self.plain = bank_rows, cond_mask, AttnProcessor2_0()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        out = torch.empty_like(hidden_states)
        cond = hidden_states[self.cond]
        out[self.cond] = self.plain(attn, cond, encoder_hidden_states=torch.cat([cond, self.bank_rows], 1))
        out[~self.cond] = self.plain(attn, hidden_states[~self.cond])
        return out


def with_lora(unet, lora_path: Path, strength: float):
    unet.load_lora_adapter(str(lora_path.parent), weight_name=lora_path.name, use_safetensors=True, prefix="unet",
                           adapter_name="ref")
    unet.set_adapters(["ref"], [strength])
    unet.fuse_lora()


def without_lora(unet):
    unet.unfuse_lora()
    unet.delete_adapters("ref")


def oracle_eps(unet, tokens, bank_rows_index, cond_mask, x, t, sigma, context, readers=True):
    from diffusers.models.attention_processor import AttnProcessor2_0

    for name, bank in tokens.items():
        processor = OracleReader(bank[bank_rows_index], cond_mask) if readers else AttnProcessor2_0()
        unet.get_submodule(name).attn1.set_processor(processor)
    with torch.no_grad():
        return unet(x / (sigma ** 2 + 1) ** 0.5, t, encoder_hidden_states=context).sample


# --------------------------------------------------------------------------------------------- other packs
class PlainAttn1:
    """Another pack's attn1 replacement computing ordinary attention on what ComfyUI hands it."""

    def __init__(self, calls):
        self.calls = calls

    def __call__(self, q, k, v, extra_options):
        from comfy.ldm.modules.attention import optimized_attention

        self.calls.append(tuple(extra_options["block"]))
        return optimized_attention(q, k, v, extra_options["n_heads"])


def main() -> None:
    reference, expression = load_pack()
    models = Path(folder_paths.models_dir)
    unet = comfy.sd.load_diffusion_model(str(models / "arc2face/arc2face/diffusion_pytorch_model.safetensors"))
    lora_path = models / "arc2face/ref_adapter/pytorch_lora_weights.safetensors"
    adapter = reference.Arc2FaceReferenceAdapterLoader().load()[0]
    apply = reference.Arc2FaceReferenceAdapter().apply
    g = torch.Generator().manual_seed(0)
    samples = torch.randn(1, 4, 16, 16, generator=g)          # one 128 px reference for both identities
    identity = torch.randn(2, 77, 768, generator=g)
    negative = torch.randn(1, 77, 768, generator=g)
    out = {}

    patched = apply(unet, adapter, {"samples": samples}, [[identity, {}]], STRENGTH)[0]
    state = patched.model_options["transformer_options"]["patches"]["attn1_patch"][-1].state
    comfy_keys = sorted(state.banks.keys(), key=lambda k: ({"input": 0, "middle": 1, "output": 2}[k[0]], k[1], k[2]))
    out["bank_keys"] = [list(k) for k in comfy_keys]

    sampling = unet.get_model_object("model_sampling")
    t = torch.tensor(500)
    sigma = sampling.sigma(t.float()).reshape(1)
    out["timestep_round_trip"] = int(sampling.timestep(sigma))
    x = torch.randn(4, 4, 8, 8, generator=g)                    # 64 px: the reference has 4x the area
    context = torch.cat([identity, negative.expand(2, -1, -1)])  # rows: cond id0, cond id1, uncond, uncond
    ours = eps(patched, x, sigma, context, [0, 1])
    comfy.sampler_helpers.prepare_sampling(patched, x.shape, {}, patched.model_options)
    out["banks_loaded_with_model"] = any(m.model.model is state.banks for m in mm.current_loaded_models)
    swapped = eps(patched, torch.cat([x[2:], x[:2]]), sigma, torch.cat([context[2:], context[:2]]), [1, 0])
    out["order_independent_max_diff"] = float((torch.cat([swapped[2:], swapped[:2]]) - ours).abs().max())

    # the stored tokens come from the clean pass, also after the LoRA'd weights were loaded for sampling
    again = apply(unet, adapter, {"samples": samples}, [[identity, {}]], 0.3)[0]
    again_banks = again.model_options["transformer_options"]["patches"]["attn1_patch"][-1].state.banks
    out["rewrite_after_lora_load_diff"] = max(float((again_banks[k] - state.banks[k]).abs().max()) for k in comfy_keys)

    dunet = diffusers_unet(models / "arc2face/arc2face")
    latents = samples * 0.18215
    tokens = clean_tokens(dunet, latents.expand(2, -1, -1, -1), identity)
    out["diffusers_blocks"] = len(tokens)
    out["bank_vs_clean_hooks_max_diff"] = max(float((state.banks[k] - tok).abs().max())
                                              for k, tok in zip(comfy_keys, tokens.values()))
    out["token_scale"] = max(float(tok.abs().max()) for tok in tokens.values())
    cond_mask = torch.tensor([True, True, False, False])
    with_lora(dunet, lora_path, STRENGTH)
    lora_tokens = clean_tokens(dunet, latents.expand(2, -1, -1, -1), identity)
    out["lora_write_pass_vs_clean_max_diff"] = max(float((lora_tokens[k] - tokens[k]).abs().max()) for k in tokens)
    expected = oracle_eps(dunet, tokens, [0, 1], cond_mask, x, t, sigma, context)
    lora_only = oracle_eps(dunet, tokens, [0, 1], cond_mask, x, t, sigma, context, readers=False)
    out["eps_scale"] = float(expected.abs().max())
    out["cond_max_diff"] = float((ours[:2] - expected[:2]).abs().max())
    out["uncond_max_diff"] = float((ours[2:] - expected[2:]).abs().max())
    out["cond_vs_lora_only"] = float((ours[:2] - lora_only[:2]).abs().max())
    out["uncond_vs_lora_only"] = float((ours[2:] - lora_only[2:]).abs().max())
    without_lora(dunet)
    plain = oracle_eps(dunet, tokens, [0, 1], cond_mask, x, t, sigma, context, readers=False)
    out["lora_only_vs_plain"] = float((lora_only - plain).abs().max())

    # another key style: peft keys with the alpha in the header (lora_alpha = 2 * rank), one reference per identity
    load_reference_lora = importlib.import_module("arc2face_pack.arc2face_core.reference.lora").load_reference_lora
    from builders.ref_lora import lora_pairs, lora_state_dict, peft_metadata, write_lora

    with tempfile.TemporaryDirectory() as tmp:
        pairs = lora_pairs(rank=4, seed=21)
        peft_path = write_lora(Path(tmp) / "pytorch_lora_weights.safetensors", lora_state_dict("peft", pairs),
                               peft_metadata(pairs, lora_alpha=8.0))
        two = torch.cat([samples, torch.randn(1, 4, 16, 16, generator=g)])
        peft_model = apply(unet, load_reference_lora(peft_path), {"samples": two}, [[identity, {}]], 0.5)[0]
        ours_peft = eps(peft_model, x, sigma, context, [0, 1])
        tokens_two = clean_tokens(dunet, two * 0.18215, identity)
        with_lora(dunet, peft_path, 0.5)
        expected_peft = oracle_eps(dunet, tokens_two, [0, 1], cond_mask, x, t, sigma, context)
        without_lora(dunet)
    out["peft_style_max_diff"] = float((ours_peft - expected_peft).abs().max())
    out["peft_cond_vs_first_model"] = float((ours_peft[:2] - ours[:2]).abs().max())

    # composition: the Expression Adapter (attn2) in either order, another pack's attn1 replacement and attn1 patch
    exp_adapter = expression.Arc2FaceExpressionAdapterLoader().load()[0]
    exp_apply = expression.Arc2FaceExpressionAdapter().apply
    expr = torch.randn(1, 55, generator=g) * 0.5       # a SMIRK-like expression, inside what the adapter takes:
    expr[:, 50:52] = torch.rand(1, 2, generator=g)       # eyelids 0 (open) .. 1 (closed)
    expr[:, 52] = expr[:, 52].abs()                      # the mouth opening is at least 0
    expr[:, 53:] = expr[:, 53:].clamp(-0.2, 0.2)         # the sideways jaw, as SMIRK clamps it
    ref_then_exp = exp_apply(patched, exp_adapter, expr, 1.0, 0.0, 1.0)[0]
    exp_then_ref = apply(exp_apply(unet, exp_adapter, expr, 1.0, 0.0, 1.0)[0], adapter, {"samples": samples},
                         [[identity, {}]], STRENGTH)[0]
    a, b = eps(ref_then_exp, x, sigma, context, [0, 1]), eps(exp_then_ref, x, sigma, context, [0, 1])
    out["expression_order_max_diff"] = float((a - b).abs().max())
    out["expression_changes_it"] = float((a - ours).abs().max())
    zero = exp_apply(patched, exp_adapter, expr, 0.0, 0.0, 1.0)[0]
    out["expression_weight0_vs_reference_only"] = float((eps(zero, x, sigma, context, [0, 1]) - ours).abs().max())

    calls = []
    foreign_after = patched.clone()
    for key in comfy_keys:
        foreign_after.set_model_attn1_replace(PlainAttn1(calls), key[0], key[1], key[2])
    out["foreign_replace_after_max_diff"] = float((eps(foreign_after, x, sigma, context, [0, 1]) - ours).abs().max())
    out["foreign_replace_calls"] = len(calls)
    foreign_first = unet.clone()
    for key in comfy_keys:
        foreign_first.set_model_attn1_replace(PlainAttn1(calls), key[0], key[1], key[2])
    foreign_first = apply(foreign_first, adapter, {"samples": samples}, [[identity, {}]], STRENGTH)[0]
    out["foreign_replace_before_max_diff"] = float((eps(foreign_first, x, sigma, context, [0, 1]) - ours).abs().max())

    try:
        apply(patched, adapter, {"samples": samples}, [[identity, {}]], STRENGTH)
        out["second_adapter_error"] = ""
    except Exception as exc:   # noqa: BLE001 - the message is what the test reads
        out["second_adapter_error"] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(out))


if __name__ == "__main__":
    main()
