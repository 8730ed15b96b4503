"""Expression control: the Arc2Face Expression Adapter on the UNet, and expressions from a photo or by hand."""

from __future__ import annotations

import logging

from .comfy_internals import get, key, require
from .comfy_internals import model_management as mm
from .comfy_paths import download_switch
from .face_parameters import CROP_LANDMARKS, CROP_LANDMARKS_TOOLTIP, crop_landmarker
from .faces import FACE_CHOICES
from .model_cache import cached_patcher, file_key

CATEGORY = "Arc2Face"
ADDITIONAL_MODELS_KEY = "arc2face_expression_adapter"
CHANNEL_ORDERS = {"bgr (Arc2Face demo)": "bgr", "rgb (SMIRK demo)": "rgb"}
log = logging.getLogger("arc2face")
EXPRESSION_TOOLTIP = "FLAME expression [N, 55]: 50 expression coefficients, 2 eyelids, 3 jaw values."


class Arc2FaceExpressionAdapterLoader:
    DESCRIPTION = ("Loads the Arc2Face Expression Adapter (models/arc2face/exp_adapter/exp_adapter.bin): a projection "
                   "of FLAME expression parameters to tokens plus decoupled keys/values for the UNet's 16 "
                   "cross-attention layers. Its shapes are read from the file. Managed by ComfyUI's memory manager "
                   "together with the model it is applied to.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = ("ARC2FACE_EXP_ADAPTER",)
    RETURN_NAMES = ("adapter",)
    OUTPUT_TOOLTIPS = ("The Expression Adapter, for Arc2Face Expression Adapter.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {},
            "optional": download_switch("exp_adapter/exp_adapter.bin"),
        }

    @classmethod
    def IS_CHANGED(cls, **inputs):   # a replaced file is loaded again (ComfyUI caches a loader by its inputs only)
        from ..arc2face_core.weights import EXPRESSION_ADAPTER
        from .comfy_paths import model_roots
        from .model_cache import files_state

        return files_state(EXPRESSION_ADAPTER, roots=model_roots().arc2face)

    def load(self, download_missing: bool = False):
        from ..arc2face_core.expression.adapter import load_expression_adapter
        from ..arc2face_core.weights import EXPRESSION_ADAPTER, HF_URL, find_weight
        from .comfy_paths import model_roots

        path = find_weight(EXPRESSION_ADAPTER, model_roots().arc2face, download=download_missing)
        adapter = load_expression_adapter(path, source=HF_URL)
        return (get("comfy.model_patcher:ModelPatcher")(adapter, load_device=mm.get_torch_device(),
                                                        offload_device=mm.unet_offload_device()),)


def _cross_attention_layers(model) -> dict[tuple, int]:
    """{ComfyUI attn2 key: inner width} of every cross-attention layer of the model's UNet."""
    require("comfy.model_patcher:ModelPatcher.get_model_object")
    unet = model.get_model_object("diffusion_model")
    layers = {}
    for name, blocks in (("input", unet.input_blocks), ("output", unet.output_blocks), ("middle", [unet.middle_block])):
        for number, block in enumerate(blocks):
            for layer in block:
                if hasattr(layer, "transformer_blocks"):
                    layers[(name, number)] = layer.transformer_blocks[0].attn2.to_q.out_features
    return layers


class _ExpressionState:
    """What every layer's patch shares: the adapter, the expressions, the weight and the active sigma range."""

    def __init__(self, adapter, expressions, weight: float, sigma_start: float, sigma_end: float):
        self.adapter, self.expressions, self.weight = adapter, expressions, weight
        self.sigma_start, self.sigma_end = sigma_start, sigma_end
        self._kv = {}   # (layer, batch layout, device, dtype) → keys/values: computed once, reused every step

    def active(self, extra_options) -> bool:
        sigmas = extra_options.get(key("sigmas"))
        if sigmas is None:
            return True
        sigma = float(sigmas.detach().flatten()[0])
        return self.sigma_end <= sigma <= self.sigma_start

    def kv(self, layer_id: int, extra_options, q):
        from ..arc2face_core.batching import LAYOUT_KEY
        from ..arc2face_core.expression.adapter import expression_tokens_for_batch

        cond_or_uncond, layout = extra_options[key("cond_or_uncond")], extra_options.get(LAYOUT_KEY)
        cached = (layer_id, tuple(cond_or_uncond), layout, q.shape[0], q.device, q.dtype)
        if cached not in self._kv:
            tokens = expression_tokens_for_batch(self.adapter.project(self.expressions), self.adapter.zero_tokens(),
                                                 cond_or_uncond, q.shape[0], layout)
            self._kv[cached] = tuple(t.to(q.device, q.dtype) for t in self.adapter.kv(layer_id, tokens))
        return self._kv[cached]

    def __deepcopy__(self, memo):
        # ComfyUI deep-copies model_options on every clone(); the adapter's weights and the K/V cache are shared.
        return self


class _ExpressionAttention:
    """The attn2 replacement of one layer: text attention (or the patch already there) + weight · expression branch."""

    def __init__(self, state: _ExpressionState, layer_id: int, previous=None):
        from ..arc2face_core.expression.adapter import add_expression_attention

        self.state, self.layer_id, self.previous = state, layer_id, previous
        self._attention = get("comfy.ldm.modules.attention:optimized_attention")
        self._add_expression = add_expression_attention

    def __call__(self, q, k, v, extra_options):
        heads = extra_options[key("n_heads")]

        def attention(q_, k_, v_, heads_):   # ComfyUI's kernel, called as its own CrossAttention calls it
            return self._attention(q_, k_, v_, heads_, attn_precision=extra_options.get(key("attn_precision")),
                                   transformer_options=extra_options)

        out = self.previous(q, k, v, extra_options) if self.previous else attention(q, k, v, heads)
        if not self.state.active(extra_options):
            return out
        ip_k, ip_v = self.state.kv(self.layer_id, extra_options, q)
        return self._add_expression(out, q, ip_k, ip_v, heads, self.state.weight, attention)


class Arc2FaceExpressionAdapter:
    DESCRIPTION = ("Patches a clone of the model with the Expression Adapter's decoupled cross-attention on all 16 "
                   "SD1.5 cross-attention layers (middle block included): conditional rows get the expression "
                   "tokens, unconditional rows the projection of a zero expression, as the reference does. One "
                   "expression for all identities or one per identity. Stacks on attention patches other nodes "
                   "already put on the model.")
    CATEGORY = CATEGORY
    FUNCTION = "apply"
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The patched model, for Arc2Face Sampler or any sampler.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The Arc2Face UNet (possibly already patched)."}),
                "adapter": ("ARC2FACE_EXP_ADAPTER", {"tooltip": "From Arc2Face Expression Adapter Loader."}),
                "expression": ("ARC2FACE_EXPRESSION", {"tooltip": EXPRESSION_TOOLTIP + " 1 for all identities, "
                                                                                        "or one per identity."}),
                "weight": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 3.0, "step": 0.05,
                                     "tooltip": "Scale of the expression branch (the reference uses 1.0; 0 = off)."}),
                "start_percent": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.001,
                                            "tooltip": "Where in the sampling the adapter starts acting."}),
                "end_percent": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.001,
                                          "tooltip": "Where in the sampling the adapter stops acting."}),
            }
        }

    def apply(self, model, adapter, expression, weight, start_percent, end_percent):
        from ..arc2face_core.errors import InvalidInputError
        from ..arc2face_core.expression.adapter import check_fits, validate_expressions

        if start_percent > end_percent:
            raise InvalidInputError(f"start_percent ({start_percent}) is after end_percent ({end_percent}): the "
                                    "adapter would never act")
        require("comfy.model_patcher:ModelPatcher.clone", "comfy.model_patcher:ModelPatcher.set_model_attn2_replace",
                "comfy.model_patcher:ModelPatcher.set_additional_models",
                "comfy.model_patcher:ModelPatcher.get_additional_models_with_key",
                "comfy.model_sampling:ModelSamplingDiscrete.percent_to_sigma")
        core = adapter.model
        expression = validate_expressions(expression, core.expression_dim)
        context_dim = model.model.model_config.unet_config.get(key("context_dim"))
        layer_ids = check_fits(core, _cross_attention_layers(model), context_dim=context_dim)
        patched = model.clone()
        sampling = patched.get_model_object("model_sampling")
        state = _ExpressionState(core, expression, weight, sampling.percent_to_sigma(start_percent),
                                 sampling.percent_to_sigma(end_percent))
        replaced = patched.model_options[key("transformer_options")].get(key("patches_replace"), {})
        existing = replaced.get(key("attn2"), {})
        for layer, layer_id in layer_ids.items():
            target = layer + (0,) if layer + (0,) in existing else layer   # ComfyUI looks up (block, number, 0) first
            patched.set_model_attn2_replace(_ExpressionAttention(state, layer_id, existing.get(target)), *target)
        patched.set_additional_models(ADDITIONAL_MODELS_KEY,
                                      patched.get_additional_models_with_key(ADDITIONAL_MODELS_KEY) + [adapter])
        return (patched,)


