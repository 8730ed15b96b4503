"""Arc2Face for ComfyUI: registers the nodes and the ``arc2face`` / ``insightface`` model folders.

Importing this is cheap: the nodes import the engine (``arc2face_core``) and ComfyUI modules only when they run.
"""

import importlib.util

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from .nodes.comfy_paths import register_model_folders

# Outside ComfyUI (e.g. pytest collecting this folder as a package) there are no model folders to register.
if importlib.util.find_spec("folder_paths") is not None:
    register_model_folders()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
