"""The pack's guard over ComfyUI internals (nodes/comfy_internals.py), inside a real ComfyUI.

Run by tests/integration/test_live_internals_guard.py with ComfyUI's own interpreter, from DIR/ComfyUI:
    DIR/venv/bin/python <this file> <pack dir>
Prints one JSON object: what the guard finds missing in this ComfyUI (nothing, in the version it was tested with),
and how a node refuses once one internal is taken away (monkeypatched: a function, a method, a module, a key).
"""

from __future__ import annotations

import json
import logging
import sys

from comfyui_boot import load_pack, start_comfyui

ARGS = start_comfyui()

import comfy.model_patcher  # noqa: E402
import comfy.sd  # noqa: E402

internals, identity = load_pack(ARGS[0], "nodes.comfy_internals", "nodes.identity")


def refusal(call) -> str:
    try:
        call()
    except Exception as exc:   # the type and message a user sees in ComfyUI
        return f"{type(exc).__name__}: {exc}"
    return "no error"


class Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


out = {"missing": internals.missing()}

# a function: the model loader's UNet loader
saved = comfy.sd.load_diffusion_model
del comfy.sd.load_diffusion_model
records = Records()
logging.getLogger("arc2face").addHandler(records)
internals._reported = False   # a fresh process reports on first use: do it again here
out["loader"] = refusal(lambda: identity.Arc2FaceModelLoader().load("auto"))
out["logged"] = records.messages
comfy.sd.load_diffusion_model = saved
out["loader_restored"] = type(identity.Arc2FaceModelLoader().load("auto")[0]).__name__

# a method of an object the nodes are handed
saved = comfy.model_patcher.ModelPatcher.add_patches
del comfy.model_patcher.ModelPatcher.add_patches
out["method"] = refusal(lambda: internals.require("comfy.model_patcher:ModelPatcher.add_patches"))
comfy.model_patcher.ModelPatcher.add_patches = saved

# a whole module
saved = sys.modules.pop("comfy_execution.graph_utils")
sys.modules["comfy_execution.graph_utils"] = None   # import now fails, as for a module that does not exist
out["module"] = refusal(lambda: internals.get("comfy_execution.graph_utils:ExecutionBlocker"))
sys.modules["comfy_execution.graph_utils"] = saved

# an option key ComfyUI no longer reads (its module's source no longer spells it)
internals.KEYS["arc2face_no_such_key"] = ("comfy.samplers", "a key taken away")
out["key_missing"] = internals.missing()
del internals.KEYS["arc2face_no_such_key"]

# a name the pack forgot to list is a programming error, not a ComfyUI one
out["unlisted"] = refusal(lambda: internals.get("comfy.sd:load_checkpoint_guess_config"))
print(json.dumps(out))
