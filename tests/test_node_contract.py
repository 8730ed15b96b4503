"""The public node contract (docs/node_contract.md): ids, display names, socket types, widget order, outputs.

Shared workflows depend on these, so they are spelled out here as data. They are checked against the node classes
(imported without ComfyUI) and against tests/data/object_info.json, the definitions a real ComfyUI serves (the
integration test keeps that snapshot current).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SNAPSHOT = json.loads((REPO / "tests" / "data" / "object_info.json").read_text())

# id: (display name, [(required input, type)], [(output, type)])  — types: socket type, or the widget kind
CONTRACT = {
    "Arc2FaceArcFaceLoader": ("Arc2Face ArcFace Loader", [("provider", "COMBO"), ("det_size", "INT")],
                              [("arcface", "ARCFACE")]),
    "Arc2FaceArcFaceEmbed": ("ArcFace Embed", [("arcface", "ARCFACE"), ("image", "IMAGE"), ("face", "COMBO")],
                             [("embeds", "ARCFACE_EMBEDS"), ("faces", "IMAGE")]),
    "Arc2FaceModelLoader": ("Arc2Face Model Loader", [("weight_dtype", "COMBO")],
                            [("model", "MODEL"), ("encoder", "ARC2FACE_ENCODER")]),
    "Arc2FaceEncoder": ("Arc2Face Encoder", [("encoder", "ARC2FACE_ENCODER"), ("embeds", "ARCFACE_EMBEDS")],
                        [("positive", "CONDITIONING"), ("negative", "CONDITIONING")]),
    "Arc2FaceSampler": ("Arc2Face Sampler",
                        [("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                         ("seed", "INT"), ("steps", "INT"), ("cfg", "FLOAT"), ("sampler_name", "COMBO"),
                         ("scheduler", "COMBO"), ("width", "INT"), ("height", "INT"), ("images_per_id", "INT")],
                        [("latent", "LATENT")]),
    "Arc2FaceEmbeddingBlend": ("Embedding Blend", [("embeds_a", "ARCFACE_EMBEDS"), ("embeds_b", "ARCFACE_EMBEDS"),
                                                   ("weight", "FLOAT"), ("method", "COMBO")],
                               [("embeds", "ARCFACE_EMBEDS")]),
    "Arc2FaceEmbeddingAverage": ("Embedding Average", [("embeds", "ARCFACE_EMBEDS"), ("method", "COMBO")],
                                 [("embeds", "ARCFACE_EMBEDS")]),
    "Arc2FaceControlNetLoader": ("Arc2Face Pose ControlNet Loader", [], [("control_net", "CONTROL_NET")]),
    "Arc2FacePoseControlNet": ("Arc2Face Pose ControlNet",
                               [("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                                ("control_net", "CONTROL_NET"), ("normal_map", "IMAGE"), ("strength", "FLOAT"),
                                ("start_percent", "FLOAT"), ("end_percent", "FLOAT")],
                               [("positive", "CONDITIONING"), ("negative", "CONDITIONING")]),
    "Arc2FaceExpressionAdapterLoader": ("Arc2Face Expression Adapter Loader", [],
                                        [("adapter", "ARC2FACE_EXP_ADAPTER")]),
    "Arc2FaceExpressionAdapter": ("Arc2Face Expression Adapter",
                                  [("model", "MODEL"), ("adapter", "ARC2FACE_EXP_ADAPTER"),
                                   ("expression", "ARC2FACE_EXPRESSION"), ("weight", "FLOAT"), ("start_percent", "FLOAT"),
                                   ("end_percent", "FLOAT")],
                                  [("model", "MODEL")]),
    "Arc2FaceFaceParametersFromPhoto": ("Face Parameters from Photo (SMIRK)",
                                        [("arcface", "ARCFACE"), ("image", "IMAGE"), ("face", "COMBO"),
                                         ("channel_order", "COMBO")],
                                        [("params", "ARC2FACE_FACE_PARAMS"), ("expression", "ARC2FACE_EXPRESSION"),
                                         ("aligned", "IMAGE"), ("crops", "IMAGE")]),
    "Arc2FaceIdentitySimilarity": ("Identity Similarity",
                                   [("arcface", "ARCFACE"), ("images", "IMAGE"), ("embeds", "ARCFACE_EMBEDS"),
                                    ("images_per_id", "INT")],
                                   [("scores", "FLOAT"), ("report", "STRING")]),
    "Arc2FaceFilterByIdentity": ("Filter by Identity", [("images", "IMAGE"), ("scores", "FLOAT"),
                                                        ("threshold", "FLOAT")],
                                 [("images", "IMAGE")]),
    "Arc2FaceAlignFace": ("Face Align (FFHQ)", [("arcface", "ARCFACE"), ("image", "IMAGE"), ("face", "COMBO"),
                                                ("size", "INT")], [("aligned", "IMAGE")]),
    "Arc2FaceReferenceAdapterLoader": ("Arc2Face Reference Adapter Loader", [],
                                       [("ref_adapter", "ARC2FACE_REF_ADAPTER")]),
    "Arc2FaceReferenceAdapter": ("Arc2Face Reference Adapter",
                                 [("model", "MODEL"), ("ref_adapter", "ARC2FACE_REF_ADAPTER"), ("reference", "LATENT"),
                                  ("positive", "CONDITIONING"), ("strength", "FLOAT")],
                                 [("model", "MODEL")]),
    "Arc2FaceNormalMapFromAngles": ("Normal Map from Angles", [("yaw", "FLOAT"), ("pitch", "FLOAT"), ("roll", "FLOAT")],
                                    [("normal_map", "IMAGE")]),
    "Arc2FaceFLAMELoader": ("Arc2Face FLAME Loader", [], [("flame", "ARC2FACE_FLAME")]),
    "Arc2FaceNormalMapFromFLAME": ("Normal Map from FLAME", [("flame", "ARC2FACE_FLAME"),
                                                             ("pose_params", "ARC2FACE_FACE_PARAMS")],
                                   [("normal_map", "IMAGE")]),
}
DEFAULTS = {
    ("Arc2FaceArcFaceLoader", "det_size"): 640, ("Arc2FaceArcFaceLoader", "provider"): "auto",
    ("Arc2FaceArcFaceEmbed", "face"): "largest", ("Arc2FaceModelLoader", "weight_dtype"): "auto",
    ("Arc2FaceSampler", "steps"): 25, ("Arc2FaceSampler", "cfg"): 3.0, ("Arc2FaceSampler", "width"): 512,
    ("Arc2FaceSampler", "height"): 512, ("Arc2FaceSampler", "images_per_id"): 1,
    ("Arc2FaceSampler", "sampler_name"): "dpmpp_2m", ("Arc2FaceEmbeddingBlend", "weight"): 0.5,
    ("Arc2FacePoseControlNet", "strength"): 1.0, ("Arc2FacePoseControlNet", "start_percent"): 0.0,
    ("Arc2FacePoseControlNet", "end_percent"): 1.0, ("Arc2FaceExpressionAdapter", "weight"): 1.0,
    ("Arc2FaceExpressionAdapter", "start_percent"): 0.0, ("Arc2FaceExpressionAdapter", "end_percent"): 1.0,
    ("Arc2FaceIdentitySimilarity", "images_per_id"): 1,
    ("Arc2FaceAlignFace", "face"): "largest", ("Arc2FaceAlignFace", "size"): 512,
    ("Arc2FaceReferenceAdapter", "strength"): 0.8,
}
COMBO_START = {  # the options a combo must begin with, in this order
    ("Arc2FaceArcFaceLoader", "provider"): ["auto", "CPU", "CUDA"],
    ("Arc2FaceArcFaceEmbed", "face"): ["largest", "0", "1"],
    ("Arc2FaceModelLoader", "weight_dtype"): ["auto", "fp16", "bf16", "fp32"],
    ("Arc2FaceEmbeddingBlend", "method"): ["slerp", "linear"],
    ("Arc2FaceEmbeddingAverage", "method"): ["mean", "median"],
}
OPTIONAL = {"Arc2FaceSampler": [("latent_image", "LATENT"), ("denoise", "FLOAT")],
            "Arc2FaceNormalMapFromAngles": [("expression", "ARC2FACE_EXPRESSION"), ("flame", "ARC2FACE_FLAME")],
            "Arc2FaceNormalMapFromFLAME": [("identity_params", "ARC2FACE_FACE_PARAMS")]}



def _kind(spec) -> str:
    return "COMBO" if isinstance(spec[0], list) else spec[0]


def _class_info(cls) -> dict:
    """What ComfyUI's /object_info makes of a node class (JSON round trip turns tuples into lists)."""
    return json.loads(json.dumps({
        "input": cls.INPUT_TYPES(), "output": list(cls.RETURN_TYPES), "output_name": list(cls.RETURN_NAMES),
        "category": cls.CATEGORY, "description": cls.DESCRIPTION, "output_tooltips": list(cls.OUTPUT_TOOLTIPS)}))


