"""The model files each loader node of the shipped workflows reads, as ComfyUI's model metadata (``properties.models``).

ComfyUI's web UI reads ``{"name", "url", "directory"}`` entries from a node's ``properties.models`` and offers the
download of a missing one: ``directory`` is the ComfyUI model folder (``vae``, ``loras``, the pack's ``arc2face``),
``name`` the file's path inside it, ``url`` where it comes from. Only files with one public URL of their own are listed:
insightface's antelopev2 models come in a zip archive, SMIRK and FLAME have no stable URL (the workflow's Note names
them). Both frontends tested (1.27.10, 1.58.1) only take an entry whose ``name`` is one of the node's widget values,
so the dialog offers the VAE and the LCM-LoRA (files picked in a widget) and not the files the pack's own loaders
find by themselves; the metadata is carried for them all the same (docs/comfyui_frontend.md).
"""

from __future__ import annotations

from typing import Callable

HF = "https://huggingface.co"
ARC2FACE_REPO = "FoivosPar/Arc2Face"
ARC2FACE_DIR = "arc2face"   # the model folder the pack registers; its layout is the Hugging Face repo's


def hf_file(repo: str, filename: str, name: str, directory: str) -> dict:
    """One metadata entry for ``filename`` of the Hugging Face repo ``repo``, saved as ``directory/name``."""
    return {"name": name, "url": f"{HF}/{repo}/resolve/main/{filename}", "directory": directory}


def arc2face_files(*filenames: str) -> list[dict]:
    """Files of the Arc2Face repo: they keep the repo's layout inside models/arc2face."""
    return [hf_file(ARC2FACE_REPO, f, f, ARC2FACE_DIR) for f in filenames]


SD15_VAE = hf_file("stable-diffusion-v1-5/stable-diffusion-v1-5", "vae/diffusion_pytorch_model.safetensors",
                   "sd15_vae.safetensors", "vae")
LCM_LORA = hf_file("latent-consistency/lcm-lora-sdv1-5", "pytorch_lora_weights.safetensors",
                   "lcm-lora-sdv1-5.safetensors", "loras")


def _named(entry: dict, widget: str) -> Callable[[dict], list[dict]]:
    """A stock loader: the entry applies when the workflow picks that file name in ``widget``."""
    return lambda values: [entry] if values.get(widget) == entry["name"] else []


# Node type -> (its widget values -> the files it reads that have a public URL). A loader that reads files without
# one (SMIRK, FLAME, the antelopev2 detector) maps to an empty list, so a new loader cannot be forgotten.
MODELS_BY_NODE: dict[str, Callable[[dict], list[dict]]] = {
    "Arc2FaceModelLoader": lambda v: arc2face_files("arc2face/config.json",
                                                    "arc2face/diffusion_pytorch_model.safetensors",
                                                    "encoder/config.json", "encoder/pytorch_model.bin"),
    "Arc2FaceArcFaceLoader": lambda v: arc2face_files("arcface.onnx"),   # its detector: antelopev2.zip only
    "Arc2FaceControlNetLoader": lambda v: arc2face_files("controlnet/config.json",
                                                         "controlnet/diffusion_pytorch_model.safetensors"),
    "Arc2FaceExpressionAdapterLoader": lambda v: arc2face_files("exp_adapter/exp_adapter.bin"),
    "Arc2FaceReferenceAdapterLoader": lambda v: arc2face_files("ref_adapter/pytorch_lora_weights.safetensors"),
    "Arc2FaceFLAMELoader": lambda v: [],          # FLAME 2020: licence-gated, registration only
    "VAELoader": _named(SD15_VAE, "vae_name"),
    "LoraLoaderModelOnly": _named(LCM_LORA, "lora_name"),
}


def models_for(node_type: str, values: dict) -> list[dict]:
    """The ``properties.models`` of a node; a loader type missing from MODELS_BY_NODE is an error."""
    if node_type not in MODELS_BY_NODE:
        if "Loader" in node_type:
            raise SystemExit(f"{node_type} loads files: list those with a public URL in MODELS_BY_NODE "
                             "(scripts/workflow_models.py)")
        return []
    return MODELS_BY_NODE[node_type](values)
