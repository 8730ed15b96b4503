"""Write the shipped UI-format workflows (example_workflows/*.json) from compact specs and the node-definition snapshot.

Widget values are positional in the UI format; generating them from tests/data/object_info.json (taken from a real
ComfyUI by scripts/snapshot_object_info.py) keeps every workflow in step with the nodes.

    python scripts/build_workflows.py
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "scripts"))

from workflow_models import models_for  # noqa: E402

from builders.ui_workflows import (  # noqa: E402
    FILE_COMBOS,
    VIRTUAL_NODES,
    NodeSpec,
    build_ui_workflow,
    check_ui_workflow,
    layout_problems,
)

VAE_FILE = "sd15_vae.safetensors"
LCM_LORA = "lcm-lora-sdv1-5.safetensors"
ARC2FACE_HUB = "huggingface.co/FoivosPar/Arc2Face"
ANTELOPEV2 = "insightface's antelopev2 pack (non-commercial research only)"
# What each node type reads from disk, for the Note of every workflow that uses it (values: the node's widgets).
FILES_BY_NODE = {
    "Arc2FaceModelLoader": lambda v: [f"models/arc2face/arc2face/ (config.json, diffusion_pytorch_model.safetensors) "
                                      f"and models/arc2face/encoder/ (config.json, pytorch_model.bin): {ARC2FACE_HUB}"],
    "Arc2FaceArcFaceLoader": lambda v: [f"models/arc2face/arcface.onnx: {ARC2FACE_HUB}",
                                        f"models/insightface/models/antelopev2/scrfd_10g_bnkps.onnx: {ANTELOPEV2}"],
    "VAELoader": lambda v: [f"models/vae/{v.get('vae_name', VAE_FILE)}: SD1.5's VAE (stable-diffusion-v1-5, "
                            "vae/diffusion_pytorch_model.safetensors)"],
    "Arc2FaceControlNetLoader": lambda v: [f"models/arc2face/controlnet/ (config.json, "
                                           f"diffusion_pytorch_model.safetensors): {ARC2FACE_HUB}"],
    "Arc2FaceNormalMapFromPhoto": lambda v: [f"models/insightface/models/antelopev2/1k3d68.onnx: {ANTELOPEV2}"],
    "Arc2FaceExpressionAdapterLoader": lambda v: [f"models/arc2face/exp_adapter/exp_adapter.bin: {ARC2FACE_HUB}"],
    "Arc2FaceExpressionFromImage": lambda v: [
        "models/arc2face/smirk/SMIRK_em1.pt: github.com/georgeretsi/smirk (by hand)",
        f"models/insightface/models/antelopev2/1k3d68.onnx: {ANTELOPEV2}"],
    "Arc2FaceFaceParametersFromPhoto": lambda v: [
        "models/arc2face/smirk/SMIRK_em1.pt: github.com/georgeretsi/smirk (by hand)",
        f"models/insightface/models/antelopev2/1k3d68.onnx: {ANTELOPEV2}",
        "optional, SMIRK's own crop: models/arc2face/smirk/face_landmarker.task (MediaPipe, Apache-2.0) and the "
        "mediapipe package"],
    "Arc2FaceFLAMELoader": lambda v: ["models/arc2face/flame/generic_model.pkl: FLAME 2020 (registration at "
                                      "flame.is.tue.mpg.de; licence-gated, never downloaded)"],
    "Arc2FaceReferenceAdapterLoader": lambda v: [
        f"models/arc2face/ref_adapter/pytorch_lora_weights.safetensors: {ARC2FACE_HUB}"],
    "Arc2FaceAlignFace": lambda v: [f"models/insightface/models/antelopev2/1k3d68.onnx: {ANTELOPEV2}"],
    "LoraLoaderModelOnly": lambda v: [f"models/loras/{v['lora_name']}: SD1.5's LCM-LoRA "
                                      "(huggingface.co/latent-consistency/lcm-lora-sdv1-5, pytorch_lora_weights"
                                      ".safetensors, renamed)" if "lcm" in v["lora_name"] else
                                      f"models/loras/{v['lora_name']}"],
}
FILES_FOOTER = ("All but SMIRK: python -m arc2face_core.cli.downloads --models ComfyUI/models --all "
                "(in the pack's folder; see its README)")


@dataclass(frozen=True)
class Note:
    """What a workflow's Note says; the files it needs are listed from its nodes (FILES_BY_NODE)."""

    does: str
    try_first: str


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
        NodeSpec(8, "VAELoader", (720, 420), {"vae_name": VAE_FILE}, size=(300, 60)),
        NodeSpec(9, "VAEDecode", (1400, 0), size=(200, 50)),
        NodeSpec(10, "SaveImage", (1640, 0), {"filename_prefix": "arc2face"}, size=(400, 420)),
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


