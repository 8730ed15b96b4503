"""What a prompt cannot show, checked on the nodes inside a real ComfyUI: objects shared, models cached, dtypes.

Run by tests/integration/test_live_node_internals.py with ComfyUI's own interpreter, from DIR/ComfyUI:
    DIR/venv/bin/python <this file> <pack dir> <scratch dir>
Prints one JSON object of measurements; the test asserts on them. Reads the session's random models (never writes
them); files it changes are copies in <scratch dir>, which it registers as the first ``arc2face`` model folder, as a
user's extra_model_paths.yaml entry would be.

* pose: the Pose ControlNet node on the real ControlNet: one control object shared by positive and negative (so
  ComfyUI batches both CFG halves through one ControlNet run), stacked on the stock node's chain, strength 0, a start
  after the end, and the Sampler's per-identity expansion of that chain.
* smirk: Expression from Photo loads SMIRK once and reuses it (memory-managed), and reloads a replaced file.
* encoder: the ID encoder in each weight_dtype, against transformers' CLIPTextModel computing in that dtype; outputs
  float32 on ComfyUI's intermediate device; the encoder handed to ComfyUI's memory manager.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
from pathlib import Path

from comfyui_boot import load_pack as boot_pack
from comfyui_boot import start_comfyui

ARGS = start_comfyui()
PACK, SCRATCH = os.path.abspath(ARGS[0]), Path(ARGS[1])

import comfy.model_management as mm  # noqa: E402
import folder_paths  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import nodes as comfy_nodes  # noqa: E402


def load_pack():
    boot_pack(PACK)
    return lambda name: importlib.import_module(f"arc2face_pack.{name}")


def error_text(call) -> str:
    try:
        call()
    except Exception as exc:   # the message is what the test reads
        return f"{type(exc).__name__}: {exc}"
    return ""


def is_loaded(module) -> bool:
    return any(loaded.model is not None and loaded.model.model is module for loaded in mm.current_loaded_models)


# ------------------------------------------------------------------------------------------------------- pose
def pose_checks(pack) -> dict:
    pose, sampling = pack("nodes.pose"), pack("nodes.sampling")
    control_net = pose.Arc2FaceControlNetLoader().load()[0]
    g = torch.Generator().manual_seed(0)
    positive = [[torch.randn(2, 77, 768, generator=g), {"pooled_output": torch.randn(2, 768, generator=g)}]]
    negative = [[torch.randn(1, 77, 768, generator=g), {"pooled_output": torch.randn(1, 768, generator=g)}]]
    hints = torch.rand(2, 64, 64, 3, generator=g) * 0.6 + 0.2     # two identities, one normal map each
    node = pose.Arc2FacePoseControlNet()
    out = {}

    pos, neg = node.apply(positive, negative, control_net, hints, 0.8, 0.1, 0.9)
    ours = pos[0][1]["control"]
    out["shared"] = ours is neg[0][1]["control"]
    out["strength"], out["range"] = ours.strength, list(ours.timestep_percent_range)
    out["upscale"], out["previous_is_none"] = ours.upscale_algorithm, ours.previous_controlnet is None
    out["hint_shape"] = list(ours.cond_hint_original.shape)
    out["apply_to_uncond"] = [pos[0][1]["control_apply_to_uncond"], neg[0][1]["control_apply_to_uncond"]]
    out["inputs_untouched"] = "control" not in positive[0][1] and "control" not in negative[0][1]

    stock_pos, stock_neg = comfy_nodes.ControlNetApplyAdvanced().apply_controlnet(
        positive, negative, control_net, hints[:1], 0.5, 0.0, 1.0)
    stock = stock_pos[0][1]["control"]
    pos, neg = node.apply(stock_pos, stock_neg, control_net, hints, 0.8, 0.1, 0.9)
    top = pos[0][1]["control"]
    out["stacked_shared"] = top is neg[0][1]["control"]
    out["stacked_on_stock"] = top.previous_controlnet is stock and stock is stock_neg[0][1]["control"]

    same_pos, same_neg = node.apply(positive, negative, control_net, hints, 0.0, 0.0, 1.0)
    out["strength0_returns_the_inputs"] = same_pos is positive and same_neg is negative
    out["start_after_end"] = error_text(lambda: node.apply(positive, negative, control_net, hints, 1.0, 0.7, 0.3))

    # What the Arc2Face Sampler does for 2 identities x 2 images: the per-identity hints laid out [0, 0, 1, 1], the
    # stock control (one hint for all) kept as it is, and the chain still one object for both halves.
    copies = {}
    expanded_pos = sampling._expand_control_hints(pos, 2, 2, copies)
    expanded_neg = sampling._expand_control_hints(neg, 2, 2, copies)
    expanded = expanded_pos[0][1]["control"]
    out["expanded_shared"] = expanded is expanded_neg[0][1]["control"]
    out["expanded_rows_by_hand"] = bool(torch.equal(expanded.cond_hint_original,
                                                    top.cond_hint_original[[0, 0, 1, 1]]))
    out["expanded_keeps_the_stock_control"] = expanded.previous_controlnet is stock
    out["expanded_settings"] = [expanded.strength, list(expanded.timestep_percent_range), expanded.upscale_algorithm]
    out["original_untouched"] = top.cond_hint_original.shape[0] == 2 and pos[0][1]["control"] is top
    return out


# ------------------------------------------------------------------------------------------------------ smirk
def read_image(name: str) -> torch.Tensor:
    rgb = np.asarray(Image.open(os.path.join(folder_paths.get_input_directory(), name)).convert("RGB"))
    return torch.from_numpy(rgb.astype(np.float32) / 255.0)[None]


def smirk_checks(pack) -> dict:
    expression, faces = pack("nodes.expression"), pack("nodes.faces")
    smirk_module = pack("arc2face_core.expression.smirk")
    session_arc2face = folder_paths.get_folder_paths("arc2face")
    mine = SCRATCH / "arc2face"
    smirk_file = mine / "smirk" / "SMIRK_em1.pt"
    smirk_file.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(os.path.join(session_arc2face[-1], "smirk", "SMIRK_em1.pt"), smirk_file)
    folder_paths.add_model_folder_path("arc2face", str(mine), is_default=True)   # searched first

    loads = []
    real_loader = smirk_module.load_smirk_encoder

    def counting_loader(path, *args, **kwargs):   # the real loader, counted
        loads.append(str(path))
        return real_loader(path, *args, **kwargs)

    smirk_module.load_smirk_encoder = counting_loader
    arcface = faces.Arc2FaceArcFaceLoader().load("CPU", 640)[0]
    node = expression.Arc2FaceExpressionFromImage()
    face = read_image("arc2face_face.png")
    first = node.read(arcface, face, "largest", "bgr (Arc2Face demo)")[0]
    second = node.read(arcface, read_image("arc2face_person_b.png"), "largest", "bgr (Arc2Face demo)")[0]
    out = {"loads_after_two_reads": loads[:], "searched": [str(p) for p in folder_paths.get_folder_paths("arc2face")]}
    patcher = expression._smirk_patcher(smirk_file)
    out["cached_patcher_reused"] = len(expression._SMIRK_CACHE) == 1 and patcher is next(
        iter(expression._SMIRK_CACHE.values()))
    out["smirk_memory_managed"] = is_loaded(patcher.model)
    out["two_photos_differ"] = float((first - second).abs().max())

    # The user replaces the file: the next read loads the new one.
    state = torch.load(smirk_file, weights_only=True)
    key = "smirk_encoder.expression_encoder.expression_layers.0.weight"
    state[key] = state[key] * 2.0
    torch.save(state, smirk_file)
    stat = smirk_file.stat()
    os.utime(smirk_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    third = node.read(arcface, face, "largest", "bgr (Arc2Face demo)")[0]
    out["loads_after_replacing_the_file"] = loads[:]
    out["replaced_file_changes_the_expression"] = float((third - first).abs().max())
    out["cache_size"] = len(expression._SMIRK_CACHE)
    smirk_module.load_smirk_encoder = real_loader
    return out


# ---------------------------------------------------------------------------------------------------- encoder
def reference_encoder(folder: str, dtype: torch.dtype, embeds: torch.Tensor, tok) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' CLIPTextModel in ``dtype``: the "id" token's embedding row set to the padded unit vector."""
    import transformers

    model = transformers.CLIPTextModel.from_pretrained(folder, torch_dtype=dtype).eval()
    table = model.get_input_embeddings().weight
    ids = tok.padded_ids(tok.PSEUDO_PROMPT_IDS).unsqueeze(0)
    rows = []
    with torch.no_grad():
        for row in embeds / embeds.norm(dim=1, keepdim=True):
            table[tok.ID_TOKEN] = torch.nn.functional.pad(row, (0, table.shape[1] - row.shape[0])).to(dtype)
            rows.append(model(input_ids=ids).last_hidden_state[0])
        empty = model(input_ids=tok.padded_ids(tok.EMPTY_PROMPT_IDS).unsqueeze(0)).last_hidden_state
    return torch.stack(rows), empty


