"""The Expression Adapter against diffusers' own IP-Adapter code: its converter, projection classes, loader and
IPAdapterAttnProcessor2_0 are the independent route; files are written in the real exp_adapter.bin format."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from arc2face_core.batching import IdentityLayout
from arc2face_core.errors import CorruptWeightsError, InvalidInputError, WrongModelError
from arc2face_core.expression.adapter import (
    SD15_ATTN2_LAYERS,
    check_fits,
    decoupled_attention,
    expression_tokens_for_batch,
    load_expression_adapter,
)
from builders.exp_adapter import (
    adapter_state,
    image_proj_state,
    ip_adapter_state,
    sd15_ip_layer_widths,
    write_exp_adapter,
)
from builders.pickles import RunsCode
from builders.sd15_random import SD15_UNET_CONFIG, _init_args
from numerics import ulps

diffusers = pytest.importorskip("diffusers")
from diffusers.models.attention_processor import Attention, AttnProcessor2_0, IPAdapterAttnProcessor2_0  # noqa: E402
from diffusers.models.embeddings import MultiIPAdapterImageProjection  # noqa: E402

SMALL = {1: 320, 3: 320}    # two layers: enough for the file-format error cases


@pytest.fixture(scope="module")
def meta_unet():
    with torch.device("meta"):
        return diffusers.UNet2DConditionModel(**_init_args(SD15_UNET_CONFIG))


@pytest.fixture(scope="module")
def adapter_file(tmp_path_factory):
    return write_exp_adapter(tmp_path_factory.mktemp("exp") / "exp_adapter" / "exp_adapter.bin")


@pytest.fixture(scope="module")
def adapter(adapter_file):
    return load_expression_adapter(adapter_file)


def expressions(n: int, seed: int = 0) -> torch.Tensor:
    """Random expressions SMIRK could output: 50 coefficients, eyelids in 0..1, jaw opening >= 0, sideways ±0.2."""
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.randn(n, 50, generator=g), torch.rand(n, 2, generator=g),
                      0.4 * torch.rand(n, 1, generator=g), 0.4 * torch.rand(n, 2, generator=g) - 0.2], dim=1)


# ---------------------------------------------------------------------------------------------------- loading
def test_real_format_file_loads_with_shapes_from_the_file(adapter, adapter_file):
    assert (adapter.expression_dim, adapter.num_tokens, adapter.cross_attention_dim) == (55, 4, 768)
    assert adapter.layer_ids == tuple(range(1, 32, 2))
    assert adapter.inner_dims == sd15_ip_layer_widths()
    assert adapter.dtype == torch.float32 and adapter.source == str(adapter_file)
    stored = torch.load(adapter_file, weights_only=True)
    torch.testing.assert_close(adapter.to_v_ip["17"].weight, stored["ip_adapter"]["17.to_v_ip.weight"], atol=0, rtol=0)
    tokens = adapter.project(expressions(3))
    k, v = adapter.kv(5, tokens)
    assert tokens.shape == (3, 4, 768) and k.shape == v.shape == (3, 4, 640)
    torch.testing.assert_close(k, tokens @ stored["ip_adapter"]["5.to_k_ip.weight"].T, atol=1e-5, rtol=0)


@pytest.mark.parametrize("projection, kwargs, tokens", [
    ("faceid_mlp", dict(num_tokens=8, hidden=64), 8),
    ("linear", dict(num_tokens=2), 2),
    ("full_mlp", {}, 1),
])
def test_token_count_and_widths_come_from_the_shapes(tmp_path, projection, kwargs, tokens):
    state = {"image_proj": image_proj_state(projection, expression_dim=52, cross_dim=96, **kwargs),
             "ip_adapter": ip_adapter_state({1: 32, 3: 64}, cross_dim=96)}
    adapter = load_expression_adapter(write_exp_adapter(tmp_path / "a.bin", state))
    assert (adapter.expression_dim, adapter.num_tokens, adapter.cross_attention_dim) == (52, tokens, 96)
    assert adapter.inner_dims == {1: 32, 3: 64} and adapter.image_proj.family == projection
    assert adapter.project(torch.randn(2, 52)).shape == (2, tokens, 96)


def test_flat_safetensors_layout_and_fp16(tmp_path, meta_unet):
    state = adapter_state(widths=SMALL)
    flat = {f"{part}.{k}": v.half() for part, sd in state.items() for k, v in sd.items()}
    save_file(flat, str(tmp_path / "a.safetensors"))
    other = load_expression_adapter(tmp_path / "a.safetensors")
    assert other.dtype == torch.float16 and other.project(expressions(1)).dtype == torch.float16
    # Against diffusers' projection of the same fp16 weights: computing in fp16, within one unit in the last place;
    # computing in float32 (other maths), further (so the check sees a dtype path that is not fp16's).
    e = expressions(2)
    converted = {name: meta_unet._convert_ip_adapter_image_proj_to_diffusers(
        {k: v.half().to(dtype) for k, v in state["image_proj"].items()}, low_cpu_mem_usage=False).to(dtype)
        for name, dtype in (("fp16", torch.float16), ("fp32", torch.float32))}
    with torch.no_grad():
        ref = {name: MultiIPAdapterImageProjection([proj])([e.to(next(proj.parameters()).dtype).unsqueeze(1)])[0]
               for name, proj in converted.items()}
    got = other.project(e)
    assert ulps(got, ref["fp16"].reshape(got.shape), torch.float16) <= 1.0
    assert ulps(got, ref["fp32"].reshape(got.shape), torch.float16) > 1.0


def _with_nan(state):
    state["ip_adapter"]["3.to_v_ip.weight"][0, 0] = float("nan")
    return state


def _with(state, part, drop=(), **extra):
    for key in drop:
        del state[part][key]
    state[part].update(extra)
    return state


@pytest.mark.parametrize("make, message", [
    (lambda: [torch.zeros(3)], "not an IP-Adapter-style file: it holds a list"),
    (lambda: image_proj_state(), r"not an IP-Adapter-style file: it holds a dict with keys \['norm.bias'"),
    (lambda: {"image_proj": image_proj_state(), "ip_adapter": {"1.to_k_ip.weight": 3}}, "not tensors"),
    (lambda: {"image_proj": image_proj_state("resampler"), "ip_adapter": ip_adapter_state(SMALL)},
     r"unsupported 'image_proj' layout with keys \['latents', 'proj_in.weight', 'proj_out.weight'\]"),
    (lambda: _with_nan(adapter_state(widths=SMALL)), "'3.to_v_ip.weight' contains NaN"),
    (lambda: _with(adapter_state(widths=SMALL), "ip_adapter", **{"1.to_k_lora.down.weight": torch.zeros(4, 768)}),
     r"does not support: \['1.to_k_lora.down.weight'\]"),
    (lambda: _with(adapter_state(widths=SMALL), "ip_adapter", drop=["3.to_v_ip.weight"]), "layer 3 needs to_k_ip and to_v_ip"),
    (lambda: _with(adapter_state(widths=SMALL), "image_proj", **{"proj.2.weight": torch.zeros(3072, 100)}),
     "shapes do not fit together"),
    (lambda: _with(adapter_state(widths=SMALL), "image_proj", **{"norm.weight": torch.ones(700)}),
     "not a whole number of 700-wide tokens"),
])
def test_bad_files_give_clear_errors_naming_the_file(tmp_path, make, message):
    path = write_exp_adapter(tmp_path / "exp_adapter.bin", make())
    with pytest.raises(CorruptWeightsError, match=message) as err:
        load_expression_adapter(path)
    assert str(path) in str(err.value)


def test_pickle_with_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    state = adapter_state(widths=SMALL)
    state["image_proj"]["evil"] = RunsCode(str(marker))
    path = write_exp_adapter(tmp_path / "exp_adapter.bin", state)
    with pytest.raises(CorruptWeightsError, match="refuses") as err:
        load_expression_adapter(path)
    assert str(path) in str(err.value) and not marker.exists()


# ---------------------------------------------------------------------------------------------------- vs diffusers
@pytest.mark.parametrize("projection", ["faceid_mlp", "linear", "full_mlp"])
def test_projection_equals_diffusers_converter(tmp_path, meta_unet, projection):
    state = adapter_state(projection, widths=SMALL, seed=3)   # linear: diffusers assumes 4 tokens, as written here
    ours = load_expression_adapter(write_exp_adapter(tmp_path / "a.bin", state))
    theirs = meta_unet._convert_ip_adapter_image_proj_to_diffusers(state["image_proj"], low_cpu_mem_usage=False)
    e = expressions(3, seed=4)
    embeds = torch.cat([torch.zeros_like(e), e]).unsqueeze(1)     # the demo's [2B, 1, 55] with the zero expression
    with torch.no_grad():
        ref = MultiIPAdapterImageProjection([theirs])([embeds])[0]
    got = ours.project(embeds[:, 0])
    torch.testing.assert_close(got, ref.reshape(got.shape), atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.zero_tokens(), got[:1], atol=1e-6, rtol=0)


def test_layer_weights_land_where_diffusers_loader_puts_them(adapter, adapter_file, meta_unet):
    state = torch.load(adapter_file, weights_only=True)
    procs = meta_unet._convert_ip_adapter_attn_to_diffusers([state], low_cpu_mem_usage=False)
    by_module = {layer.module: layer for layer in SD15_ATTN2_LAYERS.values()}
    ip_procs = {n[: -len(".processor")]: p for n, p in procs.items() if isinstance(p, IPAdapterAttnProcessor2_0)}
    assert set(ip_procs) == set(by_module)
    for module, proc in ip_procs.items():
        layer_id = by_module[module].layer_id
        torch.testing.assert_close(proc.to_k_ip[0].weight, adapter.to_k_ip[str(layer_id)].weight, atol=0, rtol=0)
        torch.testing.assert_close(proc.to_v_ip[0].weight, adapter.to_v_ip[str(layer_id)].weight, atol=0, rtol=0)


def test_sd15_mapping_matches_diffusers_unet(meta_unet):
    names = list(meta_unet.attn_processors)
    assert len(names) == 32 and sorted(SD15_ATTN2_LAYERS) == list(range(1, 32, 2))
    assert [i for i, n in enumerate(names) if n.endswith("attn2.processor")] == list(range(1, 32, 2))
    for layer_id, layer in SD15_ATTN2_LAYERS.items():
        assert names[layer_id] == layer.module + ".processor"
        attn = meta_unet.get_submodule(layer.module)
        assert attn.to_q.out_features == layer.inner_dim and attn.to_k.in_features == 768
    keys = [layer.comfy_key for layer in SD15_ATTN2_LAYERS.values()]
    assert sorted(k[1] for k in keys if k[0] == "input") == [1, 2, 4, 5, 7, 8]
    assert sorted(k[1] for k in keys if k[0] == "output") == list(range(3, 12))
    assert [k for k in keys if k[0] == "middle"] == [("middle", 0)] and len(set(keys)) == 16
    # ComfyUI numbers input_blocks 1 + 3*level + j and output_blocks 3*level + j (comfy/utils.py unet_to_diffusers)
    expected = {1: ("input", 1), 3: ("input", 2), 5: ("input", 4), 11: ("input", 8), 13: ("output", 3),
                19: ("output", 6), 29: ("output", 11), 31: ("middle", 0)}
    assert {i: SD15_ATTN2_LAYERS[i].comfy_key for i in expected} == expected


def _attention_module(inner: int, seed: int) -> Attention:
    torch.manual_seed(seed)
    return Attention(query_dim=inner, cross_attention_dim=768, heads=8, dim_head=inner // 8, out_bias=True).eval()


def _naive_attention(q, k, v, heads):
    b, n, inner = q.shape
    q, k, v = (t.reshape(b, -1, heads, inner // heads).transpose(1, 2) for t in (q, k, v))
    weights = torch.softmax(q @ k.transpose(-1, -2) / (inner // heads) ** 0.5, dim=-1)
    return (weights @ v).transpose(1, 2).reshape(b, n, inner)


@pytest.mark.filterwarnings("ignore:You have passed a tensor as `encoder_hidden_states`:FutureWarning")
@pytest.mark.parametrize("layer_id, scale", [(5, 1.0), (31, 0.6), (27, 2.0)])
def test_decoupled_attention_equals_diffusers_processor(adapter, layer_id, scale):
    inner = adapter.inner_dims[layer_id]
    attn = _attention_module(inner, seed=layer_id)
    g = torch.Generator().manual_seed(layer_id)
    hidden, text = torch.randn(2, 64, inner, generator=g), torch.randn(2, 77, 768, generator=g)
    tokens = adapter.project(expressions(2, seed=layer_id))
    proc = IPAdapterAttnProcessor2_0(hidden_size=inner, cross_attention_dim=768, num_tokens=(4,), scale=scale)
    proc.load_state_dict({"to_k_ip.0.weight": adapter.to_k_ip[str(layer_id)].weight,
                          "to_v_ip.0.weight": adapter.to_v_ip[str(layer_id)].weight})
    attn.set_processor(proc)
    with torch.no_grad():
        ref_tuple = attn(hidden, encoder_hidden_states=(text, [tokens]))
        ref_concat = attn(hidden, encoder_hidden_states=torch.cat([text, tokens], dim=1))
        q, k, v = attn.to_q(hidden), attn.to_k(text), attn.to_v(text)
        ip_k, ip_v = adapter.kv(layer_id, tokens)
        ours = attn.to_out[0](decoupled_attention(q, k, v, ip_k, ip_v, heads=8, scale=scale))
        naive = attn.to_out[0](decoupled_attention(q, k, v, ip_k, ip_v, 8, scale, attention=_naive_attention))
    for ref in (ref_tuple, ref_concat):
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(naive, ref_tuple, atol=1e-5, rtol=0)
    assert (ours - attn.to_out[0](_naive_attention(q, k, v, 8))).abs().max() > 1e-3   # the expression does something


def test_scale_zero_is_plain_attention(adapter):
    attn = _attention_module(640, seed=9)
    hidden, text = torch.randn(1, 16, 640), torch.randn(1, 77, 768)
    with torch.no_grad():
        ref = attn(hidden, encoder_hidden_states=text)   # diffusers' plain AttnProcessor2_0
        ip_k, ip_v = adapter.kv(7, adapter.project(expressions(1)))
        ours = attn.to_out[0](decoupled_attention(attn.to_q(hidden), attn.to_k(text), attn.to_v(text), ip_k, ip_v, 8, 0.0))
    assert isinstance(attn.processor, AttnProcessor2_0)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_decoupled_attention_refuses_mismatched_tokens():
    q = torch.randn(2, 16, 320)
    with pytest.raises(InvalidInputError, match="same batch and width"):
        decoupled_attention(q, q, q, torch.randn(1, 4, 320), torch.randn(1, 4, 320), 8, 1.0)


# ---------------------------------------------------------------------------------------------------- fitting a model
def sd15_model_layers(by: str = "comfy") -> dict:
    return {(layer.comfy_key if by == "comfy" else layer.layer_id): layer.inner_dim for layer in SD15_ATTN2_LAYERS.values()}


@pytest.mark.parametrize("by", ["comfy", "diffusers"])
def test_check_fits_returns_the_layer_for_every_model_key(adapter, by):
    fits = check_fits(adapter, sd15_model_layers(by))
    assert len(fits) == 16 and sorted(fits.values()) == list(range(1, 32, 2))
    if by == "comfy":
        assert fits[("middle", 0)] == 31 and fits[("input", 1)] == 1 and fits[("output", 11)] == 29


def test_check_fits_errors(tmp_path, adapter):
    widths = sd15_ip_layer_widths()
    short = {i: w for i, w in widths.items() if i <= 23}
    few = load_expression_adapter(write_exp_adapter(tmp_path / "few.bin", adapter_state(widths=short)))
    with pytest.raises(WrongModelError, match="adapter has 12 layers, the model 16") as err:
        check_fits(few, sd15_model_layers())
    assert str(tmp_path / "few.bin") in str(err.value)
    wide = load_expression_adapter(write_exp_adapter(tmp_path / "wide.bin", adapter_state(widths={**widths, 5: 320})))
    with pytest.raises(WrongModelError, match=r"layer 5 is 320 wide in the adapter, 640 in the model \(at \('input', 4\)\)"):
        check_fits(wide, sd15_model_layers())
    with pytest.raises(WrongModelError, match="the model's layers \\[33\\] have no adapter weights, the adapter's "
                                              "layers \\[31\\]"):
        check_fits(adapter, {**{i: w for i, w in sd15_model_layers("ids").items() if i != 31}, 33: 1280})
    bad_key = {**sd15_model_layers(), ("middle", 1): 1280}
    del bad_key[("middle", 0)]
    with pytest.raises(WrongModelError, match=r"\('middle', 1\), which SD1.5 does not"):
        check_fits(adapter, bad_key)
    with pytest.raises(WrongModelError, match="768-wide tokens, the model's cross-attention expects 1024"):
        check_fits(adapter, sd15_model_layers(), context_dim=1024)


# ---------------------------------------------------------------------------------------------------- batch layout
def _tokens(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    cond = torch.arange(1, n + 1, dtype=torch.float32).reshape(n, 1, 1).expand(n, 4, 8)
    return cond, torch.zeros(1, 4, 8)


@pytest.mark.parametrize("order", [[0, 1], [1, 0]])
def test_tokens_for_identities_times_images(order):
    cond, uncond = _tokens(2)
    out = expression_tokens_for_batch(cond, uncond, order, batch=8, layout=IdentityLayout(2, 2))
    rows = out[:, 0, 0].tolist()
    cond_rows, uncond_rows = [1.0, 1.0, 2.0, 2.0], [0.0] * 4
    assert rows == (cond_rows + uncond_rows if order == [0, 1] else uncond_rows + cond_rows)
    assert out.shape == (8, 4, 8)


def test_three_identities_of_two_images_each_keep_their_expression():
    """The case the old guess (images_per_id = batch / expressions) paired wrongly: identity 1's two images differ."""
    cond, uncond = _tokens(3)
    out = expression_tokens_for_batch(cond, uncond, [0, 1], 12, IdentityLayout(3, 2))
    assert out[:, 0, 0].tolist() == [1, 1, 2, 2, 3, 3] + [0] * 6