def pose_angles_flame():
    """One hand-made expression drives both the FLAME hint (open mouth in the head's normals) and the adapter."""
    nodes, links = _pose([
        NodeSpec(25, "Arc2FaceFLAMELoader", (-380, 700), size=(300, 60)),
        NodeSpec(26, "Arc2FaceExpression", (-380, 800),
                 {"jaw_open": 0.3, "eyelid_left": 0.0, "eyelid_right": 0.0, "coefficients": ""}, size=(300, 200)),
        NodeSpec(24, "Arc2FaceNormalMapFromAngles", (380, 700), {"yaw": 30.0, "pitch": 0.0, "roll": 0.0},
                 size=(300, 150)),
        NodeSpec(27, "Arc2FaceExpressionAdapterLoader", (720, 240), size=(280, 60)),
        NodeSpec(28, "Arc2FaceExpressionAdapter", (720, 800),
                 {"weight": 1.0, "start_percent": 0.0, "end_percent": 1.0}, size=(300, 170))],
        [(25, "flame", 24, "flame"), (26, "expression", 24, "expression"), (27, "adapter", 28, "adapter"),
         (26, "expression", 28, "expression")], 24)
    links = [link for link in links if link != (1, "model", 7, "model")] + [(1, "model", 28, "model"),
                                                                           (28, "model", 7, "model")]
    return nodes, links


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


def lcm():
    """LCM speed mode: SD1.5's LCM-LoRA, ModelSamplingDiscrete lcm, sampler lcm + scheduler simple, 3 steps, CFG 1.

    In ComfyUI 0.3.64 this matches diffusers' LCMScheduler of the official demo exactly (timesteps 999/679/339 with its
    c_skip/c_out); sgm_uniform would be up to 2.5% off, and without ModelSamplingDiscrete the steps are 999/666/333.
    """
    nodes = common_head("arc2face_face.png") + [
        NodeSpec(12, "LoraLoaderModelOnly", (720, 140), {"lora_name": LCM_LORA, "strength_model": 1.0},
                 size=(320, 90)),
        NodeSpec(13, "ModelSamplingDiscrete", (1020, 140), {"sampling": "lcm", "zsnr": False}, size=(280, 90)),
        NodeSpec(7, "Arc2FaceSampler", (1020, 0), dict(SAMPLER, steps=3, cfg=1.0, sampler_name="lcm",
                                                        scheduler="simple", images_per_id=4),
                 title="Arc2Face Sampler (LCM: 3 steps, CFG 1.0, lcm + simple)", size=(320, 330))]
    links = COMMON_LINKS + [(4, "embeds", 6, "embeds"), (1, "model", 12, "model"), (12, "MODEL", 13, "model"),
                            (13, "MODEL", 7, "model"), (6, "positive", 7, "positive"), (6, "negative", 7, "negative"),
                            (7, "latent", 9, "samples")]
    return nodes, links


