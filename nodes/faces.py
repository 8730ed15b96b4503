"""Face analysis nodes: load insightface's detector with Arc2Face's ArcFace, and embed faces from images."""

from __future__ import annotations

from ..arc2face_core.faces.providers import PROVIDER_CHOICES
from .comfy_paths import download_switch

CATEGORY = "Arc2Face"
FACE_CHOICES = ["largest"] + [str(i) for i in range(10)]


class Arc2FaceArcFaceLoader:
    DESCRIPTION = ("Loads face detection (insightface antelopev2 scrfd_10g_bnkps.onnx, from "
                   "models/insightface/models/antelopev2/) and Arc2Face's own ArcFace recogniser "
                   "(models/arc2face/arcface.onnx). Only these two models are loaded. antelopev2's glintr100.onnx is "
                   "a different ArcFace and is refused: Arc2Face needs arcface.onnx.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = ("ARCFACE",)
    RETURN_NAMES = ("arcface",)
    OUTPUT_TOOLTIPS = ("Face detector + Arc2Face ArcFace, for ArcFace Embed.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "provider": (list(PROVIDER_CHOICES), {"default": "auto", "tooltip": (
                    "ONNX Runtime execution provider. auto: the GPU provider when onnxruntime-gpu works, else CPU.")}),
                "det_size": ("INT", {"default": 640, "min": 160, "max": 2048, "step": 32, "tooltip": (
                    "Detector input size in pixels (the reference uses 640). Larger finds smaller faces.")}),
            },
            "optional": download_switch("arcface.onnx", " The antelopev2 detector cannot be downloaded."),
        }

    @classmethod
    def IS_CHANGED(cls, **inputs):   # a replaced file is loaded again (ComfyUI caches a loader by its inputs only)
        from ..arc2face_core.weights import ARCFACE, ARCFACE_IN_ANTELOPEV2, DETECTOR
        from .comfy_paths import model_roots
        from .model_cache import files_state

        roots = model_roots()
        return (files_state(ARCFACE, roots=roots.arc2face)
                + files_state(ARCFACE_IN_ANTELOPEV2, DETECTOR, roots=roots.insightface))

    def load(self, provider: str, det_size: int, download_missing: bool = False):
        from ..arc2face_core.faces.analysis import load_face_analyzer
        from ..arc2face_core.faces.providers import resolve_providers
        from .comfy_internals import model_management as mm
        from .comfy_paths import model_roots

        device = mm.get_torch_device()
        if provider == "auto" and device.type == "cpu":
            provider = "CPU"   # ComfyUI runs on the CPU: a GPU provider would only fail to load, noisily
        device_id = device.index if device.type == "cuda" and device.index is not None else 0
        providers = resolve_providers(provider, device_id=device_id)
        return (load_face_analyzer(model_roots(), providers, det_size=det_size, download=download_missing,
                                   strict_providers=provider != "auto"),)


class Arc2FaceArcFaceEmbed:
    DESCRIPTION = ("Detects a face in each image and computes its ArcFace identity embedding exactly as Arc2Face "
                   "expects (BGR, aligned 112x112 crop, L2-normalised). One row per image; an image without a face "
                   "is an error that names it. Several photos of one person: follow with Embedding Average.")
    CATEGORY = CATEGORY
    FUNCTION = "embed"
    RETURN_TYPES = ("ARCFACE_EMBEDS", "IMAGE")
    RETURN_NAMES = ("embeds", "faces")
    OUTPUT_TOOLTIPS = ("Identity embeddings [B, 512], one unit row per input image.",
                       "The aligned 112x112 face crops the recogniser saw, for preview.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "arcface": ("ARCFACE", {"tooltip": "From Arc2Face ArcFace Loader."}),
                "image": ("IMAGE", {"tooltip": "One or more photos; each must show the face to use."}),
                "face": (FACE_CHOICES, {"default": "largest", "tooltip": (
                    "Which face when a photo shows several: the largest (as the paper), or an index counted from "
                    "the left (0 = leftmost).")}),
            }
        }

    def embed(self, arcface, image, face: str):
        from ..arc2face_core.faces.analysis import parse_face_choice

        result = arcface.embed(image, face=parse_face_choice(face))
        return (result.embeds, result.crops)


class Arc2FaceAlignFace:
    DESCRIPTION = ("FFHQ alignment of a photo's face, as Arc2Face's expression demo prepares its input: 68 landmarks "
                   "(antelopev2's 1k3d68.onnx, loaded on first use from models/insightface/models/antelopev2/) and "
                   "NVlabs' image_align to a square (the reference uses FAN's landmarks, the same 68 iBUG points). "
                   "Feed the result to ArcFace Embed and, through VAE Encode, to Arc2Face Reference Adapter.")
    CATEGORY = CATEGORY
    FUNCTION = "align"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("aligned",)
    OUTPUT_TOOLTIPS = ("One aligned square per photo (512x512 by default).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "arcface": ("ARCFACE", {"tooltip": "From Arc2Face ArcFace Loader (its face detector is used)."}),
                "image": ("IMAGE", {"tooltip": "Photo(s) to align; one aligned face per photo."}),
                "face": (FACE_CHOICES, {"default": "largest", "tooltip": (
                    "Which face when a photo shows several: the largest (as the reference), or an index from the "
                    "left (0 = leftmost).")}),
                "size": ("INT", {"default": 512, "min": 64, "max": 2048, "step": 8, "tooltip": (
                    "Side of the aligned square in pixels. The reference uses 512; for the Reference Adapter use "
                    "the size you generate.")}),
            }
        }

    def align(self, arcface, image, face: str, size: int = 512):
        import torch

        from ..arc2face_core.faces.align import align_faces
        from ..arc2face_core.faces.landmarks import landmark_model_for
        from ..arc2face_core.images import to_bgr_uint8_batch
        from .comfy_paths import model_roots

        aligned = align_faces(to_bgr_uint8_batch(image), arcface, landmark_model_for(arcface, model_roots()), face,
                              size)
        return (torch.from_numpy(aligned).float() / 255.0,)


NODE_CLASS_MAPPINGS = {"Arc2FaceArcFaceLoader": Arc2FaceArcFaceLoader, "Arc2FaceArcFaceEmbed": Arc2FaceArcFaceEmbed,
                       "Arc2FaceAlignFace": Arc2FaceAlignFace}
NODE_DISPLAY_NAME_MAPPINGS = {"Arc2FaceArcFaceLoader": "Arc2Face ArcFace Loader", "Arc2FaceArcFaceEmbed": "ArcFace Embed",
                              "Arc2FaceAlignFace": "Face Align (FFHQ)"}