_SMIRK_CACHE: dict = {}   # one SMIRK encoder (16 MB), keyed by the file's identity; ComfyUI manages its device


def _smirk_patcher(path):
    from ..arc2face_core.expression import smirk

    return cached_patcher(_SMIRK_CACHE, file_key(path), lambda: smirk.load_smirk_encoder(path))


class Arc2FaceExpressionFromImage:
    DESCRIPTION = ("Reads the facial expression of a photo with SMIRK (FLAME expression 50 + eyelids 2 + jaw 3), as "
                   "the reference does. The face crop is SMIRK's own (MediaPipe's 478 points) when the mediapipe "
                   "package and models/arc2face/smirk/face_landmarker.task are there, otherwise it is made from "
                   "insightface's landmarks (antelopev2's 1k3d68.onnx); the console says which. Needs "
                   "models/arc2face/smirk/SMIRK_em1.pt (from the SMIRK project, manual download). One expression "
                   "per photo.")
    CATEGORY = CATEGORY
    FUNCTION = "read"
    RETURN_TYPES = ("ARC2FACE_EXPRESSION", "IMAGE")
    RETURN_NAMES = ("expression", "crops")
    OUTPUT_TOOLTIPS = ("One expression per photo, [B, 55].", "The 224x224 crops SMIRK saw, for preview.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "arcface": ("ARCFACE", {"tooltip": "From Arc2Face ArcFace Loader (its face detector is used)."}),
                "image": ("IMAGE", {"tooltip": "Photo(s) showing the expression to transfer."}),
                "face": (FACE_CHOICES, {"default": "largest", "tooltip": (
                    "Which face when a photo shows several: the largest, or an index from the left (0 = leftmost).")}),
                "channel_order": (list(CHANNEL_ORDERS), {"default": "bgr (Arc2Face demo)", "tooltip": (
                    "The Arc2Face demo feeds SMIRK a BGR crop (as the adapter was used there); SMIRK's own demo "
                    "feeds RGB.")}),
            },
            "optional": {
                "crop_landmarks": (list(CROP_LANDMARKS), {"default": "auto (MediaPipe if installed)",
                                                          "tooltip": CROP_LANDMARKS_TOOLTIP}),
            },
        }

    def read(self, arcface, image, face: str, channel_order: str,
             crop_landmarks: str = "auto (MediaPipe if installed)"):
        from ..arc2face_core.expression.from_photo import expressions_from_photos
        from ..arc2face_core.faces.landmarks import landmark_model_for
        from ..arc2face_core.images import to_bgr_uint8_batch
        from ..arc2face_core.weights import SMIRK, find_weight
        from .comfy_paths import model_roots

        roots = model_roots()
        landmarker = crop_landmarker(roots, crop_landmarks)
        smirk = _smirk_patcher(find_weight(SMIRK, roots.arc2face))
        mm.load_models_gpu([smirk])
        notes: list[str] = []
        expression, crops = expressions_from_photos(to_bgr_uint8_batch(image), arcface,
                                                    landmark_model_for(arcface, roots), smirk.model, face,
                                                    CHANNEL_ORDERS[channel_order], landmarker, notes)
        for index, note in enumerate(notes):
            log.info("Arc2Face: Expression from Photo, photo %d: SMIRK crop from %s", index, note)
        return (expression, crops.movedim(1, -1).to(mm.intermediate_device()))