def two_people():
    """Two identities, each owning half of a 1024x512 image: Conditioning (Set Mask) per person, then Combine."""
    nodes = common_head("arc2face_person_a.png") + [
        NodeSpec(12, "LoadImage", (-380, 700), {"image": "arc2face_person_b.png"}, title="Person B (right)",
                 size=(320, 330)),
        NodeSpec(13, "Arc2FaceArcFaceEmbed", (380, 700), {"face": "largest"}, size=(280, 100)),
        NodeSpec(14, "Arc2FaceEncoder", (720, 300), size=(240, 60)),
        NodeSpec(15, "SolidMask", (380, 900), {"value": 0.0, "width": 1024, "height": 512}, title="Empty canvas",
                 size=(260, 110)),
        NodeSpec(16, "SolidMask", (380, 1050), {"value": 1.0, "width": 512, "height": 512}, title="Half",
                 size=(260, 110)),
        NodeSpec(17, "MaskComposite", (720, 900), {"x": 0, "y": 0, "operation": "add"}, title="Left half",
                 size=(260, 130)),
        NodeSpec(18, "MaskComposite", (720, 1050), {"x": 512, "y": 0, "operation": "add"}, title="Right half",
                 size=(260, 130)),
        NodeSpec(19, "ConditioningSetMask", (1020, 300), {"strength": 1.0, "set_cond_area": "default"},
                 title="Person A: left", size=(280, 110)),
        NodeSpec(20, "ConditioningSetMask", (1020, 450), {"strength": 1.0, "set_cond_area": "default"},
                 title="Person B: right", size=(280, 110)),
        NodeSpec(21, "ConditioningCombine", (1300, 300), size=(240, 60)),
        NodeSpec(7, "Arc2FaceSampler", (1020, 0), dict(SAMPLER, width=1024, height=512, images_per_id=2),
                 size=(320, 330))]
    links = COMMON_LINKS + [
        (4, "embeds", 6, "embeds"), (2, "arcface", 13, "arcface"), (12, "IMAGE", 13, "image"),
        (1, "encoder", 14, "encoder"), (13, "embeds", 14, "embeds"), (15, "MASK", 17, "destination"),
        (16, "MASK", 17, "source"), (15, "MASK", 18, "destination"), (16, "MASK", 18, "source"),
        (6, "positive", 19, "conditioning"), (17, "MASK", 19, "mask"), (14, "positive", 20, "conditioning"),
        (18, "MASK", 20, "mask"), (19, "CONDITIONING", 21, "conditioning_1"),
        (20, "CONDITIONING", 21, "conditioning_2"), (1, "model", 7, "model"), (21, "CONDITIONING", 7, "positive"),
        (6, "negative", 7, "negative"), (7, "latent", 9, "samples")]
    return nodes, links


def identity_check():
    """Four images of one person, scored by the paper's ArcFace similarity; only those above the threshold are
    saved, and the report says every score."""
    nodes = common_head("arc2face_face.png") + [
        NodeSpec(7, "Arc2FaceSampler", (1020, 0), dict(SAMPLER, images_per_id=4), size=(320, 330)),
        NodeSpec(12, "Arc2FaceIdentitySimilarity", (1400, 120), {"images_per_id": 4}, size=(300, 120)),
        NodeSpec(13, "Arc2FaceFilterByIdentity", (1400, 300), {"threshold": 0.4}, size=(300, 100)),
        NodeSpec(14, "PreviewAny", (1400, 460), title="Identity report", size=(400, 300))]
    links = [link for link in COMMON_LINKS if link != (9, "IMAGE", 10, "images")] + [
        (4, "embeds", 6, "embeds"), (1, "model", 7, "model"), (6, "positive", 7, "positive"),
        (6, "negative", 7, "negative"), (7, "latent", 9, "samples"), (2, "arcface", 12, "arcface"),
        (9, "IMAGE", 12, "images"), (4, "embeds", 12, "embeds"), (9, "IMAGE", 13, "images"),
        (12, "scores", 13, "scores"), (13, "images", 10, "images"), (12, "report", 14, "source")]
    return nodes, links



