"""Every choice input of every pack node, as ComfyUI itself sees the classes (its own samplers and schedulers too).

Run with ComfyUI's interpreter from DIR/ComfyUI:  DIR/venv/bin/python <this file> <pack dir>
Prints one JSON object: {"choices": number of choice inputs seen, "not_lists": ["Node.input", ...] declared as
something other than a list (ComfyUI checks "Value not in list" only for a list), "unchecked": [node ids whose
FUNCTION does not check its widget values]}.
"""

from __future__ import annotations

import json
import os

from comfyui_boot import load_pack as boot_pack
from comfyui_boot import start_comfyui

PACK = os.path.abspath(start_comfyui()[0])



def load_pack():
    return boot_pack(PACK)


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