class Arc2FaceExpression:
    DESCRIPTION = ("An expression by hand: neutral (all zero) by default, jaw opening, eyelids and up to 50 FLAME "
                   "expression coefficients as a list. For Arc2Face Expression Adapter.")
    CATEGORY = CATEGORY
    FUNCTION = "make"
    RETURN_TYPES = ("ARC2FACE_EXPRESSION",)
    RETURN_NAMES = ("expression",)
    OUTPUT_TOOLTIPS = ("One expression, [1, 55].",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "jaw_open": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 0.6, "step": 0.01, "tooltip": (
                    "Jaw rotation in radians: ~0.1 lips parted, ~0.3 open mouth, 0.5 a yawn.")}),
                "eyelid_left": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                          "tooltip": "FLAME left eyelid: 0 open, 1 closed."}),
                "eyelid_right": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                           "tooltip": "FLAME right eyelid: 0 open, 1 closed."}),
                "coefficients": ("STRING", {"default": "", "multiline": True, "tooltip": (
                    "Up to 50 FLAME expression coefficients separated by commas or spaces (missing ones are 0), "
                    "e.g. copied from an expression read from a photo. They are in units of the PCA standard "
                    "deviation: real faces stay within about ±3; beyond ±4 warns, beyond ±10 is refused.")}),
            }
        }

    def make(self, jaw_open: float, eyelid_left: float, eyelid_right: float, coefficients: str):
        from ..arc2face_core.expression.vectors import make_expression

        return (make_expression(jaw_open, (eyelid_left, eyelid_right), coefficients),)