def _reference(extra_nodes: list[NodeSpec], extra_links: list[tuple], model_source: tuple) -> tuple[list, list]:
    """photo → Face Align → ArcFace Embed (identity) and VAE Encode (reference) → Reference Adapter → Sampler."""
    nodes = common_head("arc2face_face.png") + extra_nodes + [
        NodeSpec(30, "Arc2FaceAlignFace", (380, 700), {"face": "largest", "size": 512}, size=(280, 110)),
        NodeSpec(31, "PreviewImage", (720, 680), title="Aligned photo (reference)", size=(240, 260)),
        NodeSpec(32, "VAEEncode", (720, 560), size=(200, 50)),
        NodeSpec(33, "Arc2FaceReferenceAdapterLoader", (720, 140), size=(280, 60)),
        NodeSpec(34, "Arc2FaceReferenceAdapter", (1020, 380), {"strength": 0.8}, size=(300, 120)),
        NodeSpec(7, "Arc2FaceSampler", (1020, 0), dict(SAMPLER, images_per_id=4), size=(320, 330))]
    links = [link for link in COMMON_LINKS if link != (3, "IMAGE", 4, "image")] + extra_links + [
        (2, "arcface", 30, "arcface"), (3, "IMAGE", 30, "image"), (30, "aligned", 4, "image"),
        (30, "aligned", 31, "images"), (30, "aligned", 32, "pixels"), (8, "VAE", 32, "vae"),
        (4, "embeds", 6, "embeds"), (model_source[0], model_source[1], 34, "model"),
        (33, "ref_adapter", 34, "ref_adapter"), (32, "LATENT", 34, "reference"), (6, "positive", 34, "positive"),
        (34, "model", 7, "model"), (6, "positive", 7, "positive"), (6, "negative", 7, "negative"),
        (7, "latent", 9, "samples")]
    return nodes, links


def reference():
    return _reference([], [], (1, "model"))


def reference_expression():
    """The official demo's reference-guided mode: the Expression Adapter and the Reference Adapter on one UNet."""
    return _reference(
        [NodeSpec(20, "LoadImage", (-380, 320), {"image": "arc2face_expression_reference.png"},
                  title="Expression reference", size=(320, 330)),
         NodeSpec(24, "Arc2FaceExpressionFromImage", (380, 860),
                  {"face": "largest", "channel_order": "bgr (Arc2Face demo)"}, size=(300, 130)),
         NodeSpec(21, "PreviewImage", (380, 1020), title="SMIRK crop", size=(240, 260)),
         NodeSpec(22, "Arc2FaceExpressionAdapterLoader", (720, 240), size=(280, 60)),
         NodeSpec(23, "Arc2FaceExpressionAdapter", (1020, 560),
                  {"weight": 1.0, "start_percent": 0.0, "end_percent": 1.0}, size=(300, 170))],
        [(2, "arcface", 24, "arcface"), (20, "IMAGE", 24, "image"), (24, "crops", 21, "images"),
         (1, "model", 23, "model"), (22, "adapter", 23, "adapter"), (24, "expression", 23, "expression")],
        (23, "model"))


# Pose from a photo with SMIRK + FLAME, as the reference made its hints.
def _flame_pose(extra_nodes: list[NodeSpec], extra_links: list[tuple]) -> tuple[list, list]:
    """Face Parameters from Photo on the pose reference (pose, expression, camera) and on the identity photo (its
    head shape) -> Normal Map from FLAME -> the pose ControlNet."""
    face_params = {"face": "largest", "channel_order": "bgr (Arc2Face demo)",
                   "crop_landmarks": "auto (MediaPipe if installed)"}
    return _pose([
        NodeSpec(20, "LoadImage", (-380, 320), {"image": "arc2face_pose_reference.png"}, title="Pose reference",
                 size=(320, 330)),
        NodeSpec(24, "Arc2FaceFaceParametersFromPhoto", (380, 700), face_params,
                 title="Face Parameters (pose reference)", size=(300, 150)),
        NodeSpec(25, "Arc2FaceFaceParametersFromPhoto", (380, 880), face_params,
                 title="Face Parameters (identity shape)", size=(300, 150)),
        NodeSpec(26, "Arc2FaceFLAMELoader", (720, 880), size=(280, 60)),
        NodeSpec(27, "Arc2FaceNormalMapFromFLAME", (720, 980), size=(280, 80)),
        NodeSpec(28, "PreviewImage", (1020, 600), title="Aligned pose reference (the hint's frame)",
                 size=(240, 260)),
    ] + extra_nodes, [
        (2, "arcface", 24, "arcface"), (20, "IMAGE", 24, "image"), (2, "arcface", 25, "arcface"),
        (3, "IMAGE", 25, "image"), (26, "flame", 27, "flame"), (24, "params", 27, "pose_params"),
        (25, "params", 27, "identity_params"), (24, "aligned", 28, "images"),
    ] + extra_links, 27)


def pose_photo_flame():
    return _flame_pose([], [])


