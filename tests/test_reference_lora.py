"""The Reference Adapter's LoRA file: every key of each diffusers/peft style is mapped, scales as diffusers' own
loader (peft) computes them, and files that are not such a LoRA are refused with the keys named."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from arc2face_core.errors import CorruptWeightsError, InvalidInputError, WrongModelError
from arc2face_core.reference.lora import check_strength, load_reference_lora, parse_lora
from builders.ref_lora import STYLES, lora_pairs, lora_state_dict, lora_targets, peft_metadata, style_key, write_lora
from builders.sd15_random import SD15_UNET_CONFIG, _init_args, random_like_module
from builders.tiny_diffusers import TINY_UNET_CONFIG


@pytest.fixture(scope="module")
def sd15_weight_shapes():
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**_init_args(SD15_UNET_CONFIG))
    return {name: tuple(m.weight.shape) for name, m in unet.named_modules()
            if isinstance(getattr(m, "weight", None), torch.Tensor)}


@pytest.mark.parametrize("prefix", ["unet.", ""])
@pytest.mark.parametrize("style", STYLES)
def test_every_key_of_a_full_size_file_maps_to_an_sd15_module(style, prefix, sd15_weight_shapes):
    pairs = lora_pairs(rank=2)
    sd = lora_state_dict(style, pairs, prefix=prefix)
    assert len(pairs) == 128 and len(sd) == 256        # 16 blocks x 2 attentions x 4 projections, down and up each
    lora = parse_lora(sd)
    assert set(lora.modules) == set(pairs)
    for name, (down, up) in pairs.items():
        module = lora.modules[name]
        assert torch.equal(module.down, down) and torch.equal(module.up, up) and module.scale == 1.0
    used = {style_key(style, name, part, prefix) for name in lora.modules for part in ("down", "up")}
    assert used == set(sd)                              # every tensor of the file, none twice
    lora.check_fits(sd15_weight_shapes)                 # every module is a real SD1.5 module of the right shape


def _tiny_unet(seed: int = 0):
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(**_init_args(TINY_UNET_CONFIG))
    unet.load_state_dict(random_like_module(unet, seed, torch.float32, gain=0.5))
    return unet.eval()


def _merged_by_us(lora, strength: float) -> dict[str, torch.Tensor]:
    unet = _tiny_unet()
    return {name: unet.get_submodule(name).weight.detach() + strength * m.delta().reshape(
        unet.get_submodule(name).weight.shape) for name, m in lora.modules.items()}


def _merged_by_diffusers(path, strength: float) -> dict[str, torch.Tensor]:
    """diffusers' own loader (peft) reading the file as the reference demo does (folder + weight_name, safetensors,
    so its header metadata counts), then fused at ``strength``."""
    unet = _tiny_unet()
    unet.load_lora_adapter(str(path.parent), weight_name=path.name, use_safetensors=True, prefix="unet",
                           adapter_name="ref")
    unet.set_adapters(["ref"], [strength])
    unet.fuse_lora()
    return {name: unet.get_submodule(name).weight.detach() for name in lora_targets(TINY_UNET_CONFIG)}


@pytest.mark.parametrize("style", STYLES)
def test_merged_weights_equal_diffusers_own_loader(style, tmp_path):
    pairs = lora_pairs(TINY_UNET_CONFIG, rank=3, seed=5)
    path = write_lora(tmp_path / "pytorch_lora_weights.safetensors", lora_state_dict(style, pairs))
    ours, theirs = _merged_by_us(load_reference_lora(path), 0.8), _merged_by_diffusers(path, 0.8)
    assert set(ours) == set(theirs) and len(ours) == 32
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], atol=1e-5, rtol=1e-5)
    original = _tiny_unet().get_submodule(next(iter(ours))).weight
    assert (ours[next(iter(ours))] - original).abs().max() > 1e-2    # the LoRA does change the weights


@pytest.mark.parametrize("rslora, pattern", [(False, None), (True, None),
                                             (False, {"attn2.to_k": 1.0})])
def test_alpha_from_the_peft_config_in_the_header_as_diffusers(tmp_path, rslora, pattern):
    pairs = lora_pairs(TINY_UNET_CONFIG, rank=4, seed=6)
    path = write_lora(tmp_path / "pytorch_lora_weights.safetensors", lora_state_dict("peft", pairs),
                      peft_metadata(pairs, lora_alpha=8.0, use_rslora=rslora, alpha_pattern=pattern))
    lora = load_reference_lora(path)
    assert "peft config" in lora.alpha_from
    expected = 8.0 / (math.sqrt(4) if rslora else 4)
    scales = {name: m.scale for name, m in lora.modules.items()}
    special = [n for n in scales if pattern and n.endswith("attn2.to_k")]
    assert all(scales[n] == pytest.approx(1.0 / 4) for n in special)
    assert all(scales[n] == pytest.approx(expected) for n in scales if n not in special)
    ours, theirs = _merged_by_us(lora, 0.6), _merged_by_diffusers(path, 0.6)
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("style", ["diffusers", "peft"])
def test_alpha_tensors_scale_by_alpha_over_rank(style):
    """``.alpha`` keys (kohya's convention, which ComfyUI follows): the update is alpha/rank * up @ down."""
    pairs = lora_pairs(TINY_UNET_CONFIG, rank=4, seed=7)
    alphas = {name: 1.0 + i for i, name in enumerate(pairs)}
    lora = parse_lora(lora_state_dict(style, pairs, alphas=alphas))
    for name, (down, up) in pairs.items():
        torch.testing.assert_close(lora.modules[name].delta(), alphas[name] / 4 * (up @ down))


def test_a_bin_file_loads_through_weights_only(tmp_path):
    pairs = lora_pairs(TINY_UNET_CONFIG, rank=2)
    torch.save(lora_state_dict("diffusers", pairs), tmp_path / "pytorch_lora_weights.bin")
    assert set(load_reference_lora(tmp_path / "pytorch_lora_weights.bin").modules) == set(pairs)


def test_a_unet_checkpoint_is_not_a_lora_and_the_error_names_its_keys(tmp_path):
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**_init_args(TINY_UNET_CONFIG))
    path = write_lora(tmp_path / "unet.safetensors", random_like_module(unet, 0, torch.float32))
    with pytest.raises(WrongModelError, match=r"not a LoRA in a diffusers/peft key style.*Keys found: "
                                              r"\['conv_in\.bias', 'conv_in\.weight'"):
        load_reference_lora(path)


