"""The Arc2Face Encoder node on huge embeddings inside a real ComfyUI (its memory manager, its devices).

Run with ComfyUI's interpreter from DIR/ComfyUI:  DIR/venv/bin/python <this file> <pack dir>
Prints one JSON object: the largest difference between the node's positive conditioning for rows of ±1e18 and scaled
to 1e30 and 3e38 (finite in float32, but their float32 norm is inf) and for the same rows normalised in float64.
"""

from __future__ import annotations

import json
import os

from comfyui_boot import load_pack as boot_pack
from comfyui_boot import start_comfyui

PACK = os.path.abspath(start_comfyui()[0])

import folder_paths  # noqa: E402
import torch  # noqa: E402


def load_pack():
    return boot_pack(PACK, "nodes.identity")


identity = load_pack()
encoder_dir = os.path.join(folder_paths.models_dir, "arc2face", "encoder")
patcher = identity.load_encoder_patcher(os.path.join(encoder_dir, "pytorch_model.bin"),
                                        os.path.join(encoder_dir, "config.json"), "auto")
node = identity.Arc2FaceEncoder()
directions = torch.randn(3, 512, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
huge64 = torch.stack([directions[0].sign() * 1e18,                                   # norm 2.3e19: float32 overflows
                      directions[1] / directions[1].abs().max() * 1e30,
                      directions[2] / directions[2].abs().max() * 3e38])
huge = huge64.float()
assert torch.isfinite(huge).all() and torch.isinf(huge.norm(dim=1)).all()
units = (huge64 / huge64.norm(dim=1, keepdim=True)).float()                          # float64 does not overflow here
positive_huge = node.encode(patcher, huge)[0][0][0]
positive_unit = node.encode(patcher, units)[0][0][0]
print(json.dumps({"max_difference": float((positive_huge - positive_unit).abs().max()),
                  "shape": list(positive_huge.shape)}))
