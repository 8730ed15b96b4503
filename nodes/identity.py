"""Loading the Arc2Face UNet and ID encoder, and turning ArcFace embeddings into CONDITIONING."""

from __future__ import annotations

from ..arc2face_core.identity.embeddings import ARCFACE_DIM
from .comfy_internals import get, key
from .comfy_internals import model_management as mm
from .comfy_paths import download_switch

CATEGORY = "Arc2Face"
WEIGHT_DTYPES = ["auto", "fp16", "bf16", "fp32"]


def _torch_dtype(name: str):
    import torch

    return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}.get(name)


def load_encoder_patcher(weights, config, weight_dtype: str):
    """The ID encoder wrapped in a ModelPatcher, so ComfyUI moves it to the GPU when used and offloads it after."""
    import torch

    from ..arc2face_core.identity.encoder import load_id_encoder

    load_device, offload_device = mm.text_encoder_device(), mm.text_encoder_offload_device()
    dtype = _torch_dtype(weight_dtype)
    if dtype is None:  # auto: half precision on accelerators (as the reference), full precision on the CPU
        dtype = torch.float32 if mm.is_device_cpu(load_device) else mm.text_encoder_dtype(load_device)
    encoder = load_id_encoder(weights, config, dtype=dtype, operations=get("comfy.ops:disable_weight_init"))
    return get("comfy.model_patcher:ModelPatcher")(encoder, load_device=load_device, offload_device=offload_device)


class Arc2FaceModelLoader:
    DESCRIPTION = ("Loads the Arc2Face UNet (a fine-tuned SD1.5 UNet, as a MODEL for any sampler) and the Arc2Face "
                   "ID encoder (a fine-tuned CLIP text encoder that turns ArcFace embeddings into conditioning). "
                   "Files: models/arc2face/arc2face/diffusion_pytorch_model.safetensors and "
                   "models/arc2face/encoder/pytorch_model.bin (+ config.json). Use an SD1.5 VAE to decode.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = ("MODEL", "ARC2FACE_ENCODER")
    RETURN_NAMES = ("model", "encoder")
    OUTPUT_TOOLTIPS = ("The Arc2Face UNet, managed by ComfyUI like any diffusion model.",
                       "The Arc2Face ID encoder, for the Arc2Face Encoder node.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "weight_dtype": (WEIGHT_DTYPES, {"default": "auto", "tooltip": (
                    "Precision of the UNet and encoder weights. auto: ComfyUI's choice for the UNet, fp16 for the "
                    "encoder on a GPU and fp32 on the CPU.")}),
            },
            "optional": download_switch("the UNet and encoder files"),
        }

    @classmethod
    def IS_CHANGED(cls, **inputs):   # a replaced file is loaded again (ComfyUI caches a loader by its inputs only)
        from ..arc2face_core.weights import ENCODER, UNET
        from .comfy_paths import model_roots
        from .model_cache import files_state

        return files_state(UNET, ENCODER, roots=model_roots().arc2face, beside=("config.json",))

    def load(self, weight_dtype: str, download_missing: bool = False):
        from ..arc2face_core.checkpoints import check_safetensors_file
        from ..arc2face_core.identity.encoder import find_id_encoder
        from ..arc2face_core.weights import HF_URL, UNET, find_weight
        from .comfy_paths import model_roots

        roots = model_roots()
        unet_path = find_weight(UNET, roots.arc2face, download=download_missing)
        encoder_paths = find_id_encoder(roots.arc2face, download=download_missing)
        check_safetensors_file(unet_path, source=HF_URL)   # ComfyUI's loader would name no file
        dtype = _torch_dtype(weight_dtype)
        model = get("comfy.sd:load_diffusion_model")(str(unet_path), model_options={"dtype": dtype} if dtype else {})
        return (model, load_encoder_patcher(*encoder_paths, weight_dtype))


class Arc2FaceEncoder:
    DESCRIPTION = ("Projects ArcFace embeddings into SD1.5 conditioning with the Arc2Face ID encoder, exactly as the "
                   "paper: the embedding replaces the 'id' token of the pseudo-prompt 'photo of a id person'. "
                   "positive holds one row per identity; negative is the official encoder(\"\") for CFG. Both also "
                   "work with the stock KSampler (use a latent batch equal to the number of identities).")
    CATEGORY = CATEGORY
    FUNCTION = "encode"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    OUTPUT_TOOLTIPS = ("Identity conditioning, [N, 77, 768]: one row per input embedding.",
                       "The encoder on the empty prompt, [1, 77, 768]: the negative Arc2Face was trained with.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "encoder": ("ARC2FACE_ENCODER", {"tooltip": "The ID encoder from Arc2Face Model Loader."}),
                "embeds": ("ARCFACE_EMBEDS", {"tooltip": f"ArcFace identity embeddings [N, {ARCFACE_DIM}], "
                                                         "e.g. from ArcFace Embed."}),
            }
        }

    def encode(self, encoder, embeds):
        import torch

        mm.load_models_gpu([encoder])
        positive, pooled = encoder.model.encode(embeds)
        negative, negative_pooled = encoder.model.encode_empty()
        out = mm.intermediate_device()

        def conditioning(cond, pooled_output):
            return [[cond.to(out, torch.float32), {key("pooled_output"): pooled_output.to(out, torch.float32)}]]

        return (conditioning(positive, pooled), conditioning(negative, negative_pooled))


NODE_CLASS_MAPPINGS = {"Arc2FaceModelLoader": Arc2FaceModelLoader, "Arc2FaceEncoder": Arc2FaceEncoder}
NODE_DISPLAY_NAME_MAPPINGS = {"Arc2FaceModelLoader": "Arc2Face Model Loader", "Arc2FaceEncoder": "Arc2Face Encoder"}