@pytest.mark.parametrize("node_id", sorted(CONTRACT))
def test_snapshot_matches_the_contract(node_id):
    display, required, outputs = CONTRACT[node_id]
    info = SNAPSHOT[node_id]
    assert info["display_name"] == display and info["category"] == "Arc2Face"
    assert info["input_order"].get("required", []) == [name for name, _ in required]
    assert [(n, _kind(info["input"]["required"][n])) for n in info["input_order"].get("required", [])] == required
    assert list(zip(info["output_name"], info["output"])) == outputs
    optional = info["input"].get("optional", {})
    for name, kind in OPTIONAL.get(node_id, []):
        assert _kind(optional[name]) == kind
    listed = [name for name, _ in OPTIONAL.get(node_id, [])]
    order = info["input_order"].get("optional", [])
    assert [name for name in order if name in listed] == listed        # new inputs go after these, never between
    for (nid, name), default in DEFAULTS.items():
        if nid == node_id:
            assert info["input"]["required"][name][1]["default"] == default
    for (nid, name), start in COMBO_START.items():
        if nid == node_id:
            assert info["input"]["required"][name][0][: len(start)] == start


def test_sampler_defaults_to_the_papers_solver(pack):
    """In the snapshot (a real server's definitions) and in the code itself, read without ComfyUI."""
    import importlib

    scheduler = SNAPSHOT["Arc2FaceSampler"]["input"]["required"]["scheduler"]
    assert scheduler[1]["default"] == "sgm_uniform" and "sgm_uniform" in scheduler[0]   # the reference's sigmas
    sampling = importlib.import_module(pack.__name__ + ".sampling")
    snapshot = SNAPSHOT["Arc2FaceSampler"]["input"]["required"]
    required = sampling.sampler_inputs(snapshot["sampler_name"][0], snapshot["scheduler"][0])["required"]
    assert required["scheduler"][1]["default"] == "sgm_uniform"
    assert required["sampler_name"][1]["default"] == "dpmpp_2m"


