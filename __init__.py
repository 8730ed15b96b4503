"""Arc2Face for ComfyUI: registers the nodes and the ``arc2face`` / ``insightface`` model folders.

Importing this is cheap: the nodes import the engine (``arc2face_core``) and ComfyUI modules only when they run.
"""

import importlib.util

if __package__:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
    from .nodes.comfy_paths import register_model_folders

    # Outside ComfyUI (e.g. pytest collecting this folder as a package) there are no model folders to register.
    if importlib.util.find_spec("folder_paths") is not None:
        register_model_folders()
else:
    # pytest imports this file as a lone module when the checkout's folder name is not a Python identifier
    # (e.g. ComfyUI-Arc2Face); there is nothing to register then.
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