def test_a_kohya_lora_is_named_as_one_and_pointed_to_the_stock_loader(tmp_path):
    """kohya's layout (lora_unet_<path with underscores>.lora_down/lora_up/alpha), as sd-scripts writes it."""
    from safetensors.torch import save_file

    key = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    save_file({f"{key}.lora_down.weight": torch.randn(4, 320), f"{key}.lora_up.weight": torch.randn(320, 4),
               f"{key}.alpha": torch.tensor(4.0), "lora_te_text_model_encoder_layers_0_mlp_fc1.alpha": torch.tensor(1.0)},
              str(tmp_path / "style.safetensors"))
    with pytest.raises(WrongModelError, match=rf"this is a kohya-style LoRA \(\d keys like '{key}\.lora_.*never as "
                                              r"a kohya file.*LoraLoaderModelOnly"):
        load_reference_lora(tmp_path / "style.safetensors")


def _base():
    return lora_state_dict("diffusers", lora_pairs(TINY_UNET_CONFIG, rank=2))


def _mutated(change) -> dict:
    sd = copy.copy(_base())
    change(sd)
    return sd


@pytest.mark.parametrize("change, error, message", [
    (lambda sd: sd.pop(next(k for k in sd if k.endswith("lora.up.weight"))), CorruptWeightsError,
     r"has no LoRA up weight: the file is incomplete"),
    (lambda sd: sd.update({"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_magnitude_vector":
                           torch.ones(32)}), WrongModelError,
     r"1 of its 65 keys are not LoRA weights the pack can apply, e\.g\. \['unet\.down_blocks.*lora_magnitude_vector"),
    (lambda sd: sd.update({"text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora.down.weight":
                           torch.ones(2, 768)}), WrongModelError, r"1 keys are LoRA weights for a text encoder"),
    (lambda sd: sd.update({k: torch.full_like(v, float("nan")) for k, v in list(sd.items())[:1]}),
     CorruptWeightsError, r"contains NaN or infinite values"),
    (lambda sd: sd.update({k: v[:, :-1] for k, v in list(sd.items())[:1]}), None, None),   # fits no model: see below
    (lambda sd: sd.update({"unet.mid_block.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight":
                           torch.ones(2, 64)}), CorruptWeightsError, r"has its LoRA down weight twice"),
    (lambda sd: sd.update({"unet.down_blocks.9.attn1.to_q.alpha": torch.tensor(1.0)}), CorruptWeightsError,
     r"alpha values without LoRA weights"),
])
def test_broken_files_are_refused_with_what_is_wrong(change, error, message):
    sd = _mutated(change)
    if error is None:
        lora = parse_lora(sd, source="bad.safetensors")
        unet = _tiny_unet()
        shapes = {n: tuple(unet.get_submodule(n).weight.shape) for n in lora.modules}
        with pytest.raises(WrongModelError, match=r"bad\.safetensors: the LoRA does not fit the UNet: 1 modules have "
                                                  r"other shapes"):
            lora.check_fits(shapes, "the UNet")
        return
    with pytest.raises(error, match=message):
        parse_lora(sd, source="bad.safetensors")


def test_a_lora_for_another_unet_does_not_fit_sd15(sd15_weight_shapes):
    """The tiny UNet's module names: some exist in SD1.5 with other shapes, some not at all."""
    lora = parse_lora(lora_state_dict("diffusers", lora_pairs(TINY_UNET_CONFIG, rank=2)), source="other.safetensors")
    with pytest.raises(WrongModelError, match=r"other\.safetensors: .*(no counterpart|other shapes)"):
        lora.check_fits(sd15_weight_shapes)


def test_an_empty_file_and_a_dora_config_are_refused(tmp_path):
    with pytest.raises(CorruptWeightsError, match="holds no tensors|not a state dict"):
        parse_lora({}, source="empty")
    pairs = lora_pairs(TINY_UNET_CONFIG, rank=2)
    metadata = peft_metadata(pairs, lora_alpha=2.0)
    metadata["lora_adapter_metadata"] = metadata["lora_adapter_metadata"].replace('"unet.use_dora": false',
                                                                                  '"unet.use_dora": true')
    with pytest.raises(WrongModelError, match="DoRA"):
        parse_lora(lora_state_dict("peft", pairs), metadata)
    with pytest.raises(CorruptWeightsError, match="not valid JSON"):
        parse_lora(lora_state_dict("peft", pairs), {"lora_adapter_metadata": "{unet.r"})


@pytest.mark.parametrize("value", [float("nan"), -0.1, 1.5, float("inf"), True, "0.8"])
def test_strength_outside_the_official_range_is_refused(value):
    with pytest.raises(InvalidInputError, match="strength must be a number from 0 to 1"):
        check_strength(value)
