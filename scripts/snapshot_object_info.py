"""Save the node definitions the shipped workflows use, from a running ComfyUI, to tests/data/object_info.json.

CI has no ComfyUI, so the workflow checks read this snapshot; the real-ComfyUI integration test fails when the live
server disagrees with it (then run this again). File-list combos (which depend on the files of one machine) are
stored as an empty list.

    python scripts/snapshot_object_info.py --comfyui DIR              # starts DIR's server with this checkout
    python scripts/snapshot_object_info.py --server http://127.0.0.1:8188  # a server already running
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from builders.ui_workflows import normalise_node_info  # noqa: E402

STOCK_NODES = ("LoadImage", "ImageBatch", "VAELoader", "VAEDecode", "SaveImage", "PreviewImage", "KSampler",
               "EmptyLatentImage",
               # LCM and two-people workflows (issue 13)
               "LoraLoaderModelOnly", "ModelSamplingDiscrete", "SolidMask", "MaskComposite", "ConditioningSetMask",
               "ConditioningCombine",
               # the identity-check workflow (issue 12)
               "PreviewAny",
               # the Reference Adapter workflows (issue 11)
               "VAEEncode")


def _from_new_server(base: Path) -> dict:
    from fixtures_comfyui import link_pack, start_server, stop_server

    link_pack(base / "ComfyUI" / "custom_nodes")
    process, client = start_server(base, base / "snapshot_object_info.log")
    try:
        return client.get("/object_info")
    finally:
        stop_server(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default="http://127.0.0.1:8188")
    parser.add_argument("--comfyui", type=Path, help="an install made by shared/tools/comfyui/setup.sh: start its "
                                                     "server with this checkout linked in, read, stop")
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "data" / "object_info.json")
    args = parser.parse_args()
    if args.comfyui:
        info = _from_new_server(args.comfyui.resolve())
    else:
        with urllib.request.urlopen(f"{args.server}/object_info", timeout=60) as response:
            info = json.load(response)
    ours = sorted(k for k, v in info.items() if v.get("category", "").startswith("Arc2Face"))
    snapshot = {name: normalise_node_info(name, info[name]) for name in ours + list(STOCK_NODES)}
    args.out.write_text(json.dumps(snapshot, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(snapshot)} node definitions ({len(ours)} of this pack) to {args.out}")


if __name__ == "__main__":
    main()