def _declared(spec) -> tuple:
    """(kind, default, min, max) of an input as a class declares it or as /object_info serves it."""
    kind = spec[0]
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    kind = list(kind) if isinstance(kind, (list, tuple)) else kind
    return kind, options.get("default"), options.get("min"), options.get("max")


def test_the_snapshot_matches_what_the_code_declares(pack):
    """Every input the classes declare (read without ComfyUI; the Sampler with the snapshot's own choice lists) has the
    snapshot's kind, default and range: a default changed in the code alone would otherwise pass offline."""
    import importlib

    sampling = importlib.import_module(pack.__name__ + ".sampling")
    compared = 0
    for node_id, cls in pack.NODE_CLASS_MAPPINGS.items():
        if node_id == "Arc2FaceSampler":
            snapshot = SNAPSHOT[node_id]["input"]["required"]
            types = sampling.sampler_inputs(snapshot["sampler_name"][0], snapshot["scheduler"][0])
        else:
            try:
                types = cls.INPUT_TYPES()
            except ModuleNotFoundError as err:      # a list read from ComfyUI's folders: the live test covers it
                assert err.name.startswith("comfy") or err.name == "folder_paths", err
                continue
        for section in ("required", "optional"):
            served = SNAPSHOT[node_id]["input"].get(section, {})
            assert list(types.get(section, {})) == SNAPSHOT[node_id]["input_order"].get(section, []), (node_id, section)
            for name, spec in types.get(section, {}).items():
                assert _declared(spec) == _declared(served[name]), (node_id, name)
                compared += 1
    assert compared > 80