class Arc2FaceExpressionBlend:
    DESCRIPTION = "Mixes two expressions linearly (weight = share of b). Batches of 1 pair with every row of the other."
    CATEGORY = CATEGORY
    FUNCTION = "blend"
    RETURN_TYPES = ("ARC2FACE_EXPRESSION",)
    RETURN_NAMES = ("expression",)
    OUTPUT_TOOLTIPS = ("The blended expression(s).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "expression_a": ("ARC2FACE_EXPRESSION", {"tooltip": "Expression at weight 0."}),
                "expression_b": ("ARC2FACE_EXPRESSION", {"tooltip": "Expression at weight 1."}),
                "weight": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01,
                                     "tooltip": "Share of expression_b."}),
            }
        }

    def blend(self, expression_a, expression_b, weight: float):
        from ..arc2face_core.expression.vectors import blend_expressions

        return (blend_expressions(expression_a, expression_b, weight),)


NODE_CLASS_MAPPINGS = {
    "Arc2FaceExpressionAdapterLoader": Arc2FaceExpressionAdapterLoader,
    "Arc2FaceExpressionAdapter": Arc2FaceExpressionAdapter,
    "Arc2FaceExpressionFromImage": Arc2FaceExpressionFromImage,
    "Arc2FaceExpression": Arc2FaceExpression,
    "Arc2FaceExpressionBlend": Arc2FaceExpressionBlend,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "Arc2FaceExpressionAdapterLoader": "Arc2Face Expression Adapter Loader",
    "Arc2FaceExpressionAdapter": "Arc2Face Expression Adapter",
    "Arc2FaceExpressionFromImage": "Expression from Photo (SMIRK)",
    "Arc2FaceExpression": "Expression",
    "Arc2FaceExpressionBlend": "Expression Blend",
}
