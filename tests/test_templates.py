"""The shipped workflows as ComfyUI templates: the folder ComfyUI looks in first, a thumbnail each, and the model
metadata (``properties.models``) of every loader node, checked against the README's model table.

The live side (ComfyUI's own listing, the web UI's missing-models list) is tests/integration/test_live_frontends.py.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
FOLDER = REPO / "example_workflows"
SHIPPED = sorted(p.stem for p in FOLDER.glob("*.json"))
SNAPSHOT = json.loads((REPO / "tests" / "data" / "object_info.json").read_text())
# The folder names ComfyUI 0.3.64 serves templates from (app/custom_node_manager.py); all but the first log
# "consider renaming it to 'example_workflows'".
OTHER_TEMPLATE_FOLDERS = ("example", "examples", "workflow", "workflows")

# The README's model table and tree, by hand: the Arc2Face files come from huggingface.co/FoivosPar/Arc2Face in the
# same layout under models/arc2face; SD1.5's VAE is vae/diffusion_pytorch_model.safetensors of
# stable-diffusion-v1-5/stable-diffusion-v1-5 saved as models/vae/sd15_vae.safetensors; the LCM-LoRA is
# latent-consistency/lcm-lora-sdv1-5 saved as models/loras/lcm-lora-sdv1-5.safetensors. Files without one public
# URL of their own (the antelopev2 detector and landmarks: a zip; SMIRK; FLAME) carry no entry.
ARC = "https://huggingface.co/FoivosPar/Arc2Face/resolve/main/"
EXPECTED = {
    "Arc2FaceModelLoader": [
        ("arc2face/config.json", ARC + "arc2face/config.json", "arc2face"),
        ("arc2face/diffusion_pytorch_model.safetensors", ARC + "arc2face/diffusion_pytorch_model.safetensors",
         "arc2face"),
        ("encoder/config.json", ARC + "encoder/config.json", "arc2face"),
        ("encoder/pytorch_model.bin", ARC + "encoder/pytorch_model.bin", "arc2face")],
    "Arc2FaceArcFaceLoader": [("arcface.onnx", ARC + "arcface.onnx", "arc2face")],
    "Arc2FaceControlNetLoader": [
        ("controlnet/config.json", ARC + "controlnet/config.json", "arc2face"),
        ("controlnet/diffusion_pytorch_model.safetensors", ARC + "controlnet/diffusion_pytorch_model.safetensors",
         "arc2face")],
    "Arc2FaceExpressionAdapterLoader": [("exp_adapter/exp_adapter.bin", ARC + "exp_adapter/exp_adapter.bin",
                                         "arc2face")],
    "Arc2FaceReferenceAdapterLoader": [
        ("ref_adapter/pytorch_lora_weights.safetensors", ARC + "ref_adapter/pytorch_lora_weights.safetensors",
         "arc2face")],
    "VAELoader": [("sd15_vae.safetensors", "https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5/"
                   "resolve/main/vae/diffusion_pytorch_model.safetensors", "vae")],
    "LoraLoaderModelOnly": [("lcm-lora-sdv1-5.safetensors", "https://huggingface.co/latent-consistency/"
                             "lcm-lora-sdv1-5/resolve/main/pytorch_lora_weights.safetensors", "loras")],
}
NO_PUBLIC_URL = {"Arc2FaceFLAMELoader"}


def load(name: str) -> dict:
    return json.loads((FOLDER / f"{name}.json").read_text())


def module(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_templates_are_where_comfyui_looks_first():
    assert SHIPPED and not any((REPO / name).exists() for name in OTHER_TEMPLATE_FOLDERS)
    assert {p.suffix for p in FOLDER.iterdir()} == {".json", ".jpg"}


@pytest.mark.parametrize("name", SHIPPED)
def test_every_loader_carries_the_model_metadata_of_the_readme(name):
    found = 0
    for node in load(name)["nodes"]:
        models = node.get("properties", {}).get("models")
        if node["type"] in EXPECTED:
            assert [(m["name"], m["url"], m["directory"]) for m in models] == EXPECTED[node["type"]], node["type"]
            assert all(set(m) == {"name", "url", "directory"} for m in models)
            found += 1
        else:
            assert models is None, f"{node['type']} carries models it does not load"
            assert "Loader" not in node["type"] or node["type"] in NO_PUBLIC_URL, node["type"]
    assert found >= 3   # every workflow loads the model, the face analysis and the VAE


def test_the_metadata_matches_the_readme_layout():
    """Each file's folder and name are the README tree's path; each source is a repo the README's table names."""
    readme = (REPO / "README.md").read_text()
    for entries in EXPECTED.values():
        for name, url, directory in entries:
            assert f"{directory}/{name}".split("/")[-1] in readme, name
            repo = "/".join(url.removeprefix("https://huggingface.co/").split("/")[:2])
            assert f"huggingface.co/{repo}" in readme, repo
    tree = readme.split("ComfyUI/models/", 1)[1].split("```", 1)[0]
    assert "vae/sd15_vae.safetensors" in tree and "arc2face/diffusion_pytorch_model.safetensors" in tree


def test_a_loader_without_an_entry_stops_the_generator(monkeypatch):
    models = module("workflow_models")
    with pytest.raises(SystemExit, match="NewLoader loads files"):
        models.models_for("NewLoader", {})
    assert models.models_for("VAELoader", {"vae_name": "other.safetensors"}) == []   # only the file it names
    assert models.models_for("KSampler", {}) == []


@pytest.mark.parametrize("name", SHIPPED)
def test_every_template_has_its_thumbnail_drawn_from_its_current_graph(name):
    """A same-name JPEG (the template browser asks for <name>.jpg), drawn from this very workflow file."""
    thumbnails = module("build_thumbnails")
    path = FOLDER / f"{name}.jpg"
    with Image.open(path) as image:
        assert image.format == "JPEG" and image.size == (thumbnails.SIZE, thumbnails.SIZE)
        comment = image.info["comment"].decode()
        committed = np.asarray(image.convert("RGB"), dtype=np.int16)
    digest = thumbnails.workflow_digest(FOLDER / f"{name}.json")
    assert comment == f"{thumbnails.COMMENT_PREFIX}{name}.json sha256={digest}", "run scripts/build_thumbnails.py"
    fresh = thumbnails.draw_thumbnail(name, load(name), SNAPSHOT)
    # JPEG and font rendering differ a little between library versions; a changed drawing differs a lot
    assert np.abs(np.asarray(fresh, dtype=np.int16) - committed).mean() < 3.0


def test_the_thumbnail_shows_the_graph_not_an_output():
    """The picture is the graph: a panel with one box per node in its role's colour, and the 'node graph' label."""
    thumbnails = module("build_thumbnails")
    workflow = load("arc2face_basic")
    image = np.asarray(thumbnails.draw_thumbnail("arc2face_basic", workflow, SNAPSHOT))
    panel = image[thumbnails.MARGIN:thumbnails.GRAPH_BOTTOM]
    for role, colour in thumbnails.ROLE_COLOURS.items():
        has_role = any(thumbnails.role(n["type"]) == role for n in workflow["nodes"] if n["type"] != "Note")
        present = bool((np.abs(panel.astype(int) - colour).sum(axis=-1) == 0).any())
        assert present == has_role, role
