"""Every choice input of every pack node, as ComfyUI itself sees the classes (its own samplers and schedulers too).

Run with ComfyUI's interpreter from DIR/ComfyUI:  DIR/venv/bin/python <this file> <pack dir>
Prints one JSON object: {"choices": number of choice inputs seen, "not_lists": ["Node.input", ...] declared as
something other than a list (ComfyUI checks "Value not in list" only for a list), "unchecked": [node ids whose
FUNCTION does not check its widget values]}.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys

PACK = os.path.abspath(sys.argv[1])
sys.argv = [sys.argv[0], "--cpu"]
sys.path.insert(0, os.getcwd())

import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()


def load_pack():
    spec = importlib.util.spec_from_file_location("arc2face_pack", os.path.join(PACK, "__init__.py"),
                                                  submodule_search_locations=[PACK])
    package = importlib.util.module_from_spec(spec)
    sys.modules["arc2face_pack"] = package
    spec.loader.exec_module(package)
    return package


pack = load_pack()
choices, not_lists, unchecked = 0, [], []
for node_id, cls in pack.NODE_CLASS_MAPPINGS.items():
    if not getattr(getattr(cls, cls.FUNCTION), "_arc2face_checks_widgets", False):
        unchecked.append(node_id)
    for section in ("required", "optional"):
        for name, spec in cls.INPUT_TYPES().get(section, {}).items():
            kind = spec[0]
            if isinstance(kind, (list, tuple)) or kind == "COMBO":
                choices += 1
                if not isinstance(kind, list):
                    not_lists.append(f"{node_id}.{name}")
print(json.dumps({"choices": choices, "not_lists": not_lists, "unchecked": unchecked}))
