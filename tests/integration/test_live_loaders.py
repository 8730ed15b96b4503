"""Every file-reading node against missing and damaged files, and the model folders a user adds, in a real ComfyUI.

The session's models folder is shared by every real-server test, so nothing here touches it. This module starts a
second, short-lived server on the same install with ComfyUI's own options for another install view:
``--base-directory`` (a temporary folder for models/, custom_nodes/, input/ and output/),
``--extra-model-paths-config`` (a user's ``extra_model_paths.yaml`` adding their own ``arc2face:`` and
``insightface:`` folders) and ``--cache-none`` (every prompt runs its loaders again, so a file changed between two
prompts is read again). Files are copied or linked from the session install into that folder; damaged ones are new
files, never writes through a link.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from comfyui_client import error_of
from fixtures_comfyui import link_pack, start_server, stop_server, write_inputs

HF = "https://huggingface.co/FoivosPar/Arc2Face"
ANTELOPEV2 = "https://github.com/deepinsight/insightface/tree/master/python-package#model-zoo"
DETECTOR = "models/antelopev2/scrfd_10g_bnkps.onnx"
LANDMARKS = "models/antelopev2/1k3d68.onnx"


class View:
    """The second server and its folders: ``default`` = <base>/models, ``user`` = the yaml's extra folders."""

    def __init__(self, client, base: Path, source: Path):
        self.client, self.base, self.source = client, base, source
        self.default = base / "models"
        self.user = base / "user_models"

    def folders(self, name: str) -> list[Path]:
        """The folders ComfyUI should search for ``name``: the user's first (their yaml), then the default."""
        return [self.user / name, self.default / name]

    def put(self, rel: str, where: str = "default", *, link: bool = False) -> Path:
        """Copy (or link, for the full-size models) ``<session models>/rel`` into this view."""
        target = (self.default if where == "default" else self.user) / rel
        _remove(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        if link:
            target.symlink_to(self.source / rel)
        else:
            shutil.copyfile(self.source / rel, target)
        return target

    def damage(self, rel: str, where: str = "default", keep_bytes: int = 4096) -> Path:
        """A new file holding the first ``keep_bytes`` of the real one, like an interrupted download."""
        target = (self.default if where == "default" else self.user) / rel
        _remove(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(self.source / rel, "rb") as real:
            target.write_bytes(real.read(keep_bytes))
        return target

    def clear(self) -> None:
        for folder in (self.default, self.user):
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)

    def error(self, prompt: dict) -> str:
        """"<exception class>: <message>" of a prompt that must fail (the class without its module path, which
        ComfyUI spells from the custom_nodes folder)."""
        entry = self.client.run(prompt)
        assert entry["status"]["status_str"] == "error", f"expected an error, the prompt succeeded: {prompt}"
        kind, _, message = error_of(entry).partition(": ")
        return f"{kind.rsplit('.', 1)[-1]}: {message}"

    def ok(self, prompt: dict) -> dict:
        entry = self.client.run(prompt)
        assert entry["status"]["status_str"] == "success", error_of(entry)
        return entry


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()


@pytest.fixture(scope="module")
def view(comfy_install, tmp_path_factory):
    base = tmp_path_factory.mktemp("second_install")
    (base / "custom_nodes").mkdir()
    link_pack(base / "custom_nodes")
    write_inputs(base / "input")
    yaml = base / "extra_model_paths.yaml"
    yaml.write_text(f"my_models:\n    arc2face: {base / 'user_models' / 'arc2face'}\n"
                    f"    insightface: {base / 'user_models' / 'insightface'}\n")
    process, client = start_server(comfy_install, base / "server.log", (
        "--base-directory", str(base), "--extra-model-paths-config", str(yaml), "--cache-none"))
    try:
        v = View(client, base, comfy_install / "ComfyUI" / "models")
        v.clear()
        yield v
    finally:
        stop_server(process)


@pytest.fixture
def fresh(view):
    view.clear()
    return view


# ------------------------------------------------------------------------------------------------- prompts

def shown(node: str, output: int = 0, inputs: dict | None = None, extra: dict | None = None) -> dict:
    """One node, its output shown by PreviewAny (an output node, so the node runs)."""
    prompt = {"1": {"class_type": node, "inputs": inputs or {}},
              "9": {"class_type": "PreviewAny", "inputs": {"source": ["1", output]}}}
    prompt.update(extra or {})
    return prompt


ARCFACE_LOADER = shown("Arc2FaceArcFaceLoader", inputs={"provider": "auto", "det_size": 640})
MODEL_LOADER = shown("Arc2FaceModelLoader", 1, {"weight_dtype": "fp16"})
CONTROLNET_LOADER = shown("Arc2FaceControlNetLoader")
ADAPTER_LOADER = shown("Arc2FaceExpressionAdapterLoader")


def from_photo(node: str, widgets: dict) -> dict:
    return shown(node, 0, {"arcface": ["2", 0], "image": ["3", 0], "face": "largest", **widgets}, {
        "2": {"class_type": "Arc2FaceArcFaceLoader", "inputs": {"provider": "auto", "det_size": 640}},
        "3": {"class_type": "LoadImage", "inputs": {"image": "arc2face_face.png"}}})


SMIRK_NODE = from_photo("Arc2FaceExpressionFromImage", {"channel_order": "bgr (Arc2Face demo)"})
LANDMARK_NODE = from_photo("Arc2FaceNormalMapFromPhoto", {"shape": "mean face"})


def folders_in_order(message: str, folders: list[Path]) -> bool:
    """Every folder (or file) is listed in the message, one "- <path>" line each, in this order."""
    positions = [message.find(f"- {folder}\n") for folder in folders]
    return all(p >= 0 for p in positions) and positions == sorted(positions)


# ------------------------------------------------------------------------------------------ missing files

@pytest.mark.parametrize("prompt, title, rel, source", [
    (CONTROLNET_LOADER, "Arc2Face pose ControlNet", "controlnet/diffusion_pytorch_model.safetensors", HF),
    (ADAPTER_LOADER, "Arc2Face Expression Adapter", "exp_adapter/exp_adapter.bin", HF),
    (MODEL_LOADER, "Arc2Face UNet", "arc2face/diffusion_pytorch_model.safetensors", HF),
], ids=["controlnet", "expression-adapter", "unet"])
def test_a_missing_arc2face_file_names_it_every_folder_searched_and_the_source(fresh, prompt, title, rel, source):
    error = fresh.error(prompt)
    assert error.startswith("WeightsNotFoundError: "), error
    assert f"{title} not found: looked for {rel} in the 'arc2face' model folder(s):" in error, error
    # the user's folder from extra_model_paths.yaml is kept and searched first, then <models>/arc2face
    assert folders_in_order(error, fresh.folders("arc2face")), error
    assert source in error and "download switch" in error, error


def test_a_missing_encoder_is_named_when_the_unet_is_there(fresh):
    fresh.put("arc2face/arc2face/diffusion_pytorch_model.safetensors", link=True)
    error = fresh.error(MODEL_LOADER)
    assert error.startswith("WeightsNotFoundError: Arc2Face ID encoder not found: looked for "
                            "encoder/model.safetensors or encoder/pytorch_model.bin"), error
    assert folders_in_order(error, fresh.folders("arc2face")) and HF in error, error


def test_a_missing_detector_or_recogniser_is_named(fresh):
    error = fresh.error(ARCFACE_LOADER)
    assert error.startswith("WeightsNotFoundError: insightface antelopev2 face detector (scrfd_10g_bnkps.onnx) not "
                            f"found: looked for {DETECTOR} in the 'insightface' model folder(s):"), error
    assert folders_in_order(error, fresh.folders("insightface")) and ANTELOPEV2 in error, error

    fresh.put(f"insightface/{DETECTOR}", "user")
    error = fresh.error(ARCFACE_LOADER)
    assert error.startswith("WeightsNotFoundError: Arc2Face ArcFace recogniser (arcface.onnx) not found."), error
    where = [f / "arcface.onnx" for f in fresh.folders("arc2face")] + \
            [f / "models/antelopev2/arcface.onnx" for f in fresh.folders("insightface")]
    assert folders_in_order(error, where) and HF in error, error


def test_missing_smirk_and_landmark_models_are_named(fresh):
    fresh.put(f"insightface/{DETECTOR}")
    fresh.put("arc2face/arcface.onnx")
    error = fresh.error(SMIRK_NODE)
    assert error.startswith("WeightsNotFoundError: SMIRK expression encoder (SMIRK_em1.pt) not found: looked for "
                            "smirk/SMIRK_em1.pt"), error
    assert folders_in_order(error, fresh.folders("arc2face")) and "github.com/georgeretsi/smirk" in error, error

    error = fresh.error(LANDMARK_NODE)
    assert error.startswith("WeightsNotFoundError: insightface antelopev2 3D landmark model (1k3d68.onnx) not found: "
                            f"looked for {LANDMARKS}"), error
    assert folders_in_order(error, fresh.folders("insightface")) and ANTELOPEV2 in error, error


# ------------------------------------------------------------------------------------------ damaged files

def test_damaged_onnx_files_are_named(fresh):
    fresh.put(f"insightface/{DETECTOR}")
    damaged = fresh.damage("arc2face/arcface.onnx", "user")
    error = fresh.error(ARCFACE_LOADER)
    assert error.startswith(f"CorruptWeightsError: {damaged} is not a readable ONNX model; it is probably truncated "
                            "or corrupt. Delete it and download it again."), error

    fresh.put("arc2face/arcface.onnx", "user")   # the damaged one replaced
    damaged = fresh.damage(f"insightface/{LANDMARKS}")
    error = fresh.error(LANDMARK_NODE)
    assert error.startswith(f"CorruptWeightsError: {damaged} is not a readable ONNX model"), error


def test_damaged_adapter_and_smirk_files_are_named(fresh):
    damaged = fresh.damage("arc2face/exp_adapter/exp_adapter.bin")
    error = fresh.error(ADAPTER_LOADER)
    assert error.startswith(f"CorruptWeightsError: {damaged} could not be read as a PyTorch checkpoint"), error
    assert f"it is probably truncated or corrupt. Delete {damaged} and download it again from {HF}." in error, error

    fresh.put(f"insightface/{DETECTOR}")
    fresh.put(f"insightface/{LANDMARKS}")
    fresh.put("arc2face/arcface.onnx")
    damaged = fresh.damage("arc2face/smirk/SMIRK_em1.pt")
    error = fresh.error(SMIRK_NODE)
    assert error.startswith(f"CorruptWeightsError: {damaged} could not be read as a PyTorch checkpoint"), error
    assert f"truncated or corrupt. Delete {damaged} and download it again from https://github.com/georgeretsi/smirk" \
        in error, error


def test_a_kohya_lora_given_as_the_reference_adapter_is_named_as_such(fresh):
    """SD1.5's LCM-LoRA in kohya's layout (the session's models/loras file) saved under the Reference Adapter's name:
    it used to be refused as "DoRA magnitudes, LoRA biases ... not supported"."""
    target = fresh.default / "arc2face/ref_adapter/pytorch_lora_weights.safetensors"
    target.parent.mkdir(parents=True)
    shutil.copyfile(fresh.source / "loras" / "lcm-lora-sdv1-5.safetensors", target)
    error = fresh.error(shown("Arc2FaceReferenceAdapterLoader"))
    assert re.match(rf"WrongModelError: {re.escape(str(target))}: this is a kohya-style LoRA \(\d+ keys like "
                    r"'lora_unet_", error), error
    assert ("published only in diffusers' layout (ref_adapter/pytorch_lora_weights.safetensors in "
            "huggingface.co/FoivosPar/Arc2Face), never as a kohya file") in error and "DoRA" not in error, error


@pytest.mark.parametrize("prompt, rel", [
    (CONTROLNET_LOADER, "arc2face/controlnet/diffusion_pytorch_model.safetensors"),
    (MODEL_LOADER, "arc2face/arc2face/diffusion_pytorch_model.safetensors"),
], ids=["controlnet", "unet"])
def test_damaged_safetensors_are_named_with_where_to_get_them(fresh, prompt, rel):
    fresh.put("arc2face/encoder/config.json")
    fresh.put("arc2face/encoder/pytorch_model.bin")
    damaged = fresh.damage(rel, keep_bytes=1 << 20)   # the header and the start of the tensors
    error = fresh.error(prompt)
    assert error.startswith(f"CorruptWeightsError: {damaged} is not a readable safetensors file ("), error
    assert f"it is probably truncated or corrupt. Delete {damaged} and download it again from {HF}." in error, error


def test_a_damaged_encoder_is_named(fresh):
    fresh.put("arc2face/arc2face/diffusion_pytorch_model.safetensors", link=True)
    fresh.put("arc2face/encoder/config.json")
    damaged = fresh.damage("arc2face/encoder/pytorch_model.bin")
    error = fresh.error(MODEL_LOADER)
    assert error.startswith(f"CorruptWeightsError: {damaged} could not be read as a PyTorch checkpoint"), error
    assert f"Delete {damaged} and download it again from {HF}." in error, error


# --------------------------------------------------------------------------- extra_model_paths.yaml folders

def test_the_users_folder_is_searched_before_the_default_one(fresh):
    """A good adapter in the user's folder and a damaged one in <models>/arc2face: the user's is loaded. Swapped,
    the damaged one is found first and named (so the order really decides)."""
    fresh.put("arc2face/exp_adapter/exp_adapter.bin", "user")
    fresh.damage("arc2face/exp_adapter/exp_adapter.bin", "default")
    entry = fresh.ok(ADAPTER_LOADER)
    assert "ModelPatcher" in " ".join(entry["outputs"]["9"]["text"]), entry["outputs"]

    fresh.damage("arc2face/exp_adapter/exp_adapter.bin", "user")
    fresh.put("arc2face/exp_adapter/exp_adapter.bin", "default")
    error = fresh.error(ADAPTER_LOADER)
    assert re.match(rf"CorruptWeightsError: {re.escape(str(fresh.user))}/arc2face/exp_adapter/exp_adapter\.bin ",
                    error), error


def test_files_in_the_users_folders_only_are_enough(fresh):
    """Everything of the face path in the yaml's folders, nothing under <models>: the loader and a node that reads
    a photo work."""
    for rel in (f"insightface/{DETECTOR}", f"insightface/{LANDMARKS}", "arc2face/arcface.onnx",
                "arc2face/smirk/SMIRK_em1.pt"):
        fresh.put(rel, "user")
    entry = fresh.ok(SMIRK_NODE)
    assert entry["outputs"]["9"]["text"], entry["outputs"]


def test_every_file_loader_runs_again_when_its_files_change(comfy_install, tmp_path):
    """A file added, rewritten or deleted changes the loader's IS_CHANGED value; nothing changed keeps it (ComfyUI then
    reuses the loaded model)."""
    from fixtures_comfyui import run_in_comfyui

    checks = Path(__file__).resolve().parents[1] / "comfyui_checks"
    report = run_in_comfyui(comfy_install, checks / "loader_files.py", str(tmp_path))
    assert report == {node: [True, True, False, True] for node in (
        "Arc2FaceFLAMELoader", "Arc2FaceControlNetLoader", "Arc2FaceExpressionAdapterLoader",
        "Arc2FaceReferenceAdapterLoader", "Arc2FaceModelLoader", "Arc2FaceArcFaceLoader")}, report
