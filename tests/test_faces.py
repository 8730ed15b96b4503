"""Face analysis (arc2face_core.faces) through insightface's real code paths, on tiny rigged ONNX models."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch

from arc2face_core.errors import (
    CorruptWeightsError,
    InvalidInputError,
    NoFaceError,
    ProviderError,
    WeightsNotFoundError,
    WrongModelError,
)
from arc2face_core.faces.analysis import FaceAnalyzer, load_face_analyzer, parse_face_choice
from arc2face_core.weights import ModelRoots
from builders.onnx_faces import (
    build_non_face_model,
    build_recogniser,
    build_rigged_detector,
    truncate,
)
from fixtures_faces import ARCFACE_REL, DETECTOR_REL, RECOGNISER_SEED, comfy_image, write_face_models

CPU = ["CPUExecutionProvider"]
# ArcFace's 112x112 five-point template (eyes, nose, mouth corners), the standard target of face alignment. The
# reference pipeline holds it (and the detected keypoints) in float32, and a 1e-6 pixel change in the warp moves a
# few pixels by one level, which the tiny recogniser sees at ~1e-5: so the estimate below is fed float32 too.
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], np.float32)


# ------------------------------------------------------------------------------------- independent reference

def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src to dst, 2x3, in float64."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    u, s, vt = np.linalg.svd(dst_c.T @ src_c / len(src))
    d = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt))])
    rotation = u @ d @ vt
    scale = np.trace(np.diag(s) @ d) / src_c.var(0).sum()
    return np.hstack([scale * rotation, (dst_mean - scale * rotation @ src_mean)[:, None]])


def alignment_matrix(kps: np.ndarray) -> np.ndarray:
    """skimage's similarity estimate from the 5 points to the template (checked against a hand-written Umeyama)."""
    from skimage.transform import SimilarityTransform

    src = np.asarray(kps, np.float32)
    if hasattr(SimilarityTransform, "from_estimate"):   # scikit-image >= 0.26
        matrix = SimilarityTransform.from_estimate(src, ARCFACE_TEMPLATE).params[:2]
    else:   # pragma: no cover - older scikit-image
        tform = SimilarityTransform()
        assert tform.estimate(src, ARCFACE_TEMPLATE)
        matrix = tform.params[:2]
    np.testing.assert_allclose(matrix, umeyama(kps, ARCFACE_TEMPLATE), atol=1e-4)
    return matrix


def reference_embedding(rgb: np.ndarray, kps: np.ndarray, recogniser: Path) -> tuple[np.ndarray, np.ndarray]:
    """What Arc2Face's reference computes, done by hand: align the BGR image, run the ONNX file, L2-normalise."""
    crop_bgr = cv2.warpAffine(np.ascontiguousarray(rgb[..., ::-1]), alignment_matrix(kps), (112, 112),
                              borderValue=0.0)
    blob = ((crop_bgr[..., ::-1].astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[None]
    session = ort.InferenceSession(str(recogniser), providers=CPU)
    raw = session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(blob)})[0][0].astype(np.float64)
    return (raw / np.linalg.norm(raw)).astype(np.float32), crop_bgr[..., ::-1]


def recogniser_path(roots: ModelRoots) -> Path:
    return roots.arc2face[0] / "arcface.onnx"


@pytest.fixture
def models_copy(tmp_path: Path, face_models: ModelRoots) -> ModelRoots:
    """A private copy of the one-face model tree, for tests that damage or remove files."""
    models = tmp_path / "models"
    shutil.copytree(face_models.arc2face[0].parent, models)
    return ModelRoots.under(models)


def _detector_file(roots: ModelRoots) -> Path:
    return roots.insightface[0].parent / DETECTOR_REL


def _arcface_file(roots: ModelRoots) -> Path:
    return roots.arc2face[0].parent / ARCFACE_REL


# ------------------------------------------------------------------------------------------------ one face

def test_one_face_matches_independent_computation(face_analyzer: FaceAnalyzer, astronaut_scene, face_models):
    result = face_analyzer.embed(comfy_image(astronaut_scene.image))
    expected, crop_rgb = reference_embedding(astronaut_scene.image, astronaut_scene.faces[0].kps_array(),
                                             recogniser_path(face_models))

    assert result.embeds.dtype == torch.float32 and result.embeds.device.type == "cpu"
    assert result.embeds.shape == (1, 512)
    np.testing.assert_allclose(result.embeds[0].numpy(), expected, atol=1e-5)
    assert abs(float(result.embeds[0].norm()) - 1.0) < 1e-5
    assert result.crops.shape == (1, 112, 112, 3) and result.crops.dtype == torch.float32
    assert 0.0 <= float(result.crops.min()) and float(result.crops.max()) <= 1.0
    np.testing.assert_array_equal(result.crops[0].numpy(), crop_rgb.astype(np.float32) / 255.0)