def test_one_expression_broadcasts_and_single_chunks():
    cond, uncond = _tokens(1)
    assert expression_tokens_for_batch(cond, uncond, [0, 1], 6, IdentityLayout(1, 3))[:, 0, 0].tolist() == \
        [1, 1, 1, 0, 0, 0]
    assert expression_tokens_for_batch(cond, uncond, [0], 2, None)[:, 0, 0].tolist() == [1, 1]
    assert expression_tokens_for_batch(_tokens(2)[0], uncond, [1], 4, IdentityLayout(2, 2))[:, 0, 0].tolist() == [0] * 4


def test_without_a_recorded_layout_every_row_is_its_own_identity():
    """The stock KSampler: 4 latents are 4 identities, so 4 expressions pair one to one."""
    cond, uncond = _tokens(4)
    assert expression_tokens_for_batch(cond, uncond, [1, 0], 8, None)[:, 0, 0].tolist() == [0] * 4 + [1, 2, 3, 4]


@pytest.mark.parametrize("n, order, batch, layout, message", [
    (2, [0, 1], 7, IdentityLayout(2, 2), "cannot be split into 2 equal"),
    # 4 identities x 1 image with 2 expressions: once silently split as identities 0-1 / 2-3
    (2, [0, 1], 8, IdentityLayout(4, 1), r"^2 expressions for 4 identities × 1 image per identity: give 1 "
                                         r"expression \(for every image\) or 4 \(one per identity\)"),
    (2, [0, 1], 12, IdentityLayout(3, 2), "2 expressions for 3 identities × 2 images per identity: give 1 "),
    (2, [0, 1], 8, None, "2 expressions for 4 identities × 1 image per identity"),
    (2, [0, 1], 6, IdentityLayout(2, 2), "laid out 2 identities × 2 images per identity = 4 latents, but the "
                                         "model was called with 3"),
    (2, [], 4, IdentityLayout(1, 1), "non-empty list"),
    (1, [0, 2], 4, IdentityLayout(1, 1), "non-empty list of 0"),
])
def test_token_layout_errors(n, order, batch, layout, message):
    cond, uncond = _tokens(n)
    with pytest.raises(InvalidInputError, match=message):
        expression_tokens_for_batch(cond, uncond, order, batch, layout)
    with pytest.raises(InvalidInputError, match=r"\[N, T, D\] and \[1, T, D\]"):
        expression_tokens_for_batch(cond, torch.zeros(2, 4, 8), [0], 2, None)


@pytest.mark.parametrize("bad, message", [
    (torch.randn(2, 52), "expression has 52 values per row, the adapter expects 55"),
    (torch.randn(55), r"shape \[N, 55\]"),
    (torch.zeros(1, 55, dtype=torch.int64), "floating point"),
    (torch.tensor([[0.0] * 54 + [float("inf")], [0.0] * 55]), r"rows \[1\] contain NaN"),
    ([0.0] * 55, "torch tensor"),
])
def test_bad_expressions_are_refused(adapter, bad, message):
    with pytest.raises(InvalidInputError, match=message):
        adapter.project(bad)


def test_a_host_may_set_a_device_attribute(adapter_file):
    """ComfyUI's ModelPatcher assigns ``module.device``; the adapter must accept it and keep working."""
    fresh = load_expression_adapter(adapter_file)
    fresh.device = torch.device("cpu")
    tokens = fresh.project(expressions(2))
    assert tokens.shape == (2, fresh.num_tokens, 768) and fresh.weight_device.type == "cpu"
