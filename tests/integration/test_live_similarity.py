"""The identity check and identities as files in a real ComfyUI: Identity Similarity, Filter by Identity, Save and
Load Embeddings, the identity-check workflow, and the dataset noise against the stock KSampler's.

Expected scores are computed here, outside the server, with the hand-written reference path of test_faces
(skimage alignment, the install's arcface.onnx run by onnxruntime, L2 norm) on the same photos.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_faces import reference_embedding

from arc2face_core.identity.files import load_embeddings, read_metadata
from builders.onnx_faces import astronaut_face
from comfyui_client import FAST, tag
from fixtures_comfyui import run_in_comfyui

CHECKS = Path(__file__).resolve().parents[1] / "comfyui_checks"
REPO = Path(__file__).resolve().parents[2]


def photo(comfy, name: str) -> np.ndarray:
    return np.asarray(Image.open(comfy.root / "input" / name).convert("RGB"))


def reference(comfy, name: str) -> torch.Tensor:
    embedding, _ = reference_embedding(photo(comfy, name), astronaut_face().kps_array(),
                                       comfy.root / "models" / "arc2face" / "arcface.onnx")
    return torch.from_numpy(embedding)


def texts(entry: dict, node_id: str) -> list[str]:
    return entry["outputs"][node_id]["text"]


def scoring_prompt(images: list[str], embed_images: list[str], images_per_id: int, threshold: float,
                   prefix: str) -> dict:
    """Photos as one batch -> Identity Similarity against the embeddings of other photos -> Filter -> Save Image;
    the report and the scores into Preview Any nodes."""
    prompt = {"1": {"class_type": "Arc2FaceArcFaceLoader", "inputs": {"provider": "auto", "det_size": 640}}}

    def batch(names: list[str], first_id: int) -> list:
        ids = []
        for offset, name in enumerate(names):
            prompt[str(first_id + offset)] = {"class_type": "LoadImage", "inputs": {"image": name}}
            ids.append(str(first_id + offset))
        source = [ids[0], 0]
        for index, node in enumerate(ids[1:]):
            key = str(first_id + 50 + index)
            prompt[key] = {"class_type": "ImageBatch", "inputs": {"image1": source, "image2": [node, 0]}}
            source = [key, 0]
        return source

    images_out, embed_out = batch(images, 100), batch(embed_images, 200)
    prompt.update({
        "2": {"class_type": "Arc2FaceArcFaceEmbed", "inputs": {"arcface": ["1", 0], "image": embed_out,
                                                              "face": "largest"}},
        "3": {"class_type": "Arc2FaceIdentitySimilarity", "inputs": {
            "arcface": ["1", 0], "images": images_out, "embeds": ["2", 0], "images_per_id": images_per_id}},
        "4": {"class_type": "PreviewAny", "inputs": {"source": ["3", 1]}},
        "5": {"class_type": "PreviewAny", "inputs": {"source": ["3", 0]}},
        "6": {"class_type": "Arc2FaceFilterByIdentity", "inputs": {"images": images_out, "scores": ["3", 0],
                                                                   "threshold": threshold}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": f"arc2face_test/{prefix}"}},
    })
    return prompt


def test_similarity_and_filter_with_an_image_without_a_face(comfy):
    t = tag()
    entry = comfy.run_ok(scoring_prompt(["arc2face_face.png", "arc2face_person_2.png", "arc2face_black.png"],
                                        ["arc2face_face.png"], 1, 0.99, f"s_{t}"))
    own = reference(comfy, "arc2face_face.png")
    expected = [1.0, float(reference(comfy, "arc2face_person_2.png") @ own), -1.0]
    scores = [float(text) for text in texts(entry, "5")]          # a list output: one Preview Any run per score
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    assert 0.3 < expected[1] < 0.99                                # a real score, filtered out at 0.99
    report = texts(entry, "4")[0]
    assert "image 3, identity 1: no face found (-1.0)" in report and "No face found in 1 image: 3" in report
    saved = comfy.saved_images(entry, "7")
    assert len(saved) == 1                                         # only the photo itself passes 0.99
    assert np.array_equal(np.asarray(Image.open(saved[0])), photo(comfy, "arc2face_face.png"))
    # None passing: Save Image is skipped (it would fail on an empty batch) and the prompt still succeeds.
    entry = comfy.run_ok(scoring_prompt(["arc2face_person_2.png", "arc2face_black.png"], ["arc2face_face.png"], 1,
                                        0.99, f"z_{t}"))
    assert comfy.saved_images(entry, "7") == [] and len(texts(entry, "5")) == 2


def test_threshold_one_keeps_a_photo_scored_against_its_own_identity(comfy):
    """The photo's own identity, saved where float rounding differs (another device, another tool): its cosine is
    1 - 5e-7 (float32 ULPs), not 1.0. Threshold 1.0 used to drop the photo."""
    from arc2face_core.identity.files import save_embeddings

    own = reference(comfy, "arc2face_face.png").double()
    across = torch.randn(512, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    across -= (across @ own) * own                                  # perpendicular to own
    rounded = own + 1e-3 * across / across.norm()
    rounded = (rounded / rounded.norm()).float()
    assert 1 - 1e-6 < float(rounded.double() @ own) < 1 - 1e-7
    name = f"arc2face_test_rounded_{tag()}.safetensors"
    save_embeddings(comfy.root / "input" / name, rounded[None])
    prompt = scoring_prompt(["arc2face_face.png"], ["arc2face_face.png"], 1, 1.0, f"one_{tag()}")
    prompt["2"] = {"class_type": "Arc2FaceLoadEmbeddings", "inputs": {"embeddings": name}}
    entry = comfy.run_ok(prompt)
    (saved,) = comfy.saved_images(entry, "7")
    assert np.array_equal(np.asarray(Image.open(saved)), photo(comfy, "arc2face_face.png"))


def test_images_pair_with_their_identities(comfy):
    t = tag()
    entry = comfy.run_ok(scoring_prompt(
        ["arc2face_face.png", "arc2face_face.png", "arc2face_person_b.png", "arc2face_black.png"],
        ["arc2face_face.png", "arc2face_person_b.png"], 2, -1.0, f"p_{t}"))
    scores = [float(text) for text in texts(entry, "5")]
    np.testing.assert_allclose(scores, [1.0, 1.0, 1.0, -1.0], atol=1e-5)   # each photo against its own identity
    assert len(comfy.saved_images(entry, "7")) == 4                        # threshold -1: the face-less one too
    wrong = scoring_prompt(["arc2face_face.png", "arc2face_face.png", "arc2face_person_b.png"],
                           ["arc2face_face.png", "arc2face_person_b.png"], 1, 0.5, f"w_{t}")
    error = comfy.run_error(wrong)
    assert "InvalidInputError" in error and "3 images cannot be paired with 2 identities" in error


def test_a_nan_threshold_is_refused(comfy):
    prompt = scoring_prompt(["arc2face_face.png"], ["arc2face_face.png"], 1, math.nan, f"n_{tag()}")
    error = comfy.run_error(prompt)
    assert "Filter by Identity: threshold must be a finite number from -1.0 to 1.0, got nan" in error


def _save_prompt(source: dict, prefix: str) -> dict:
    prompt = dict(source)
    prompt["90"] = {"class_type": "Arc2FaceSaveEmbeddings", "inputs": {"embeds": ["2", 0],
                                                                      "filename_prefix": f"arc2face_test/{prefix}"}}
    return prompt


def _saved_file(comfy, entry: dict, node_id: str = "90") -> Path:
    (item,) = entry["outputs"][node_id]["embeddings"]
    assert item["type"] == "output"
    return comfy.root / "output" / item["subfolder"] / item["filename"]


def test_save_and_load_embeddings(comfy):
    t = tag()
    embed = {
        "1": {"class_type": "Arc2FaceArcFaceLoader", "inputs": {"provider": "auto", "det_size": 640}},
        "3": {"class_type": "LoadImage", "inputs": {"image": "arc2face_face.png"}},
        "4": {"class_type": "LoadImage", "inputs": {"image": "arc2face_person_b.png"}},
        "5": {"class_type": "ImageBatch", "inputs": {"image1": ["3", 0], "image2": ["4", 0]}},
        "2": {"class_type": "Arc2FaceArcFaceEmbed", "inputs": {"arcface": ["1", 0], "image": ["5", 0],
                                                              "face": "largest"}},
    }
    saved = _saved_file(comfy, comfy.run_ok(_save_prompt(embed, f"e_{t}")))
    rows, source = load_embeddings(saved)
    expected = torch.stack([reference(comfy, "arc2face_face.png"), reference(comfy, "arc2face_person_b.png")])
    torch.testing.assert_close(rows, expected, atol=1e-5, rtol=0)
    assert read_metadata(saved)["format"] == "arc2face.identities"
    assert source["made_by"] == "ComfyUI Save Embeddings" and source["prompt"]["90"]["class_type"] == \
        "Arc2FaceSaveEmbeddings"

    legacy = comfy.root / "input" / f"arc2face_test_{t}.pt"            # the command line's older embeddings.pt
    torch.save(expected[:1] * 7.0, legacy)
    listed = comfy.get("/object_info/Arc2FaceLoadEmbeddings")["Arc2FaceLoadEmbeddings"]["input"]["required"]
    names = listed["embeddings"][0]
    output_name = f"{saved.relative_to(comfy.root / 'output').as_posix()} [output]"
    assert output_name in names and legacy.name in names
    for name, want in ((output_name, rows), (legacy.name, expected[:1])):
        prompt = {"2": {"class_type": "Arc2FaceLoadEmbeddings", "inputs": {"embeddings": name}}}
        again = _saved_file(comfy, comfy.run_ok(_save_prompt(prompt, f"l_{t}")))
        torch.testing.assert_close(load_embeddings(again)[0], want, atol=1e-6, rtol=0)
    legacy.unlink()

    status, body = comfy.submit({"2": {"class_type": "Arc2FaceLoadEmbeddings",
                                       "inputs": {"embeddings": "../../models/arc2face/arcface.onnx"}},
                                 "90": _save_prompt({}, f"x_{t}")["90"]})
    assert status == 400 and "embeddings" in json.dumps(body)          # not in the list: never opened


def test_huge_rows_pass_load_and_save_embeddings_with_their_direction(comfy):
    """Rows above ~1e19 (a file written by another tool) used to be saved as zero rows, which then refused to load."""
    from safetensors.torch import save_file

    rows = torch.randn(2, 512, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    rows[0] *= 1e30 / rows[0].abs().max()
    rows[1] *= 3e20 / rows[1].abs().max()
    name = f"arc2face_test_huge_{tag()}.safetensors"
    save_file({"embeddings": rows.float()}, str(comfy.root / "input" / name))
    prompt = {"2": {"class_type": "Arc2FaceLoadEmbeddings", "inputs": {"embeddings": name}}}
    saved = _saved_file(comfy, comfy.run_ok(_save_prompt(prompt, f"h_{tag()}")))
    expected = (rows / np.linalg.norm(rows.numpy(), axis=1, keepdims=True)).float()   # numpy: no overflow in float64
    torch.testing.assert_close(load_embeddings(saved)[0], expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("prefix", ["", "   ", ".hidden", "arc2face_test/.hidden"])
def test_save_embeddings_refuses_a_prefix_that_would_hide_the_file(comfy, prefix):
    prompt = {"2": {"class_type": "Arc2FaceRandomIdentity", "inputs": {"seed": 1, "count": 1}},
              "90": {"class_type": "Arc2FaceSaveEmbeddings", "inputs": {"embeds": ["2", 0], "filename_prefix": prefix}}}
    error = comfy.run_error(prompt)
    assert (f"InvalidInputError: Save Embeddings: filename_prefix {prefix!r} gives no file name, or one starting "
            "with '.' (a hidden file, which Load Embeddings does not list)") in error, error


def test_the_identity_check_workflow_filters_what_it_reports(comfy, object_info):
    from builders.ui_workflows import FILE_COMBOS, check_ui_workflow, ui_to_api

    workflow = json.loads((REPO / "example_workflows" / "arc2face_identity_check.json").read_text())
    assert check_ui_workflow(workflow, object_info, FILE_COMBOS) == []
    prompt = ui_to_api(workflow, object_info)
    for node in prompt.values():
        if node["class_type"] == "Arc2FaceSampler":
            node["inputs"].update(FAST)
    similarity = next(i for i, n in prompt.items() if n["class_type"] == "Arc2FaceIdentitySimilarity")
    decode = next(i for i, n in prompt.items() if n["class_type"] == "VAEDecode")
    flt = next(i for i, n in prompt.items() if n["class_type"] == "Arc2FaceFilterByIdentity")
    save = next(i for i, n in prompt.items() if n["class_type"] == "SaveImage")
    threshold = prompt[flt]["inputs"]["threshold"]
    prompt["900"] = {"class_type": "PreviewAny", "inputs": {"source": [similarity, 0]}}
    prompt["901"] = {"class_type": "PreviewImage", "inputs": {"images": [decode, 0]}}
    entry = comfy.run_ok(prompt)
    scores = [float(text) for text in texts(entry, "900")]
    everything = [comfy.root / "temp" / i["subfolder"] / i["filename"] for i in entry["outputs"]["901"]["images"]]
    saved = comfy.saved_images(entry, save)
    assert len(scores) == len(everything) == 4
    passing = [i for i, score in enumerate(scores) if score >= threshold]
    assert len(saved) == len(passing)
    for index, path in zip(passing, saved):
        assert np.array_equal(np.asarray(Image.open(path)), np.asarray(Image.open(everything[index])))
    report = [text for i, n in prompt.items() if n["class_type"] == "PreviewAny" and i != "900"
              for text in texts(entry, i)]
    assert report and report[0].startswith("Identity similarity") and "4 images" in report[0]


def test_dataset_noise_is_the_stock_ksampler_noise(comfy_install):
    result = run_in_comfyui(comfy_install, CHECKS / "dataset_noise.py")
    assert [check["equal"] for check in result["checks"]] == [True, True, True]
    assert all(0.9 < check["std"] < 1.1 for check in result["checks"])