def test_detector_output_is_decoded_exactly(face_analyzer: FaceAnalyzer, astronaut_scene):
    (face,) = face_analyzer.detect_faces(np.ascontiguousarray(astronaut_scene.image[..., ::-1]))
    truth = astronaut_scene.faces[0]
    np.testing.assert_allclose(face.bbox, truth.bbox, atol=1e-4)
    np.testing.assert_allclose(face.kps, truth.kps_array(), atol=1e-4)
    assert face.score == pytest.approx(0.9, abs=1e-4)


def test_loaded_models_are_configured_like_the_reference(face_analyzer: FaceAnalyzer, astronaut_scene):
    detector, recogniser = face_analyzer.detector, face_analyzer.recogniser
    assert detector.taskname == "detection" and recogniser.taskname == "recognition"
    assert tuple(detector.input_size) == (640, 640) and detector.det_thresh == 0.5
    assert getattr(detector, "input_sizes", [(640, 640)]) == [(640, 640)]   # 2.x: no 128+640 multi-scale pass
    assert (recogniser.input_mean, recogniser.input_std) == (127.5, 127.5)  # as for the real arcface.onnx
    assert face_analyzer.batched_recognition
    face_analyzer.detect_faces(np.ascontiguousarray(astronaut_scene.image[..., ::-1]))
    if hasattr(detector, "resolution_session_input_sizes"):   # insightface 2.x rewrote the graph to a fixed 640
        assert detector.resolution_session_input_sizes == ((640, 640),)


def test_bgr_list_input_equals_comfy_tensor(face_analyzer: FaceAnalyzer, astronaut_scene):
    from_tensor = face_analyzer.embed(comfy_image(astronaut_scene.image))
    from_list = face_analyzer.embed([np.ascontiguousarray(astronaut_scene.image[..., ::-1])])
    assert torch.equal(from_tensor.embeds, from_list.embeds)


def test_grey_input_equals_the_rgb_image_it_came_from(face_analyzer: FaceAnalyzer, astronaut_scene):
    grey = cv2.cvtColor(astronaut_scene.image, cv2.COLOR_RGB2GRAY)
    grey_one_channel = torch.from_numpy(grey[None, ..., None].astype(np.float32) / 255.0)
    as_rgb = face_analyzer.embed(comfy_image(np.repeat(grey[..., None], 3, axis=-1))).embeds
    colour = face_analyzer.embed(comfy_image(astronaut_scene.image)).embeds
    assert torch.equal(face_analyzer.embed(grey_one_channel).embeds, as_rgb)
    assert not torch.allclose(as_rgb, colour, atol=1e-3)   # grey really is a different input


def test_rgba_input_equals_its_rgb(face_analyzer: FaceAnalyzer, astronaut_scene):
    rgb = comfy_image(astronaut_scene.image)
    rgba = torch.cat([rgb, torch.rand(1, 512, 512, 1)], dim=-1)
    assert torch.equal(face_analyzer.embed(rgba).embeds, face_analyzer.embed(rgb).embeds)