def test_every_input_has_a_tooltip_and_every_node_a_description():
    for node_id, info in SNAPSHOT.items():
        if info["category"] != "Arc2Face":
            continue
        assert len(info["description"]) > 40, node_id
        assert len(info["output_tooltips"]) == len(info["output"]), node_id
        for section_name, section in info["input"].items():
            if section_name == "hidden":   # filled by ComfyUI (the prompt...), never shown: no tooltip to give
                continue
            for name, spec in section.items():
                assert spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"


def test_registered_classes(pack):
    ids = set(pack.NODE_CLASS_MAPPINGS)
    assert set(CONTRACT) <= ids
    assert ids == {k for k, v in SNAPSHOT.items() if v["category"] == "Arc2Face"}
    assert set(pack.NODE_DISPLAY_NAME_MAPPINGS) == ids
    for node_id, cls in pack.NODE_CLASS_MAPPINGS.items():
        assert SNAPSHOT[node_id]["display_name"] == pack.NODE_DISPLAY_NAME_MAPPINGS[node_id]
        assert callable(getattr(cls, cls.FUNCTION))


def test_classes_equal_the_snapshot(pack):
    """Node classes whose definitions need no ComfyUI import are compared field by field with the snapshot."""
    checked = []
    for node_id, cls in pack.NODE_CLASS_MAPPINGS.items():
        try:
            info = _class_info(cls)
        except ModuleNotFoundError as err:   # the sampler lists ComfyUI's samplers, Load Embeddings its folders
            assert err.name.startswith("comfy") or err.name == "folder_paths", err
            continue
        snap = SNAPSHOT[node_id]
        for key, value in info.items():
            assert snap[key] == value, f"{node_id}.{key} differs from tests/data/object_info.json"
        checked.append(node_id)
    assert len(checked) >= len(pack.NODE_CLASS_MAPPINGS) - 2


def test_importing_the_nodes_loads_no_heavy_engine_module(pack):
    """Registration is cheap: insightface/onnxruntime/diffusers load only when a node runs."""
    heavy = {"insightface", "diffusers", "onnx", "onnxruntime", "cv2", "transformers", "safetensors"}
    code = ("import importlib.machinery, importlib.util, sys\n"
            f"spec = importlib.machinery.ModuleSpec('p', None, is_package=True)\n"
            "pkg = importlib.util.module_from_spec(spec); pkg.__path__ = [sys.argv[1]]; sys.modules['p'] = pkg\n"
            "import p.nodes\n"
            f"print(sorted(m for m in {sorted(heavy)!r} if m in sys.modules))")
    import subprocess

    out = subprocess.run([sys.executable, "-c", code, str(REPO)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_the_identity_check_gives_and_takes_whole_lists(pack):
    """Identity Similarity's scores are a list output (one FLOAT per image); Filter by Identity takes its inputs as
    whole lists, so it runs once per batch, and its scores input is a socket, not a widget."""
    similarity = pack.NODE_CLASS_MAPPINGS["Arc2FaceIdentitySimilarity"]
    flt = pack.NODE_CLASS_MAPPINGS["Arc2FaceFilterByIdentity"]
    assert similarity.OUTPUT_IS_LIST == (True, False) and getattr(flt, "INPUT_IS_LIST", False) is True
    assert SNAPSHOT["Arc2FaceFilterByIdentity"]["input"]["required"]["scores"][1]["forceInput"] is True
    assert SNAPSHOT["Arc2FaceFilterByIdentity"]["input"]["required"]["threshold"][1]["min"] == -1.0
