"""A dataset image's noise is what ComfyUI's stock KSampler draws for a batch of one with the image's seed.

Run with ComfyUI's own interpreter, from DIR/ComfyUI:
    DIR/venv/bin/python <this file> <pack dir>
Prints one JSON object; the test asserts on it.
"""

from __future__ import annotations

import json
import os
import sys

from comfyui_boot import start_comfyui

PACK = os.path.abspath(start_comfyui()[0])

import comfy.sample  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, PACK)
from arc2face_core.datasets.seeds import image_noise, image_seed  # noqa: E402

checks = []
for dataset_seed, identity, image, attempt in [(0, 0, 0, 0), (7, 3, 1, 2), (2 ** 63, 99_999, 5, 0)]:
    seed = image_seed(dataset_seed, identity, image, attempt)
    stock = comfy.sample.prepare_noise(torch.zeros(1, 4, 64, 64), seed)   # KSampler, batch of one, no batch_index
    checks.append({"seed": seed, "equal": bool(torch.equal(stock, image_noise(seed, 4, 64, 64))),
                   "std": float(stock.std())})
print(json.dumps({"checks": checks}))