def encoder_checks(pack) -> dict:
    identity, tok = pack("nodes.identity"), pack("arc2face_core.identity.prompt_tokens")
    folder = os.path.join(folder_paths.get_folder_paths("arc2face")[-1], "encoder")
    weights, config = os.path.join(folder, "pytorch_model.bin"), os.path.join(folder, "config.json")
    embeds = torch.randn(3, 512, generator=torch.Generator().manual_seed(5))
    embeds = embeds / embeds.norm(dim=1, keepdim=True)
    out = {"intermediate_device": str(mm.intermediate_device())}
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    reference = {name: reference_encoder(folder, dtype, embeds, tok) for name, dtype in dtypes.items()}
    for name in ("auto", "fp32", "bf16", "fp16"):
        patcher = identity.load_encoder_patcher(weights, config, name)
        positive, negative = identity.Arc2FaceEncoder().encode(patcher, embeds)
        cond, pooled = positive[0][0], positive[0][1]["pooled_output"]
        weight = patcher.model.text_model.embeddings.token_embedding.weight
        entry = {"weight_dtype": str(weight.dtype), "load_device": str(patcher.load_device),
                 "offload_device": str(patcher.offload_device), "memory_managed": is_loaded(patcher.model),
                 "outputs": sorted({f"{t.dtype} {t.device}" for t in (cond, pooled, negative[0][0])}),
                 "shapes": [list(cond.shape), list(negative[0][0].shape)]}
        for ref_name, (ref_pos, ref_neg) in reference.items():
            entry[f"ulps_vs_{ref_name}"] = max(ulps(cond, ref_pos, weight.dtype), ulps(negative[0][0], ref_neg, weight.dtype))
        out[name] = entry
    return out


def ulps(ours: torch.Tensor, reference: torch.Tensor, dtype: torch.dtype) -> float:
    """The largest difference in units in the last place of ``dtype`` at each reference value (at least 1.0's)."""
    reference = reference.float()
    spacing = torch.finfo(dtype).eps * torch.exp2(torch.floor(torch.log2(reference.abs().clamp_min(1.0))))
    return float(((ours.float() - reference).abs() / spacing).max())


def main() -> None:
    pack = load_pack()
    torch.set_num_threads(2)
    print(json.dumps({"encoder": encoder_checks(pack), "smirk": smirk_checks(pack), "pose": pose_checks(pack)}))


if __name__ == "__main__":
    main()
