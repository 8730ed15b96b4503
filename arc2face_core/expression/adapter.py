"""Arc2Face's Expression Adapter: IP-Adapter-style decoupled cross-attention driven by a FLAME expression vector.

The file ``exp_adapter/exp_adapter.bin`` is a diffusers IP-Adapter dict ``{"image_proj": {...}, "ip_adapter": {...}}``.
``image_proj`` turns an expression row [E] (55 for Arc2Face) into T tokens of the cross-attention width; ``ip_adapter``
holds ``"{id}.to_k_ip.weight"`` / ``"{id}.to_v_ip.weight"`` [inner, cross] for every cross-attention layer, where ``id``
counts diffusers' ``unet.attn_processors`` (attn1 even, attn2 odd). Every width and the token count come from the
tensor shapes. Each attn2 layer then computes ``attn(q, K_text, V_text) + scale * attn(q, to_k_ip(tok), to_v_ip(tok))``;
the negative (uncond) branch gets the tokens of a zero expression, exactly as the reference demo feeds
``cat([zeros_like(e), e])``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..batching import IdentityLayout, chunk_layout, per_row
from ..checkpoints import as_state_dict, check_finite, read_checkpoint
from ..errors import CorruptWeightsError, InvalidInputError, WrongModelError
from ..validation import MAX_BATCH, batched_tensor, positive_int
from .vectors import EXPRESSION_DIM, check_expression_ranges

ComfyKey = tuple  # ("input", 1) ... as passed to ComfyUI's set_model_attn2_replace(patch, *key)
Attention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]


@dataclass(frozen=True)
class Attn2Layer:
    layer_id: int           # diffusers' IP-Adapter processor id ("{id}.to_k_ip.weight")
    comfy_key: ComfyKey     # ComfyUI's attn2 patch key (block name, block number); SD1.5 has one transformer per block
    module: str             # the attn2 Attention module's path in diffusers' UNet2DConditionModel
    inner_dim: int          # heads * dim_head of that layer


def _sd15_attn2_layers() -> dict[int, Attn2Layer]:
    # diffusers registers down_blocks, up_blocks, then mid_block, and numbers processors in that order; ComfyUI numbers
    # input_blocks 1 + 3*level + j (block 0 is conv_in, every third a downsampler), output_blocks 3*level + j.
    widths = (320, 640, 1280, 1280)
    found = []
    for level in range(3):
        for j in range(2):
            found.append((("input", 1 + 3 * level + j), f"down_blocks.{level}.attentions.{j}", widths[level]))
    for level in range(1, 4):
        for j in range(3):
            found.append((("output", 3 * level + j), f"up_blocks.{level}.attentions.{j}", widths[3 - level]))
    found.append((("middle", 0), "mid_block.attentions.0", widths[-1]))
    return {2 * i + 1: Attn2Layer(2 * i + 1, key, f"{path}.transformer_blocks.0.attn2", width)
            for i, (key, path, width) in enumerate(found)}


SD15_ATTN2_LAYERS: dict[int, Attn2Layer] = _sd15_attn2_layers()
_BY_COMFY_KEY = {layer.comfy_key: layer for layer in SD15_ATTN2_LAYERS.values()}


# ---------------------------------------------------------------------------------------------------- projection
_MLP = {"proj.0.weight", "proj.0.bias", "proj.2.weight", "proj.2.bias"}
_FAMILIES = {  # the plain (no image encoder) image_proj layouts of diffusers' converter that take a 1-D vector
    "faceid_mlp": _MLP | {"norm.weight", "norm.bias"},          # IPAdapterFaceIDImageProjection
    "linear": {"proj.weight", "proj.bias", "norm.weight", "norm.bias"},  # ImageProjection
    "full_mlp": _MLP | {"proj.3.weight", "proj.3.bias"},        # IPAdapterFullImageProjection (1 token per vector)
}


class TokenProjection(nn.Module):
    """``proj`` (Linear, or Linear-GELU-Linear[-LayerNorm]) → reshape to T tokens → optional LayerNorm ``norm``."""

    def __init__(self, family: str, expression_dim: int, hidden_dim: int | None, num_tokens: int, cross_dim: int):
        super().__init__()
        self.family, self.num_tokens, self.cross_dim = family, num_tokens, cross_dim
        if family == "linear":
            self.proj = nn.Linear(expression_dim, num_tokens * cross_dim)
        else:
            layers = [nn.Linear(expression_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, num_tokens * cross_dim)]
            self.proj = nn.Sequential(*layers, *([nn.LayerNorm(cross_dim)] if family == "full_mlp" else []))
        self.norm = nn.LayerNorm(cross_dim) if family != "full_mlp" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x).reshape(x.shape[0], self.num_tokens, self.cross_dim)
        return self.norm(x) if self.norm is not None else x


def _projection_for(sd: Mapping[str, torch.Tensor], path: Path) -> TokenProjection:
    keys = set(sd)
    family = next((name for name, wanted in _FAMILIES.items() if keys == wanted), None)
    if family is None:
        raise CorruptWeightsError(
            f"{path}: unsupported 'image_proj' layout with keys {sorted(keys)}. Supported: a Linear 'proj' + "
            f"LayerNorm 'norm', or an MLP 'proj.0'/'proj.2' + LayerNorm 'norm' or 'proj.3'. Is it the right file?")
    matrices = {"proj.weight", "proj.0.weight", "proj.2.weight"}  # the rest are biases and LayerNorm vectors
    bad = [f"{k} {tuple(v.shape)}" for k, v in sd.items() if v.ndim != (2 if k in matrices else 1)]
    if bad:
        raise CorruptWeightsError(f"{path}: 'image_proj' tensors have the wrong number of dimensions: {bad}")
    first, last = ("proj", "proj") if family == "linear" else ("proj.0", "proj.2")
    cross_dim = sd["proj.3.weight" if family == "full_mlp" else "norm.weight"].shape[0]
    out = sd[f"{last}.weight"].shape[0]
    if out % cross_dim:
        raise CorruptWeightsError(f"{path}: 'image_proj' '{last}' gives {out} values, not a whole number of "
                                  f"{cross_dim}-wide tokens")
    hidden = None if family == "linear" else sd["proj.0.weight"].shape[0]
    return TokenProjection(family, sd[f"{first}.weight"].shape[1], hidden, out // cross_dim, cross_dim)


_IP_KEY = re.compile(r"(\d+)\.to_([kv])_ip\.weight")


def _layer_widths(sd: Mapping[str, torch.Tensor], path: Path) -> dict[int, int]:
    found: dict[int, dict[str, tuple]] = {}
    unknown = []
    for key, value in sd.items():
        match = _IP_KEY.fullmatch(key)
        if match is None:
            unknown.append(key)
        else:
            found.setdefault(int(match[1]), {})[match[2]] = tuple(value.shape)
    if unknown or not found:
        what = f"weights this pack does not support: {sorted(unknown)[:6]}" if unknown else "no to_k_ip/to_v_ip weights"
        raise CorruptWeightsError(f"{path}: the 'ip_adapter' dict holds {what}. Is it Arc2Face's Expression Adapter?")
    for layer_id, shapes in sorted(found.items()):
        if shapes.keys() != {"k", "v"} or shapes["k"] != shapes["v"] or len(shapes["k"]) != 2:
            raise CorruptWeightsError(f"{path}: layer {layer_id} needs to_k_ip and to_v_ip weights of one 2-D shape, "
                                      f"found {shapes}")
    return {layer_id: shapes["k"][0] for layer_id, shapes in sorted(found.items())}


# ---------------------------------------------------------------------------------------------------- the adapter
class ExpressionAdapter(nn.Module):
    """The projection and the per-layer ``to_k_ip``/``to_v_ip`` of an Expression Adapter file."""

    def __init__(self, projection: TokenProjection, inner_dims: Mapping[int, int], source: str = ""):
        super().__init__()
        self.image_proj = projection
        self.to_k_ip = nn.ModuleDict({str(i): nn.Linear(projection.cross_dim, w, bias=False) for i, w in inner_dims.items()})
        self.to_v_ip = nn.ModuleDict({str(i): nn.Linear(projection.cross_dim, w, bias=False) for i, w in inner_dims.items()})
        self.source = source

    @property
    def expression_dim(self) -> int:
        proj = self.image_proj.proj
        return (proj if isinstance(proj, nn.Linear) else proj[0]).in_features

    @property
    def num_tokens(self) -> int:
        return self.image_proj.num_tokens

    @property
    def cross_attention_dim(self) -> int:
        return self.image_proj.cross_dim

    @property
    def layer_ids(self) -> tuple[int, ...]:
        return tuple(sorted(int(i) for i in self.to_k_ip))

    @property
    def inner_dims(self) -> dict[int, int]:
        return {i: self.to_k_ip[str(i)].out_features for i in self.layer_ids}

    @property
    def dtype(self) -> torch.dtype:
        return self.to_k_ip[str(self.layer_ids[0])].weight.dtype

    @property
    def weight_device(self) -> torch.device:
        # Not named ``device``: ComfyUI's ModelPatcher sets a ``device`` attribute on the modules it manages.
        return self.to_k_ip[str(self.layer_ids[0])].weight.device

    def project(self, expressions: torch.Tensor) -> torch.Tensor:
        """Expression rows [N, E] → tokens [N, T, cross_attention_dim] in the adapter's dtype and device."""
        expressions = validate_expressions(expressions, self.expression_dim)
        with torch.no_grad():
            return self.image_proj(expressions.to(self.weight_device, self.dtype))

    def zero_tokens(self) -> torch.Tensor:
        """The negative branch: tokens of the zero expression, [1, T, cross_attention_dim]."""
        return self.project(torch.zeros(1, self.expression_dim))

    def kv(self, layer_id: int, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoupled keys and values of one layer: tokens [B, T, cross] → ([B, T, inner], [B, T, inner])."""
        if str(layer_id) not in self.to_k_ip:
            raise InvalidInputError(f"the Expression Adapter has no layer {layer_id}; it has {list(self.layer_ids)}")
        tokens = tokens.to(self.weight_device, self.dtype)
        with torch.no_grad():
            return self.to_k_ip[str(layer_id)](tokens), self.to_v_ip[str(layer_id)](tokens)


def _split_file(obj: Any, path: Path) -> tuple[dict, dict]:
    parts = ("image_proj", "ip_adapter")
    if isinstance(obj, Mapping) and obj and all(isinstance(k, str) and k.split(".")[0] in parts for k in obj) \
            and not set(parts) & set(obj):  # the flat safetensors layout: "image_proj.x", "ip_adapter.1.to_k_ip.weight"
        obj = {part: {k[len(part) + 1:]: v for k, v in obj.items() if k.startswith(part + ".")} for part in parts}
    if not isinstance(obj, Mapping) or not all(isinstance(obj.get(p), Mapping) for p in parts):
        found = f"a dict with keys {sorted(map(str, obj))[:8]}" if isinstance(obj, Mapping) else f"a {type(obj).__name__}"
        raise CorruptWeightsError(f"{path} is not an IP-Adapter-style file: it holds {found}, not a dict with "
                                  f"'image_proj' and 'ip_adapter' weight dicts. Is it exp_adapter/exp_adapter.bin?")
    return tuple(as_state_dict(obj[p], path, what=f"'{p}' dict") for p in parts)


def load_expression_adapter(path: str | os.PathLike, *, source: str | None = None) -> ExpressionAdapter:
    """Read an Expression Adapter file (never running code from it) and build the modules its shapes describe."""
    path = Path(path)
    image_proj, ip_layers = _split_file(read_checkpoint(path, source=source), path)
    check_finite(image_proj, path)
    check_finite(ip_layers, path)
    not_float = [k for k, v in {**image_proj, **ip_layers}.items() if not v.is_floating_point()]
    if not_float:
        raise CorruptWeightsError(f"{path}: tensors {not_float[:5]} are not floating point; the file is corrupt")
    inner_dims = _layer_widths(ip_layers, path)
    with torch.device("meta"):  # shapes only: the file's tensors are assigned below
        adapter = ExpressionAdapter(_projection_for(image_proj, path), inner_dims, os.fspath(path))
    weights = {f"image_proj.{k}": v for k, v in image_proj.items()}
    for key, value in ip_layers.items():  # "5.to_k_ip.weight" -> "to_k_ip.5.weight"
        match = _IP_KEY.fullmatch(key)
        weights[f"to_{match[2]}_ip.{match[1]}.weight"] = value
    dtypes = {v.dtype for v in weights.values()}
    dtype = dtypes.pop() if len(dtypes) == 1 else torch.float32
    try:
        adapter.load_state_dict({k: v.to(dtype) for k, v in weights.items()}, strict=True, assign=True)
    except RuntimeError as exc:
        raise CorruptWeightsError(f"{path}: the tensor shapes do not fit together ({exc}). The file is corrupt or "
                                  f"not an Expression Adapter.") from exc
    return adapter.requires_grad_(False).eval()


def check_fits(adapter: ExpressionAdapter, model_layers: Mapping[int | ComfyKey, int], *,
               context_dim: int = 768) -> dict[int | ComfyKey, int]:
    """Check the adapter covers exactly the model's cross-attention layers; return {model key: adapter layer id}.

    ``model_layers`` maps each of the model's attn2 layers — by diffusers id or by ComfyUI key ("input", 1) — to its
    inner width; ``context_dim`` is the width of the model's text context.
    """
    where = f"{adapter.source}: " if adapter.source else ""
    ids: dict[int, tuple] = {}
    for key, width in model_layers.items():
        layer = _BY_COMFY_KEY.get(tuple(key)) if isinstance(key, tuple) else SD15_ATTN2_LAYERS.get(key)
        if layer is None and not isinstance(key, int):
            raise WrongModelError(f"the model has a cross-attention layer at {key!r}, which SD1.5 does not; the "
                                  "Expression Adapter fits Arc2Face's SD1.5 UNet")
        ids[key if isinstance(key, int) else layer.layer_id] = (key, width)
    if len(adapter.layer_ids) != len(ids):
        raise WrongModelError(f"{where}the Expression Adapter does not fit this model: adapter has "
                              f"{len(adapter.layer_ids)} layers, the model {len(ids)} cross-attention layers")
    missing, extra = sorted(set(ids) - set(adapter.layer_ids)), sorted(set(adapter.layer_ids) - set(ids))
    if missing or extra:
        raise WrongModelError(f"{where}the Expression Adapter does not fit this model: the model's layers {missing} "
                              f"have no adapter weights, the adapter's layers {extra} have no place in the model")
    for layer_id, (key, width) in sorted(ids.items()):
        if adapter.inner_dims[layer_id] != width:
            raise WrongModelError(f"{where}the Expression Adapter does not fit this model: layer {layer_id} is "
                                  f"{adapter.inner_dims[layer_id]} wide in the adapter, {width} in the model (at {key!r})")
    if adapter.cross_attention_dim != context_dim:
        raise WrongModelError(f"{where}the Expression Adapter makes {adapter.cross_attention_dim}-wide tokens, the "
                              f"model's cross-attention expects {context_dim}")
    return {key: layer_id for layer_id, (key, _) in sorted(ids.items())}


# ---------------------------------------------------------------------------------------------------- inputs and maths
def validate_expressions(expressions: Any, expected_dim: int) -> torch.Tensor:
    """Check an ARC2FACE_EXPRESSION batch [N, E]: float, finite, E == the adapter's width."""
    if not isinstance(expressions, torch.Tensor):
        raise InvalidInputError(f"expression must be a torch tensor [N, {expected_dim}], got {type(expressions).__name__}")
    if expressions.ndim != 2 or expressions.shape[0] == 0:
        raise InvalidInputError(f"expression must have shape [N, {expected_dim}] with N >= 1, got {tuple(expressions.shape)}")
    if expressions.shape[1] != expected_dim:
        raise InvalidInputError(f"expression has {expressions.shape[1]} values per row, the adapter expects {expected_dim}")
    if not expressions.is_floating_point():
        raise InvalidInputError(f"expression must be floating point, got {expressions.dtype}")
    bad = (~torch.isfinite(expressions)).any(dim=1).nonzero().flatten().tolist()
    if bad:
        raise InvalidInputError(f"expression rows {[i + 1 for i in bad]} contain NaN or infinite values")
    # SMIRK's layout: refuse what SMIRK cannot output (docs/arc2face.md, 'The 55-value expression')
    if expected_dim == EXPRESSION_DIM:
        check_expression_ranges(expressions, "expression")
    return expressions


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Multi-head attention on [B, tokens, heads*dim] tensors with torch's scaled_dot_product_attention."""
    b, _, inner = q.shape
    split = [t.reshape(b, -1, heads, inner // heads).transpose(1, 2) for t in (q, k, v)]
    return F.scaled_dot_product_attention(*split).transpose(1, 2).reshape(b, -1, inner)


def decoupled_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ip_k: torch.Tensor, ip_v: torch.Tensor,
                        heads: int, scale: float, attention: Attention | None = None) -> torch.Tensor:
    """``attention(q, k, v) + scale * attention(q, ip_k, ip_v)``: the attn2 output before ``to_out``.

    ``attention(q, k, v, heads)`` works on [B, tokens, heads*dim]; the host may pass its own fast kernel.
    """
    attention = attention or sdpa_attention
    if q.shape[-1] % heads:
        raise InvalidInputError(f"a query {q.shape[-1]} wide cannot be split into {heads} heads")
    if ip_k.shape != ip_v.shape or ip_k.shape[0] != q.shape[0] or ip_k.shape[-1] != q.shape[-1]:
        raise InvalidInputError(f"expression keys/values {tuple(ip_k.shape)}/{tuple(ip_v.shape)} do not fit the "
                                f"query {tuple(q.shape)}: they need the same batch and width")
    return add_expression_attention(attention(q, k, v, heads), q, ip_k, ip_v, heads, scale, attention)


def add_expression_attention(text_out: torch.Tensor, q: torch.Tensor, ip_k: torch.Tensor, ip_v: torch.Tensor,
                             heads: int, scale: float, attention: Attention | None = None) -> torch.Tensor:
    """``text_out + scale * attention(q, ip_k, ip_v)``: the expression branch added to whatever text attention ran
    (plain, or another pack's attn2 patch the adapter stacks on)."""
    if scale == 0:
        return text_out
    attention = attention or sdpa_attention
    return text_out + scale * attention(q, ip_k.to(q.device, q.dtype), ip_v.to(q.device, q.dtype), heads)


def expression_tokens_for_batch(cond_tokens: torch.Tensor, uncond_tokens: torch.Tensor, cond_or_uncond: Sequence[int],
                                batch: int, layout: IdentityLayout | None) -> torch.Tensor:
    """Lay out expression tokens [batch, T, D] for a sampler batch made of ``len(cond_or_uncond)`` equal chunks.

    A cond chunk (0) gets the per-identity tokens on the rows of ``layout`` (the Arc2Face Sampler's record; None =
    the stock KSampler, one identity per row): one expression serves every row, N expressions go to N identities;
    an uncond chunk (1) gets the zero-expression tokens.
    """
    cond_tokens = batched_tensor(cond_tokens, "cond_tokens")
    uncond_tokens = batched_tensor(uncond_tokens, "uncond_tokens")
    batch = positive_int(batch, "batch", upper=MAX_BATCH)
    if cond_tokens.ndim != 3 or uncond_tokens.ndim != 3 or uncond_tokens.shape[0] != 1 \
            or cond_tokens.shape[1:] != uncond_tokens.shape[1:]:
        raise InvalidInputError(f"expression tokens must be [N, T, D] and [1, T, D], got {tuple(cond_tokens.shape)} "
                                f"and {tuple(uncond_tokens.shape)}")
    if not isinstance(cond_or_uncond, (list, tuple)) or not cond_or_uncond \
            or any(isinstance(c, bool) or c not in (0, 1) for c in cond_or_uncond):
        raise InvalidInputError(f"cond_or_uncond must be a non-empty list of 0 (cond) and 1 (uncond), got {cond_or_uncond!r}")
    if batch % len(cond_or_uncond):
        raise InvalidInputError(f"a batch of {batch} cannot be split into {len(cond_or_uncond)} equal cond/uncond chunks")
    chunk = batch // len(cond_or_uncond)
    cond = per_row(cond_tokens, chunk_layout(layout, chunk), "expression", "expressions")
    uncond = uncond_tokens.to(cond.device, cond.dtype).expand(chunk, -1, -1)
    return torch.cat([uncond if c else cond for c in cond_or_uncond], dim=0)
