"""Write the shipped UI-format workflows (workflows/*.json) from compact specs and the node-definition snapshot.

Widget values are positional in the UI format; generating them from tests/data/object_info.json (taken from a real
ComfyUI by scripts/snapshot_object_info.py) keeps every workflow in step with the nodes.

    python scripts/build_workflows.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from builders.ui_workflows import FILE_COMBOS, NodeSpec, build_ui_workflow, check_ui_workflow  # noqa: E402

VAE_FILE = "sd15_vae.safetensors"
VAE_MODEL = {"name": VAE_FILE, "directory": "vae",
             "url": "https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5/resolve/main/vae/"
                    "diffusion_pytorch_model.safetensors"}
FILES_NOTE = ("Arc2Face needs (see the pack's README):\n"
              "models/arc2face/arc2face/ (config.json, diffusion_pytorch_model.safetensors)\n"
              "models/arc2face/encoder/ (config.json, pytorch_model.bin)\n"
              "models/arc2face/arcface.onnx\n"
              "   all from huggingface.co/FoivosPar/Arc2Face\n"
              "models/insightface/models/antelopev2/scrfd_10g_bnkps.onnx (insightface antelopev2)\n"
              f"models/vae/{VAE_FILE} (SD1.5's VAE: stable-diffusion-v1-5/vae/diffusion_pytorch_model.safetensors)\n"
              "Pose workflows also: models/arc2face/controlnet/ (Arc2Face) and antelopev2's 1k3d68.onnx (pose from a "
              "photo)\n"
              "Expression workflows also: models/arc2face/exp_adapter/exp_adapter.bin (Arc2Face), and for an "
              "expression from a photo models/arc2face/smirk/SMIRK_em1.pt (SMIRK) and antelopev2's 1k3d68.onnx")
SAMPLER = {"seed": 42, "seed#control": "randomize", "steps": 25, "cfg": 3.0, "sampler_name": "dpmpp_2m",
           "scheduler": "sgm_uniform", "width": 512, "height": 512}


def common_head(image_file: str) -> list[NodeSpec]:
    return [
        NodeSpec(1, "Arc2FaceModelLoader", (0, 0), {"weight_dtype": "auto"}, size=(320, 100)),
        NodeSpec(2, "Arc2FaceArcFaceLoader", (0, 160), {"provider": "auto", "det_size": 640}, size=(320, 110)),
        NodeSpec(3, "LoadImage", (0, 320), {"image": image_file}, size=(320, 330)),
        NodeSpec(4, "Arc2FaceArcFaceEmbed", (380, 220), {"face": "largest"}, size=(280, 100)),
        NodeSpec(5, "PreviewImage", (380, 380), title="Aligned faces", size=(280, 280)),
        NodeSpec(6, "Arc2FaceEncoder", (720, 40), size=(240, 60)),
        NodeSpec(8, "VAELoader", (720, 420), {"vae_name": VAE_FILE}, properties={"models": [VAE_MODEL]},
                 size=(300, 60)),
        NodeSpec(9, "VAEDecode", (1400, 0), size=(200, 50)),
        NodeSpec(10, "SaveImage", (1640, 0), {"filename_prefix": "arc2face"}, size=(400, 420)),
        NodeSpec(11, "Note", (0, 1060), {"text": FILES_NOTE}, size=(660, 150)),
    ]


COMMON_LINKS = [(1, "encoder", 6, "encoder"), (2, "arcface", 4, "arcface"), (3, "IMAGE", 4, "image"),
                (4, "faces", 5, "images"), (8, "VAE", 9, "vae"), (9, "IMAGE", 10, "images")]


def basic():
    nodes = common_head("arc2face_face.png") + [
        NodeSpec(7, "Arc2FaceSampler", (1020, 0), dict(SAMPLER, images_per_id=4), size=(320, 330))]
    links = COMMON_LINKS + [(4, "embeds", 6, "embeds"), (1, "model", 7, "model"), (6, "positive", 7, "positive"),
                            (6, "negative", 7, "negative"), (7, "latent", 9, "samples")]
    return nodes, links


def average():
    nodes = common_head("arc2face_person_1.png") + [
        NodeSpec(12, "LoadImage", (-380, 320), {"image": "arc2face_person_2.png"}, size=(320, 330)),
        NodeSpec(13, "LoadImage", (-380, 700), {"image": "arc2face_person_3.png"}, size=(320, 330)),
        NodeSpec(14, "ImageBatch", (200, 560), size=(160, 50)),
        NodeSpec(15, "ImageBatch", (200, 640), size=(160, 50)),
        NodeSpec(16, "Arc2FaceEmbeddingAverage", (720, 200), {"method": "mean"}, size=(240, 60)),
        NodeSpec(7, "Arc2FaceSampler", (1020, 0), dict(SAMPLER, images_per_id=4), size=(320, 330))]
    links = [link for link in COMMON_LINKS if link != (3, "IMAGE", 4, "image")] + [
        (3, "IMAGE", 14, "image1"), (12, "IMAGE", 14, "image2"), (14, "IMAGE", 15, "image1"),
        (13, "IMAGE", 15, "image2"), (15, "IMAGE", 4, "image"), (4, "embeds", 16, "embeds"),
        (16, "embeds", 6, "embeds"), (1, "model", 7, "model"), (6, "positive", 7, "positive"),
        (6, "negative", 7, "negative"), (7, "latent", 9, "samples")]
    return nodes, links


def blend():
    nodes = common_head("arc2face_person_a.png") + [
        NodeSpec(12, "LoadImage", (-380, 320), {"image": "arc2face_person_b.png"}, size=(320, 330)),
        NodeSpec(13, "Arc2FaceArcFaceEmbed", (380, 680), {"face": "largest"}, size=(280, 100)),
        NodeSpec(14, "Arc2FaceEmbeddingInterpolate", (720, 200), {"steps": 5, "method": "slerp"}, size=(280, 110)),
        NodeSpec(7, "Arc2FaceSampler", (1020, 0), dict(SAMPLER, images_per_id=1), size=(320, 330))]
    links = COMMON_LINKS + [(2, "arcface", 13, "arcface"), (12, "IMAGE", 13, "image"),
                            (4, "embeds", 14, "embeds_a"), (13, "embeds", 14, "embeds_b"),
                            (14, "embeds", 6, "embeds"), (1, "model", 7, "model"), (6, "positive", 7, "positive"),
                            (6, "negative", 7, "negative"), (7, "latent", 9, "samples")]
    return nodes, links


def ksampler():
    nodes = common_head("arc2face_face.png") + [
        NodeSpec(12, "EmptyLatentImage", (720, 200), {"width": 512, "height": 512, "batch_size": 1}, size=(300, 110)),
        NodeSpec(7, "KSampler", (1020, 0), {"seed": 42, "seed#control": "randomize", "steps": 25, "cfg": 3.0,
                                            "sampler_name": "dpmpp_2m", "scheduler": "sgm_uniform", "denoise": 1.0},
                 title="KSampler (stock): CFG 3, 25 steps, dpmpp_2m sgm_uniform", size=(320, 270))]
    links = COMMON_LINKS + [(4, "embeds", 6, "embeds"), (1, "model", 7, "model"), (6, "positive", 7, "positive"),
                            (6, "negative", 7, "negative"), (12, "LATENT", 7, "latent_image"),
                            (7, "LATENT", 9, "samples")]
    return nodes, links


def _pose(hint_nodes: list[NodeSpec], hint_links: list[tuple], hint_source: int) -> tuple[list, list]:
    nodes = common_head("arc2face_face.png") + hint_nodes + [
        NodeSpec(21, "PreviewImage", (720, 520), title="Pose hint", size=(240, 260)),
        NodeSpec(22, "Arc2FaceControlNetLoader", (720, 140), size=(280, 60)),
        NodeSpec(23, "Arc2FacePoseControlNet", (1020, 380),
                 {"strength": 1.0, "start_percent": 0.0, "end_percent": 1.0}, size=(300, 170)),
        NodeSpec(7, "Arc2FaceSampler", (1020, 0), dict(SAMPLER, images_per_id=4), size=(320, 330))]
    links = COMMON_LINKS + hint_links + [
        (4, "embeds", 6, "embeds"), (hint_source, "normal_map", 21, "images"),
        (6, "positive", 23, "positive"), (6, "negative", 23, "negative"), (22, "control_net", 23, "control_net"),
        (hint_source, "normal_map", 23, "normal_map"), (1, "model", 7, "model"), (23, "positive", 7, "positive"),
        (23, "negative", 7, "negative"), (7, "latent", 9, "samples")]
    return nodes, links


def pose():
    return _pose([NodeSpec(20, "LoadImage", (-380, 320), {"image": "arc2face_pose_reference.png"},
                           title="Pose reference", size=(320, 330)),
                  NodeSpec(24, "Arc2FaceNormalMapFromPhoto", (380, 700), {"face": "largest", "shape": "mean face"},
                           size=(300, 130))],
                 [(2, "arcface", 24, "arcface"), (20, "IMAGE", 24, "image")], 24)


def pose_angles():
    return _pose([NodeSpec(24, "Arc2FaceNormalMapFromAngles", (380, 700), {"yaw": 30.0, "pitch": 0.0, "roll": 0.0},
                           size=(300, 110))], [], 24)


def _expression(source_nodes: list[NodeSpec], source_links: list[tuple], source: int) -> tuple[list, list]:
    nodes = common_head("arc2face_face.png") + source_nodes + [
        NodeSpec(22, "Arc2FaceExpressionAdapterLoader", (720, 140), size=(280, 60)),
        NodeSpec(23, "Arc2FaceExpressionAdapter", (1020, 380),
                 {"weight": 1.0, "start_percent": 0.0, "end_percent": 1.0}, size=(300, 170)),
        NodeSpec(7, "Arc2FaceSampler", (1020, 0), dict(SAMPLER, images_per_id=4), size=(320, 330))]
    links = COMMON_LINKS + source_links + [
        (4, "embeds", 6, "embeds"), (1, "model", 23, "model"), (22, "adapter", 23, "adapter"),
        (source, "expression", 23, "expression"), (23, "model", 7, "model"), (6, "positive", 7, "positive"),
        (6, "negative", 7, "negative"), (7, "latent", 9, "samples")]
    return nodes, links


def expression():
    return _expression(
        [NodeSpec(20, "LoadImage", (-380, 320), {"image": "arc2face_expression_reference.png"},
                  title="Expression reference", size=(320, 330)),
         NodeSpec(24, "Arc2FaceExpressionFromImage", (380, 700),
                  {"face": "largest", "channel_order": "bgr (Arc2Face demo)"}, size=(300, 130)),
         NodeSpec(21, "PreviewImage", (720, 520), title="SMIRK crop", size=(240, 260))],
        [(2, "arcface", 24, "arcface"), (20, "IMAGE", 24, "image"), (24, "crops", 21, "images")], 24)


def expression_manual():
    return _expression([NodeSpec(24, "Arc2FaceExpression", (380, 700),
                                 {"jaw_open": 0.3, "eyelid_left": 0.0, "eyelid_right": 0.0, "coefficients": ""},
                                 size=(300, 200))], [], 24)


WORKFLOWS = {"arc2face_basic": basic, "arc2face_average": average, "arc2face_blend": blend,
             "arc2face_ksampler": ksampler, "arc2face_pose": pose, "arc2face_pose_angles": pose_angles,
             "arc2face_expression": expression, "arc2face_expression_manual": expression_manual}


def main() -> None:
    object_info = json.loads((REPO / "tests" / "data" / "object_info.json").read_text())
    out_dir = REPO / "workflows"
    out_dir.mkdir(exist_ok=True)
    for name, make in WORKFLOWS.items():
        nodes, links = make()
        workflow = build_ui_workflow(nodes, links, object_info)
        problems = check_ui_workflow(workflow, object_info, FILE_COMBOS)
        if problems:
            raise SystemExit(f"{name}: " + "; ".join(problems))
        (out_dir / f"{name}.json").write_text(json.dumps(workflow, indent=1) + "\n")
        print(f"wrote workflows/{name}.json ({len(nodes)} nodes, {len(links)} links)")


if __name__ == "__main__":
    main()