def test_batch_rows_follow_the_images(face_analyzer: FaceAnalyzer, astronaut_scene):
    colour = astronaut_scene.image
    grey = np.repeat(cv2.cvtColor(colour, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=-1)
    result = face_analyzer.embed(comfy_image(colour, grey, colour))
    assert result.embeds.shape == (3, 512) and result.crops.shape == (3, 112, 112, 3)
    singles = [face_analyzer.embed(comfy_image(image)).embeds[0] for image in (colour, grey, colour)]
    for row, single in zip(result.embeds, singles):
        torch.testing.assert_close(row, single, atol=1e-6, rtol=0)
    assert torch.allclose(result.embeds.norm(dim=1), torch.ones(3), atol=1e-5)


def test_fixed_batch_recogniser_falls_back_to_one_at_a_time(tmp_path, astronaut_scene, face_analyzer):
    roots = write_face_models(tmp_path / "models", astronaut_scene, arcface=False)
    build_recogniser(_arcface_file(roots), seed=RECOGNISER_SEED, dynamic_batch=False)
    fixed = load_face_analyzer(roots, CPU)
    assert not fixed.batched_recognition and face_analyzer.batched_recognition
    colour = astronaut_scene.image
    grey = np.repeat(cv2.cvtColor(colour, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=-1)
    images = comfy_image(colour, grey)
    torch.testing.assert_close(fixed.embed(images).embeds, face_analyzer.embed(images).embeds, atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------------------------ no face

def test_black_image_has_no_face(face_analyzer: FaceAnalyzer, black_image):
    assert face_analyzer.detect_faces(black_image) == []
    with pytest.raises(NoFaceError, match=r"image 1 of 1 \(512x512 pixels\)") as info:
        face_analyzer.embed(comfy_image(black_image))
    assert "different photo" in str(info.value)


def test_no_face_in_second_image_of_batch(face_analyzer: FaceAnalyzer, astronaut_scene, black_image):
    with pytest.raises(NoFaceError, match="image 2 of 2"):
        face_analyzer.embed(comfy_image(astronaut_scene.image, black_image))


def test_detection_depends_on_the_image_under_the_face(two_face_analyzer: FaceAnalyzer, two_face_scene):
    image = two_face_scene.image.copy()
    small = two_face_scene.faces[1]
    x1, y1, x2, y2 = (int(round(v)) for v in small.bbox)
    image[y1 - 4:y2 + 4, x1 - 4:x2 + 4] = (200, 198, 190)   # paint the small face over with flat wall colour
    faces = two_face_analyzer.detect_faces(np.ascontiguousarray(image[..., ::-1]))
    assert len(faces) == 1
    np.testing.assert_allclose(faces[0].bbox, two_face_scene.faces[0].bbox, atol=1e-4)


# ------------------------------------------------------------------------------------------------ two faces

def test_largest_of_two_faces(two_face_analyzer: FaceAnalyzer, two_face_scene, two_face_models):
    big, small = two_face_scene.faces
    assert big.area > 3 * small.area
    image = comfy_image(two_face_scene.image)
    rec = recogniser_path(two_face_models)

    largest = two_face_analyzer.embed(image, face="largest")
    expected_big, _ = reference_embedding(two_face_scene.image, big.kps_array(), rec)
    np.testing.assert_allclose(largest.embeds[0].numpy(), expected_big, atol=1e-5)
    np.testing.assert_allclose(largest.faces[0].bbox, big.bbox, atol=1e-4)

    other = two_face_analyzer.embed(image, face=1)
    expected_small, _ = reference_embedding(two_face_scene.image, small.kps_array(), rec)
    np.testing.assert_allclose(other.embeds[0].numpy(), expected_small, atol=1e-5)
    assert float(largest.embeds[0] @ other.embeds[0]) < 0.99


def test_face_index_counts_left_to_right(two_face_analyzer: FaceAnalyzer, two_face_scene):
    bgr = np.ascontiguousarray(two_face_scene.image[..., ::-1])
    raw_boxes, _ = two_face_analyzer.detector.detect(bgr, max_num=0)
    assert raw_boxes[0, 0] > raw_boxes[1, 0]   # insightface lists the right (higher-scoring) face first
    faces = two_face_analyzer.detect_faces(bgr)
    assert [f.center_x for f in faces] == sorted(f.center_x for f in faces)
    image = comfy_image(two_face_scene.image)
    leftmost = two_face_analyzer.embed(image, face=0)
    np.testing.assert_allclose(leftmost.faces[0].bbox, two_face_scene.faces[0].bbox, atol=1e-4)
    assert torch.equal(two_face_analyzer.embed(image, face="0").embeds, leftmost.embeds)


def test_face_index_out_of_range(two_face_analyzer: FaceAnalyzer, two_face_scene):
    with pytest.raises(NoFaceError, match=r"Face index 2 .*image 1 of 1.*only 2 face\(s\)"):
        two_face_analyzer.embed(comfy_image(two_face_scene.image), face=2)


@pytest.mark.parametrize("bad", [-1, "big", "", True, 1.5, None])
def test_bad_face_choice(bad):
    with pytest.raises(InvalidInputError, match="largest"):
        parse_face_choice(bad)


def test_face_choice_parsing():
    assert parse_face_choice(" Largest ") == "largest"
    assert parse_face_choice("3") == 3 and parse_face_choice(np.int64(2)) == 2


# ------------------------------------------------------------------------------------------------ bad input

@pytest.mark.parametrize(
    ("images", "message"),
    [
        (torch.full((1, 64, 64, 3), float("nan")), "NaN"),
        (torch.zeros(0, 64, 64, 3), "empty"),
        (torch.zeros(1, 64, 64, 5), "5 channels"),
        ([], "empty"),
        ([np.zeros((64, 64, 3), np.float32)], "uint8"),
    ],
)
def test_invalid_images(face_analyzer: FaceAnalyzer, images, message):
    with pytest.raises(InvalidInputError, match=message):
        face_analyzer.embed(images)


# ------------------------------------------------------------------------------------------------ loading

def test_missing_detector(models_copy: ModelRoots):
    _detector_file(models_copy).unlink()
    with pytest.raises(WeightsNotFoundError, match="scrfd_10g_bnkps.onnx") as info:
        load_face_analyzer(models_copy, CPU)
    assert str(models_copy.insightface[0]) in str(info.value)


def test_missing_arcface(models_copy: ModelRoots):
    _arcface_file(models_copy).unlink()
    with pytest.raises(WeightsNotFoundError, match="arcface.onnx") as info:
        load_face_analyzer(models_copy, CPU)
    assert str(models_copy.arc2face[0]) in str(info.value)


def test_only_glintr100_is_refused(models_copy: ModelRoots):
    arcface = _arcface_file(models_copy)
    arcface.rename(_detector_file(models_copy).parent / "glintr100.onnx")
    with pytest.raises(WrongModelError, match="glintr100"):
        load_face_analyzer(models_copy, CPU)


def test_arcface_in_the_antelopev2_folder_is_accepted(models_copy: ModelRoots, face_analyzer, astronaut_scene):
    _arcface_file(models_copy).rename(_detector_file(models_copy).parent / "arcface.onnx")
    moved = load_face_analyzer(models_copy, CPU)
    image = comfy_image(astronaut_scene.image)
    assert torch.equal(moved.embed(image).embeds, face_analyzer.embed(image).embeds)


@pytest.mark.parametrize("which", ["detector", "arcface"])
def test_truncated_file_is_reported_as_corrupt(models_copy: ModelRoots, which):
    path = _detector_file(models_copy) if which == "detector" else _arcface_file(models_copy)
    truncate(path, 0.5)
    with pytest.raises(CorruptWeightsError, match="download it again") as info:
        load_face_analyzer(models_copy, CPU)
    assert str(path) in str(info.value)


def test_empty_file_is_reported_as_corrupt(models_copy: ModelRoots):
    path = _arcface_file(models_copy)
    path.write_bytes(b"")
    with pytest.raises(CorruptWeightsError, match="0 bytes") as info:
        load_face_analyzer(models_copy, CPU)
    assert str(path) in str(info.value)


def test_recogniser_in_place_of_the_detector(models_copy: ModelRoots):
    shutil.copy(_arcface_file(models_copy), _detector_file(models_copy))
    with pytest.raises(WrongModelError, match="not a face detector.*recognition model") as info:
        load_face_analyzer(models_copy, CPU)
    assert str(_detector_file(models_copy)) in str(info.value)


def test_unroutable_model_in_place_of_the_detector(models_copy: ModelRoots):
    build_non_face_model(_detector_file(models_copy))
    with pytest.raises(WrongModelError, match="not a face detector.*no model insightface knows"):
        load_face_analyzer(models_copy, CPU)


def test_detector_in_place_of_the_recogniser(models_copy: ModelRoots):
    shutil.copy(_detector_file(models_copy), _arcface_file(models_copy))
    with pytest.raises(WrongModelError, match="not a face recogniser.*detection model"):
        load_face_analyzer(models_copy, CPU)


def test_detector_without_keypoints(models_copy: ModelRoots, astronaut_scene):
    build_rigged_detector(_detector_file(models_copy), astronaut_scene.faces, astronaut_scene.size,
                          with_keypoints=False)
    with pytest.raises(WrongModelError, match="keypoints"):
        load_face_analyzer(models_copy, CPU)


@pytest.mark.parametrize("kwargs", [{"out_dim": 128}, {"input_size": 128}])
def test_recogniser_with_wrong_shapes(models_copy: ModelRoots, kwargs):
    build_recogniser(_arcface_file(models_copy), **kwargs)
    with pytest.raises(WrongModelError, match="112x112 faces and returns \\[batch, 512\\]"):
        load_face_analyzer(models_copy, CPU)


@pytest.mark.parametrize(("weights", "message"), [("zeros", "all-zero embedding"), ("nan", "NaN/inf")])
def test_broken_recogniser_output_is_an_error_not_an_embedding(models_copy, astronaut_scene, weights, message):
    build_recogniser(_arcface_file(models_copy), weights=weights)
    analyzer = load_face_analyzer(models_copy, CPU)
    with pytest.raises(CorruptWeightsError, match=f"{message} for the face in image 1 of 1"):
        analyzer.embed(comfy_image(astronaut_scene.image))


def test_other_antelopev2_files_are_not_opened(models_copy: ModelRoots, face_analyzer, astronaut_scene):
    folder = _detector_file(models_copy).parent
    for name in ("1k3d68.onnx", "2d106det.onnx", "genderage.onnx", "glintr100.onnx"):
        (folder / name).write_bytes(b"not an onnx file")
    analyzer = load_face_analyzer(models_copy, CPU)
    image = comfy_image(astronaut_scene.image)
    assert torch.equal(analyzer.embed(image).embeds, face_analyzer.embed(image).embeds)


@pytest.fixture
def network_attempts(monkeypatch) -> list:
    """Every name lookup or connection attempted during the test, each refused (no test may use the network)."""
    attempts: list = []

    def refuse(*args, **kwargs):
        attempts.append(args[:2])
        raise OSError("a test tried to use the network")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


def test_loading_never_downloads(models_copy: ModelRoots, network_attempts, monkeypatch, tmp_path):
    """Every file in place and the download switch on: both files go through insightface's model_zoo, and nothing
    touches the network. The guard does catch insightface's own downloader (the last lines: a pack that is not there
    is fetched by insightface's storage helper, which FaceAnalysis would call)."""
    from insightface import model_zoo
    from insightface.utils import storage

    loaded = []
    real_get_model = model_zoo.get_model

    def counted_get_model(name, **kwargs):
        loaded.append(Path(name).name)
        return real_get_model(name, **kwargs)

    monkeypatch.setattr(model_zoo, "get_model", counted_get_model)
    monkeypatch.setenv("HOME", str(tmp_path))   # insightface's default root is ~/.insightface
    analyzer = load_face_analyzer(models_copy, CPU, download=True)
    assert sorted(loaded) == ["arcface.onnx", "scrfd_10g_bnkps.onnx"]
    assert analyzer.recogniser_path == _arcface_file(models_copy)
    assert network_attempts == []

    with pytest.raises(OSError):
        storage.download("models", "antelopev2", root=str(tmp_path / "insightface"))
    assert network_attempts, "the guard did not see insightface's download"


def test_unavailable_provider(models_copy: ModelRoots):
    with pytest.raises(ProviderError, match="NoSuchExecutionProvider"):
        load_face_analyzer(models_copy, ["NoSuchExecutionProvider"])


@pytest.mark.parametrize("det_size", [0, 100, 5000, "640", 640.0])
def test_bad_det_size(models_copy: ModelRoots, det_size):
    with pytest.raises(InvalidInputError, match="det_size"):
        load_face_analyzer(models_copy, CPU, det_size=det_size)


def test_det_size_and_cpu_provider_reach_insightface(models_copy: ModelRoots):
    analyzer = load_face_analyzer(models_copy, CPU, det_size=320)
    assert tuple(analyzer.detector.input_size) == (320, 320) and analyzer.det_size == 320
    assert analyzer.detector.session.get_providers() == CPU
    assert analyzer.recogniser.session.get_providers() == CPU


def test_runtime_failure_on_a_valid_file_is_a_provider_error(models_copy: ModelRoots, monkeypatch):
    from insightface import model_zoo

    def fail(*args, **kwargs):
        raise RuntimeError("provider exploded")

    monkeypatch.setattr(model_zoo, "get_model", fail)
    with pytest.raises(ProviderError, match="(?s)valid ONNX: update onnxruntime.*provider exploded") as info:
        load_face_analyzer(models_copy, CPU)
    assert str(_detector_file(models_copy)) in str(info.value)


def test_a_provider_that_could_not_start_is_reported(face_models):
    """onnxruntime falls back to the CPU silently when a GPU provider cannot start; the pack does not."""
    import logging

    import onnxruntime
    from insightface import model_zoo

    from arc2face_core.errors import ProviderError
    from arc2face_core.faces.onnx_models import check_active_provider

    path = face_models.insightface[0] / "models/antelopev2/scrfd_10g_bnkps.onnx"
    detector = model_zoo.get_model(str(path), providers=["CPUExecutionProvider"])
    assert detector.session.get_providers() == ["CPUExecutionProvider"]
    asked = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    with pytest.raises(ProviderError, match=r"could not start CUDAExecutionProvider .* runs it on \['CPUExecutionProvider'\]"):
        check_active_provider(detector, path, asked, strict=True)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("arc2face_core.faces.onnx_models").addHandler(handler)
    try:
        check_active_provider(detector, path, asked, strict=False)
    finally:
        logging.getLogger("arc2face_core.faces.onnx_models").removeHandler(handler)
    assert any("could not start CUDAExecutionProvider" in r.getMessage() for r in records)
    check_active_provider(detector, path, ["CPUExecutionProvider"], strict=True)   # what was asked: fine
    assert "CPUExecutionProvider" in onnxruntime.get_available_providers()
