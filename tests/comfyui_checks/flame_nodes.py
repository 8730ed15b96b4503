"""Checks of the FLAME nodes inside a real ComfyUI (its folder paths, its memory manager), with ComfyUI's interpreter.

Run from DIR/ComfyUI:  DIR/venv/bin/python <this file> <pack dir>
Prints one JSON object of measurements; tests/integration/test_live_flame.py asserts on them. Needs the random FLAME
model the session fixture writes into models/arc2face/flame/. Normal Map from FLAME takes FLAME parameters
(ARC2FACE_FACE_PARAMS) that only a photo node makes, so here they are built directly, as SMIRK would give them.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os

from comfyui_boot import load_pack as boot_pack
from comfyui_boot import start_comfyui

PACK = os.path.abspath(start_comfyui()[0])

import comfy.model_management as mm  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def load_pack():
    return boot_pack(PACK, "nodes.flame", "nodes.pose")


def main() -> None:
    nodes, pose_nodes = load_pack()
    FaceParameters = importlib.import_module("arc2face_pack.arc2face_core.pose.face_parameters").FaceParameters
    flame_hint = importlib.import_module("arc2face_pack.arc2face_core.pose.flame_hint")
    load_flame = importlib.import_module("arc2face_pack.arc2face_core.pose.flame").load_flame

    (flame,) = nodes.Arc2FaceFLAMELoader().load()
    (again,) = nodes.Arc2FaceFLAMELoader().load()
    path = flame.model.source

    def params(count, seed, crop=True):
        r = np.random.default_rng(seed)
        t = lambda a: torch.tensor(a, dtype=torch.float32)   # noqa: E731
        scale = 224 / 300.0
        crop_matrix = np.array([[scale, 0, -100 * scale], [0, scale, -120 * scale], [0, 0, 1.0]])
        return FaceParameters(shape=t(r.normal(0, 0.5, (count, 300))), expression=t(r.normal(0, 0.5, (count, 50))),
                              eyelids=t(r.uniform(0, 1, (count, 2))), jaw=t(np.abs(r.normal(0, 0.1, (count, 3)))),
                              pose=t(r.normal(0, 0.2, (count, 3))), camera=t(np.tile([8.0, 0.0, 0.0], (count, 1))),
                              crop=t(np.tile(crop_matrix, (count, 1, 1))) if crop else None)

    pose, identity = params(2, 1), params(1, 2)
    (hint,) = nodes.Arc2FaceNormalMapFromFLAME().render(flame, pose, identity)
    (own_shape,) = nodes.Arc2FaceNormalMapFromFLAME().render(flame, pose)
    reference = load_flame(path)
    expected = flame_hint.flame_normal_maps(reference, pose.with_shape_of(identity))
    typed = flame_hint.typed_face_parameters(5.0, -20.0, 3.0, torch.zeros(3, 55))
    (angles,) = pose_nodes.Arc2FaceNormalMapFromAngles().render(-20.0, 5.0, 3.0, torch.zeros(3, 55), flame)
    loaded = [m.model.model is flame.model for m in mm.current_loaded_models]
    errors = {}
    shut_eyes_too_far = torch.zeros(2, 55)
    shut_eyes_too_far[1, 50] = 5.0                 # eyelids are 0..1 (SMIRK clamps them), as the adapter takes them
    for name, call in (("identity_batch", lambda: nodes.Arc2FaceNormalMapFromFLAME().render(flame, pose, params(3, 4))),
                       ("not_params", lambda: nodes.Arc2FaceNormalMapFromFLAME().render(flame, torch.zeros(1, 55))),
                       ("not_flame", lambda: nodes.Arc2FaceNormalMapFromFLAME().render(object(), pose)),
                       ("eyelids_flame", lambda: pose_nodes.Arc2FaceNormalMapFromAngles().render(
                           0.0, 0.0, 0.0, shut_eyes_too_far, flame)),
                       ("eyelids_generic", lambda: pose_nodes.Arc2FaceNormalMapFromAngles().render(
                           0.0, 0.0, 0.0, shut_eyes_too_far))):
        try:
            call()
            errors[name] = "no error"
        except Exception as exc:   # noqa: BLE001 - the message is what is checked
            errors[name] = f"{type(exc).__name__}: {exc}"
    print(json.dumps({
        "cached": again is flame,
        "model_file": str(path),
        "eyelids": bool(flame.model.has_eyelids),
        "managed": any(loaded),
        "hint_shape": list(hint.shape),
        "hint_vs_core": float((hint.cpu() * 255 - torch.from_numpy(expected).float()).abs().max()),
        "identity_shape_used": float((hint - own_shape).abs().max()),
        "background": float(hint[0, 0, 0, 0]),
        "angles_shape": list(angles.shape),
        "angles_vs_core": float((angles.cpu() * 255 - torch.from_numpy(
            flame_hint.flame_normal_maps(reference, typed)).float()).abs().max()),
        "errors": errors,
    }))


if __name__ == "__main__":
    main()
