"""What every check run with ComfyUI's own interpreter does first (its folder is on sys.path as the script's own).

``start_comfyui`` makes ComfyUI importable from the current folder (DIR/ComfyUI) with only ``--cpu`` for its argument
parser and returns the script's own arguments; ``load_pack`` loads the pack as ComfyUI loads a custom node folder.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from types import ModuleType

PACKAGE = "arc2face_pack"


def start_comfyui() -> list[str]:
    own = sys.argv[1:]
    sys.argv = [sys.argv[0], "--cpu"]   # what ComfyUI's own argument parser will read
    sys.path.insert(0, os.getcwd())
    import comfy.options

    comfy.options.enable_args_parsing()
    return own


def load_pack(pack_dir: str, *modules: str) -> ModuleType | tuple[ModuleType, ...]:
    """The pack run from its __init__.py as a package (once per process); with ``modules`` (e.g. "nodes.identity"),
    those submodules instead of the package: one module, or a tuple of several."""
    if PACKAGE not in sys.modules:
        spec = importlib.util.spec_from_file_location(PACKAGE, os.path.join(pack_dir, "__init__.py"),
                                                      submodule_search_locations=[pack_dir])
        package = importlib.util.module_from_spec(spec)
        sys.modules[PACKAGE] = package
        spec.loader.exec_module(package)
    if not modules:
        return sys.modules[PACKAGE]
    loaded = tuple(importlib.import_module(f"{PACKAGE}.{name}") for name in modules)
    return loaded[0] if len(loaded) == 1 else loaded
