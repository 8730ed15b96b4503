"""The identity check (arc2face_core.faces.similarity) and the identities file format (arc2face_core.identity.files).

Expected scores come from the hand-computed reference path of test_faces (skimage's similarity transform, OpenCV's
warp, the ONNX file run by onnxruntime directly, L2 normalisation), not from the analyzer under test.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from test_faces import recogniser_path, reference_embedding

from arc2face_core.errors import CorruptWeightsError, InvalidInputError
from arc2face_core.faces.similarity import (
    NO_FACE_SCORE,
    filter_by_scores,
    identity_of_images,
    score_identities,
)
from arc2face_core.identity.files import load_embeddings, save_embeddings
from builders.pickles import RunsCode
from fixtures_faces import comfy_image


def unit(seed: int) -> torch.Tensor:
    row = torch.randn(512, generator=torch.Generator().manual_seed(seed))
    return row / row.norm()


@pytest.fixture(scope="module")
def photos(astronaut_scene):
    face = astronaut_scene.image
    brighter = np.clip(face.astype(np.int16) + 25, 0, 255).astype(np.uint8)
    return {"face": face, "brighter": brighter, "black": np.zeros_like(face)}


def test_scores_equal_the_reference_computation(face_analyzer, face_models, astronaut_scene, photos):
    kps, onnx_file = astronaut_scene.faces[0].kps_array(), recogniser_path(face_models)
    own = torch.from_numpy(reference_embedding(photos["face"], kps, onnx_file)[0])
    brighter = torch.from_numpy(reference_embedding(photos["brighter"], kps, onnx_file)[0])
    other = unit(3)
    images = comfy_image(photos["face"], photos["brighter"], photos["black"], photos["face"])
    result = score_identities(face_analyzer, images, torch.stack([own, other]), images_per_id=2)
    expected = [1.0, float(brighter @ own), NO_FACE_SCORE, float(own @ other)]
    np.testing.assert_allclose(result.scores, expected, atol=1e-5)
    assert 0.5 < expected[1] < 0.9999                   # a real, different score: the test can tell them apart
    assert result.identities == [0, 0, 1, 1] and result.found == [True, True, False, True]
    assert result.no_face == [2]
    report = result.report()
    assert "image 3, identity 2: no face found (-1.0)" in report
    assert "No face found in 1 image: 3 (scored -1.0)." in report
    assert "4 images, 3 with a face: mean" in report and f"max {1.0:.3f}" in report


def test_one_identity_is_compared_with_every_image(face_analyzer, photos):
    own = face_analyzer.embed(comfy_image(photos["face"])).embeds
    result = score_identities(face_analyzer, comfy_image(photos["face"], photos["black"], photos["face"]), own)
    assert result.identities == [0, 0, 0] and result.scores[1] == NO_FACE_SCORE
    np.testing.assert_allclose([result.scores[0], result.scores[2]], [1.0, 1.0], atol=1e-5)


def test_only_black_images_score_without_crashing(face_analyzer, photos):
    result = score_identities(face_analyzer, comfy_image(photos["black"], photos["black"]), unit(0)[None])
    assert result.scores == [NO_FACE_SCORE, NO_FACE_SCORE] and result.no_face == [0, 1]
    assert "0 with a face" in result.report() and "mean" not in result.report()


def test_pairing_rules():
    assert identity_of_images(6, 3, 2) == [0, 0, 1, 1, 2, 2]
    assert identity_of_images(5, 1, 2) == [0] * 5            # one identity: every image
    with pytest.raises(InvalidInputError, match=r"3 images cannot be paired with 2 identities × 1 image per "
                                                r"identity \(= 2 images\): set images_per_id"):
        identity_of_images(3, 2, 1)
    with pytest.raises(InvalidInputError, match="images_per_id must be a whole number"):
        identity_of_images(2, 2, 0)


# ----------------------------------------------------------------------------------------------------------- filter


def batch(*values: float, size: int = 4) -> torch.Tensor:
    return torch.stack([torch.full((size, size, 3), v) for v in values])


def test_filter_keeps_the_images_at_or_above_the_threshold():
    images = [batch(0.1, 0.2, 0.3), batch(0.4, 0.5)]         # a list input: two batches, in order
    kept, indices = filter_by_scores(images, [0.5, -1.0, 0.2, 0.35, 0.9], 0.35)
    assert indices == [0, 3, 4]
    torch.testing.assert_close(kept[:, 0, 0, 0], torch.tensor([0.1, 0.4, 0.5]))
    none, indices = filter_by_scores([batch(0.1)], [0.1], 0.5)
    assert indices == [] and none.shape == (0, 4, 4, 3)        # an empty batch, not an error


def test_threshold_one_keeps_an_image_scored_against_its_own_embedding():
    """A float32 cosine of a unit vector with itself is 1 - 2**-24 here, not 1.0 (a hand-worked float32 case)."""
    row = torch.nn.functional.normalize(torch.randn(512, generator=torch.Generator().manual_seed(3)), dim=0)
    own = float(row @ row)
    assert own != 1.0 and abs(own - 1.0) < 1e-6        # what Identity Similarity reports for identical faces
    kept, indices = filter_by_scores([batch(0.1, 0.2, 0.3)], [own, 1.0 - 2e-6, 0.99999994], 1.0)
    assert indices == [0, 2]                            # float rounding passes; a real shortfall does not


def test_an_empty_batch_is_a_clear_error_in_the_node(pack):
    node = pack.NODE_CLASS_MAPPINGS["Arc2FaceFilterByIdentity"]()
    with pytest.raises(Exception, match=r"images is an empty batch \(0 images, 0 scores\): there is nothing to "
                                        r"filter") as caught:
        node.filter(images=[torch.zeros(0, 8, 8, 3)], scores=[], threshold=[0.4])
    assert type(caught.value).__name__ == "InvalidInputError"     # was a bare ValueError from max() of no scores


def test_the_log_shows_enough_digits_when_none_passes(pack, caplog):
    node = pack.NODE_CLASS_MAPPINGS["Arc2FaceFilterByIdentity"]()
    with caplog.at_level("WARNING"), pytest.raises(Exception, match="the nodes run inside ComfyUI"):
        node.filter(images=[batch(0.5)], scores=[0.9999985], threshold=[1.0])   # no ComfyUI: no ExecutionBlocker
    assert "none of 1 images reached 1 (best 0.9999985)" in caplog.text


@pytest.mark.parametrize("images, scores, threshold, message", [
    ([batch(0.1, 0.2)], [0.3], 0.1, "2 images but 1 score"),
    ([batch(0.1)], [float("nan")], 0.1, "score 1 is nan"),
    ([batch(0.1)], [0.3], float("nan"), "threshold must be a cosine"),
    ([batch(0.1)], [0.3], 1.5, "threshold must be a cosine"),
    ([batch(0.1), batch(0.2, size=8)], [0.3, 0.3], 0.1, "different sizes"),
    ([], [], 0.1, "one or more IMAGE batches"),
])
def test_filter_refusals(images, scores, threshold, message):
    with pytest.raises(InvalidInputError, match=message):
        filter_by_scores(images, scores, threshold)


# --------------------------------------------------------------------------------------------------- identity files


def test_identities_file_format(tmp_path):
    rows = torch.stack([unit(1), unit(2)])
    path = save_embeddings(tmp_path / "people.safetensors", rows * 3.0, {"sampler": "test", "seed": 1})
    with safe_open(str(path), framework="pt") as handle:           # readable by safetensors alone
        assert list(handle.keys()) == ["embeddings"]
        stored = handle.get_tensor("embeddings")
        metadata = handle.metadata()
    assert stored.dtype == torch.float32 and stored.shape == (2, 512)
    torch.testing.assert_close(stored, rows, atol=1e-6, rtol=0)      # unit rows, whatever the input norm
    assert metadata["format"] == "arc2face.identities" and metadata["version"] == "1"
    loaded, source = load_embeddings(path)
    assert torch.equal(loaded, stored) and source == {"sampler": "test", "seed": 1}
    assert not list(tmp_path.glob(".*tmp*"))                         # the temporary file is gone


def test_older_and_foreign_files_are_read(tmp_path):
    rows = torch.stack([unit(4), unit(5), unit(6)])
    torch.save(rows * 2, tmp_path / "embeddings.pt")                 # the command line's older file
    loaded, source = load_embeddings(tmp_path / "embeddings.pt")
    torch.testing.assert_close(loaded, rows, atol=1e-6, rtol=0)
    assert source["format"] == "embeddings.pt"
    save_file({"faces": rows}, str(tmp_path / "single.safetensors"))   # one [N, 512] tensor of another name
    torch.testing.assert_close(load_embeddings(tmp_path / "single.safetensors")[0], rows, atol=1e-6, rtol=0)


def test_identities_file_refusals(tmp_path):
    save_file({"a": torch.randn(2, 512), "b": torch.randn(2, 512)}, str(tmp_path / "two.safetensors"))
    with pytest.raises(InvalidInputError, match="no 'embeddings' tensor"):
        load_embeddings(tmp_path / "two.safetensors")
    save_file({"embeddings": torch.randn(2, 77, 768)}, str(tmp_path / "cond.safetensors"))
    with pytest.raises(InvalidInputError, match=r"cond\.safetensors: .*shape \[N, 512\]"):
        load_embeddings(tmp_path / "cond.safetensors")
    save_file({"embeddings": torch.full((1, 512), float("nan"))}, str(tmp_path / "nan.safetensors"))
    with pytest.raises(InvalidInputError, match="NaN"):
        load_embeddings(tmp_path / "nan.safetensors")
    marker = tmp_path / "ran"
    with open(tmp_path / "evil.pt", "wb") as handle:
        pickle.dump(RunsCode(str(marker)), handle)
    with pytest.raises(CorruptWeightsError, match="asks to run Python code"):
        load_embeddings(tmp_path / "evil.pt")
    assert not marker.exists()
    with pytest.raises(InvalidInputError, match="not found"):
        load_embeddings(tmp_path / "missing.safetensors")
    (tmp_path / "list.txt").write_text("1 2 3")
    with pytest.raises(InvalidInputError, match="not '.txt'"):
        load_embeddings(tmp_path / "list.txt")
    with pytest.raises(InvalidInputError, match="saved as .safetensors"):
        save_embeddings(tmp_path / "out.pt", unit(0)[None])
