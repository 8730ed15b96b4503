"""ComfyUI model folders for the pack: ``arc2face`` (the Hugging Face repo layout) and ``insightface``.

ComfyUI reads ``extra_model_paths.yaml`` before custom nodes load, so entries a user added for these names already
exist here; registering appends the default ``<models>/<name>`` folder and keeps them (searched first).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..arc2face_core.weights import ARC2FACE_FOLDER, INSIGHTFACE_FOLDER, ModelRoots
from .comfy_internals import folder_paths


def register_model_folders() -> None:
    for name in (ARC2FACE_FOLDER, INSIGHTFACE_FOLDER):
        folder_paths.add_model_folder_path(name, os.path.join(folder_paths.models_dir, name))


def model_roots() -> ModelRoots:
    """Every folder registered for ``arc2face`` and ``insightface``, in ComfyUI's search order."""
    def paths(name: str) -> list[Path]:
        entry = folder_paths.folder_names_and_paths.get(name)
        return [Path(p) for p in entry[0]] if entry else [Path(folder_paths.models_dir) / name]

    return ModelRoots(arc2face=paths(ARC2FACE_FOLDER), insightface=paths(INSIGHTFACE_FOLDER))


def download_switch(files: str, note: str = "") -> dict:
    """The loaders' optional ``download_missing`` input: off by default, so nothing is fetched unless asked."""
    return {"download_missing": ("BOOLEAN", {"default": False, "tooltip": (
        f"Download {files} from huggingface.co/FoivosPar/Arc2Face into models/arc2face when missing (off: nothing is "
        f"downloaded and a missing file is an error that says where to put it).{note}")})}
