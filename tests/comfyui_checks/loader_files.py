"""Every file loader's IS_CHANGED follows its files, as ComfyUI itself calls it (ComfyUI caches a node's output by its
inputs; a loader with no inputs, or unchanged ones, would keep a replaced or added file's old model until /free).

Run with ComfyUI's interpreter from DIR/ComfyUI:  DIR/venv/bin/python <this file> <pack dir> <empty folder>
The folder becomes the only ``arc2face`` and ``insightface`` model folder. For each loader, its IS_CHANGED value is
read with no file, after a file appears, after it is rewritten with other bytes, again unchanged, and after it is
deleted. Prints one JSON object: {node id: [True if the value changed at each of those four steps]}.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from comfyui_boot import load_pack, start_comfyui

pack_dir, folder = start_comfyui()
base = Path(folder)
pack = load_pack(os.path.abspath(pack_dir))

import folder_paths  # noqa: E402  (ComfyUI's own module, importable once start_comfyui ran)

for name in ("arc2face", "insightface"):
    folder_paths.folder_names_and_paths[name] = ([str(base / name)], set())

LOADERS = {   # node id: (its inputs, a file it reads, relative to the models folder)
    "Arc2FaceFLAMELoader": ({}, "arc2face/flame/generic_model.pkl"),
    "Arc2FaceControlNetLoader": ({}, "arc2face/controlnet/config.json"),
    "Arc2FaceExpressionAdapterLoader": ({}, "arc2face/exp_adapter/exp_adapter.bin"),
    "Arc2FaceReferenceAdapterLoader": ({"download_missing": False}, "arc2face/ref_adapter/pytorch_lora_weights.safetensors"),
    "Arc2FaceModelLoader": ({"weight_dtype": "auto"}, "arc2face/encoder/pytorch_model.bin"),
    "Arc2FaceArcFaceLoader": ({"provider": "auto", "det_size": 640},
                              "insightface/models/antelopev2/scrfd_10g_bnkps.onnx"),
}
report = {}
for node_id, (inputs, rel) in LOADERS.items():
    cls = pack.NODE_CLASS_MAPPINGS[node_id]
    path = base / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    values = [cls.IS_CHANGED(**inputs)]
    path.write_bytes(b"first")
    values.append(cls.IS_CHANGED(**inputs))
    time.sleep(0.01)
    path.write_bytes(b"second file")
    values.append(cls.IS_CHANGED(**inputs))
    values.append(cls.IS_CHANGED(**inputs))
    path.unlink()
    values.append(cls.IS_CHANGED(**inputs))
    report[node_id] = [a != b for a, b in zip(values, values[1:])]
print(json.dumps(report))