def pose_expression_photo():
    """One photo drives both: its FLAME render poses the ControlNet, its expression the Expression Adapter."""
    nodes, links = _flame_pose([
        NodeSpec(30, "Arc2FaceExpressionAdapterLoader", (1020, 900), size=(280, 60)),
        NodeSpec(31, "Arc2FaceExpressionAdapter", (1020, 1000),
                 {"weight": 1.0, "start_percent": 0.0, "end_percent": 1.0}, size=(300, 170)),
    ], [(1, "model", 31, "model"), (30, "adapter", 31, "adapter"), (24, "expression", 31, "expression"),
        (31, "model", 7, "model")])
    return nodes, [link for link in links if link != (1, "model", 7, "model")]


FLAME_WORKFLOWS = {"arc2face_pose_photo_flame": pose_photo_flame,
                   "arc2face_pose_expression_photo": pose_expression_photo}


WORKFLOWS = {"arc2face_basic": basic, "arc2face_average": average, "arc2face_blend": blend,
             "arc2face_ksampler": ksampler, "arc2face_pose": pose, "arc2face_pose_angles": pose_angles,
             "arc2face_expression": expression, "arc2face_expression_manual": expression_manual,
             "arc2face_lcm": lcm, "arc2face_two_people": two_people, "arc2face_identity_check": identity_check,
             "arc2face_reference": reference, "arc2face_reference_expression": reference_expression,
             "arc2face_pose_angles_flame": pose_angles_flame, **FLAME_WORKFLOWS}

NOTES = {
    "arc2face_basic": Note("One photo of a person -> 4 new photos of that person (the paper's setting).",
                           "Load your photo in Load Image. Sampler: 25 steps, CFG 3.0, dpmpp_2m; more images: "
                           "images_per_id."),
    "arc2face_average": Note("Three photos of one person, embedded and averaged into one identity (paper Fig. 13: "
                             "higher fidelity) -> 4 images.",
                             "Use photos with different poses and light; method mean (median/trimmed_mean resist "
                             "an odd photo out)."),
    "arc2face_blend": Note("Two people -> a 5-step identity morph (paper Fig. 10), one image per step.",
                           "steps of Embedding Interpolate sets the number of images; slerp stays on the unit "
                           "sphere like ArcFace vectors."),
    "arc2face_ksampler": Note("The Arc2Face Encoder's positive and negative with the stock KSampler.",
                              "CFG 3.0, 25 steps, dpmpp_2m; the latent batch must equal the number of identities."),
    "arc2face_pose": Note("Identity from one photo, head pose from a reference photo (pose ControlNet) -> 4 images.",
                          "strength 1.0; lower it (0.6-0.8) if faces look stiff. The hint preview shows the pose."),
    "arc2face_pose_angles": Note("Identity from a photo, head pose typed as yaw/pitch/roll -> 4 images.",
                                 "yaw within +-60, pitch within +-30 degrees; strength 1.0."),
    "arc2face_expression": Note("Identity from one photo, expression from another photo (Expression Adapter, SMIRK) "
                                "-> 4 images.",
                                "weight 1.0; channel_order bgr as in the Arc2Face demo."),
    "arc2face_expression_manual": Note("Identity from a photo, an expression set by hand (jaw open) -> 4 images.",
                                       "jaw_open 0.1-0.4, eyelids 0-1; weight 1.0."),
    "arc2face_lcm": Note("LCM speed mode: 4 images in 3 steps with SD1.5's LCM-LoRA, as in the official demo.",
                         "Keep ModelSamplingDiscrete = lcm, sampler lcm, scheduler simple, CFG 1.0 (these match "
                         "diffusers' LCMScheduler exactly); steps 2-4."),
    "arc2face_identity_check": Note("4 images of one person scored by the paper's identity check (ArcFace cosine of "
                                    "each output to the photo's embedding); only those above the threshold are saved, "
                                    "the report lists every score.",
                                    "threshold 0.4 (the paper keeps different synthetic people below 0.3); images without a "
                                    "face score -1."),
    "arc2face_reference": Note("New photos that keep the input photo's look (hair, skin, light, background): the photo "
                               "is FFHQ-aligned, gives the identity (ArcFace) and, through VAE Encode, the reference "
                               "of the Reference Adapter -> 4 images.",
                               "strength 0.8 (the official default); lower it (e.g. 0.6) when the photo is copied too "
                               "closely. Keep Face Align's size equal to the sampler's width and height."),
    "arc2face_reference_expression": Note("The official demo's reference-guided mode: the Reference Adapter keeps the "
                                          "photo's look while the Expression Adapter sets another photo's "
                                          "expression -> 4 images.",
                                          "strength 0.8, weight 1.0; Face Align's size = the sampler's size."),
    "arc2face_pose_angles_flame": Note("Identity from a photo; head pose typed as yaw/pitch/roll and one hand-made "
                                       "expression drive both the FLAME head's normals (pose ControlNet) and the "
                                       "Expression Adapter -> 4 images.",
                                       "yaw within +-60, pitch within +-30 degrees; jaw_open 0.1-0.4; strength and "
                                       "weight 1.0."),
    "arc2face_pose_photo_flame": Note("Identity from one photo, head pose from a reference photo the way the reference "
                                      "made its hints: SMIRK reads FLAME parameters, FLAME renders the whole head's "
                                      "normals -> 4 images.",
                                      "strength 1.0; the identity photo gives the head shape, the reference its pose, "
                                      "expression and framing (preview: the aligned reference)."),
    "arc2face_pose_expression_photo": Note("One reference photo drives both the head pose (FLAME normals, pose "
                                           "ControlNet) and the expression (Expression Adapter) -> 4 images.",
                                           "strength 1.0, weight 1.0; use a reference with a clear expression."),
    "arc2face_two_people": Note("Two people in one 1024x512 image: each identity's conditioning is masked to its half "
                                "(Conditioning Set Mask), then combined; one shared negative. 2 images.",
                                "Keep both masks the canvas size; the Sampler counts the combined masks as ONE image "
                                "with two regions. Try CFG 3.0, 25 steps; move the split with the Right half's x."),
}


def note_text(name: str, nodes: list[NodeSpec]) -> str:
    note = NOTES.get(name)
    if note is None:
        raise SystemExit(f"{name}: add a Note (what it does, settings to try first) to NOTES")
    files: list[str] = []
    for spec in nodes:
        if spec.type not in FILES_BY_NODE and "Loader" in spec.type:
            raise SystemExit(f"{name}: {spec.type} loads files: say which in FILES_BY_NODE")
        for line in FILES_BY_NODE.get(spec.type, lambda v: [])(spec.values):
            if line not in files:
                files.append(line)
    listed = "\n".join(f"- {line}" for line in files)
    return (f"WHAT IT DOES: {note.does}\n\nFILES IT NEEDS (under ComfyUI/models):\n{listed}\n{FILES_FOOTER}\n\n"
            f"TRY FIRST: {note.try_first}")


def build(name: str, object_info: dict) -> dict:
    """The UI workflow ``name``: its spec, its loaders' model metadata, a Note (what / files / try first) and the
    automatic tidy layout."""
    nodes, links = WORKFLOWS[name]()
    nodes = [spec for spec in nodes if spec.type not in VIRTUAL_NODES]
    for spec in nodes:   # ComfyUI's model metadata: the web UI offers the download of a missing file
        models = models_for(spec.type, spec.values)
        if models:
            spec.properties = dict(spec.properties, models=models)
    note_id = max(spec.id for spec in nodes) + 1
    nodes.append(NodeSpec(note_id, "Note", (0, 0), {"text": note_text(name, nodes)}, title="Read me"))
    return build_ui_workflow(nodes, links, object_info)


def main() -> None:
    object_info = json.loads((REPO / "tests" / "data" / "object_info.json").read_text())
    out_dir = REPO / "example_workflows"
    out_dir.mkdir(exist_ok=True)
    for name in WORKFLOWS:
        workflow = build(name, object_info)
        problems = check_ui_workflow(workflow, object_info, FILE_COMBOS) + layout_problems(workflow)
        if problems:
            raise SystemExit(f"{name}: " + "; ".join(problems))
        (out_dir / f"{name}.json").write_text(json.dumps(workflow, indent=1) + "\n")
        print(f"wrote example_workflows/{name}.json ({len(workflow['nodes'])} nodes, {len(workflow['links'])} links)")


if __name__ == "__main__":
    main()
