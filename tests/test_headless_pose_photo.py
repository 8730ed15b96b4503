"""``--pose-photo`` for the command line: which photo gives which FLAME parameters, and the rendered hint's framing.

The FLAME renderer belongs to the other half of the pack; here it is the callable the module takes, one that records
what it was given and paints a known patch, so the test sees what reached it and what came back. The parameters are
checked against face_parameters_from_photos on each photo (tests/test_smirk_photo.py checks that pipeline itself).
"""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from PIL import Image

from arc2face_core.cli.pose_photo import (
    PhotoReader,
    add_pose_photo_arguments,
    hints_from_args,
    pose_photo_hints,
    pose_photo_parameters,
)
from arc2face_core.errors import InvalidInputError, NoFaceError
from arc2face_core.pose.smirk_photo import face_parameters_from_photos
from builders.onnx_landmarks import build_rigged_landmarks, posed_mean_shape
from builders.smirk_parts import write_full_smirk_checkpoint
from fixtures_faces import write_face_models

CPU = ["CPUExecutionProvider"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, astronaut_scene):
    base = tmp_path_factory.mktemp("pose_photo")
    roots = write_face_models(base / "models", astronaut_scene)
    build_rigged_landmarks(base / "models/insightface/models/antelopev2/1k3d68.onnx", posed_mean_shape(np.eye(3)))
    write_full_smirk_checkpoint(base / "models/arc2face/smirk/SMIRK_em1.pt", seed=4)
    photos = {}
    for name, shift in (("pose", 0), ("person_a", 25), ("person_b", -25)):
        rgb = np.clip(astronaut_scene.image.astype(np.int16) + shift, 0, 255).astype(np.uint8)
        photos[name] = base / f"{name}.png"
        Image.fromarray(rgb).save(photos[name])
    reader = PhotoReader(roots, CPU, crop="insightface 68", quiet=True)
    return reader, photos


def read_one(reader, path):
    bgr = np.asarray(Image.open(path).convert("RGB"))[..., ::-1].copy()
    return face_parameters_from_photos([bgr], reader.analyzer, reader.landmark_model, reader.smirk).params


def test_pose_from_the_pose_photo_shape_from_each_identity(setup):
    reader, photos = setup
    params = pose_photo_parameters(reader, [photos["pose"]], 2, [photos["person_a"], photos["person_b"]])
    pose, a, b = (read_one(reader, photos[n]) for n in ("pose", "person_a", "person_b"))
    assert len(params) == 2
    for row in range(2):
        for name in ("pose", "camera", "expression", "eyelids", "jaw"):
            torch.testing.assert_close(getattr(params, name)[row], getattr(pose, name)[0], atol=0, rtol=0)
        torch.testing.assert_close(params.crop[row], pose.crop[0], atol=0, rtol=0)
    torch.testing.assert_close(params.shape, torch.cat([a.shape, b.shape]), atol=0, rtol=0)
    assert (a.shape - b.shape).abs().max() > 1e-4   # the two identities' shapes really differ


def test_averaged_identity_and_identities_without_photos(setup):
    reader, photos = setup
    averaged = pose_photo_parameters(reader, [photos["pose"]], 1, [photos["person_a"], photos["person_b"]],
                                     average=True)
    a, b = read_one(reader, photos["person_a"]), read_one(reader, photos["person_b"])
    torch.testing.assert_close(averaged.shape, (a.shape + b.shape) / 2, atol=1e-6, rtol=0)
    mean_head = pose_photo_parameters(reader, [photos["pose"]], 3)
    assert len(mean_head) == 1 and mean_head.shape.abs().max() == 0   # FLAME's mean head, one pose for all


def test_hints_are_the_renders_prepared_for_the_controlnet(setup):
    reader, photos = setup
    params = pose_photo_parameters(reader, [photos["pose"]], 1)
    seen = []

    def render(p):
        seen.append(p)
        maps = np.full((len(p), 512, 512, 3), 127, np.uint8)
        maps[:, 200:300, 220:320] = (128, 160, 230)   # a patch of normals facing the viewer, tilted up
        return maps

    hints = pose_photo_hints(params, render)
    assert seen == [params]
    assert hints.shape == (1, 512, 512, 3) and hints.dtype == torch.float32
    torch.testing.assert_close(hints[0, 250, 250], torch.tensor([128, 160, 230]) / 255.0, atol=1e-6, rtol=0)
    torch.testing.assert_close(hints[0, 10, 10], torch.full((3,), 127 / 255.0), atol=1e-6, rtol=0)
    with pytest.raises(InvalidInputError, match="not uint8"):
        pose_photo_hints(params, lambda p: np.zeros((len(p), 512, 512, 3), np.float32))


def test_counts_files_and_faces_are_checked(setup, tmp_path, black_image):
    reader, photos = setup
    with pytest.raises(InvalidInputError, match="2 --pose-photo for 3 identities: give 1 .for all. or 3"):
        pose_photo_parameters(reader, [photos["pose"], photos["pose"]], 3)
    with pytest.raises(InvalidInputError, match="2 identity photos for 3 identities"):
        pose_photo_parameters(reader, [photos["pose"]], 3, [photos["person_a"], photos["person_b"]])
    with pytest.raises(InvalidInputError, match="Cannot read the image .*missing.png"):
        pose_photo_parameters(reader, [tmp_path / "missing.png"], 1)
    black = tmp_path / "black.png"
    Image.fromarray(black_image).save(black)
    with pytest.raises(NoFaceError, match=r"black\.png: Pose reference \(--pose-photo\): No face found"):
        pose_photo_parameters(reader, [black], 1)
    with pytest.raises(NoFaceError, match=r"black\.png: Identity photo \(--image\), for its head shape: No face"):
        pose_photo_parameters(reader, [photos["pose"]], 1, [black])


def test_options():
    parser = argparse.ArgumentParser()
    add_pose_photo_arguments(parser)
    args = parser.parse_args(["--pose-photo", "a.png", "--pose-photo", "b.png", "--smirk-crop", "insightface 68"])
    assert [str(p) for p in args.pose_photo] == ["a.png", "b.png"] and args.smirk_crop == "insightface 68"
    assert parser.parse_args([]).smirk_crop == "auto" and parser.parse_args([]).pose_photo is None
    with pytest.raises(SystemExit):
        parser.parse_args(["--smirk-crop", "dlib"])


def test_the_command_line_path(setup, astronaut_scene):
    """--pose-photo with two identity photos: one hint per identity, each rendered from that identity's shape."""
    reader, photos = setup
    parser = argparse.ArgumentParser()
    parser.add_argument("--image", action="append")
    parser.add_argument("--average", action="store_true")
    parser.add_argument("--face", default="largest")
    parser.add_argument("--quiet", action="store_true")
    add_pose_photo_arguments(parser)
    args = parser.parse_args(["--pose-photo", str(photos["pose"]), "--image", str(photos["person_a"]),
                              "--image", str(photos["person_b"]), "--smirk-crop", "insightface 68", "--quiet"])
    rendered = []

    def render(p):
        rendered.append(p)
        return np.full((len(p), 512, 512, 3), 127, np.uint8)

    roots = reader.roots
    hints, info = hints_from_args(args, roots, 2, render, CPU)
    assert hints.shape == (2, 512, 512, 3)
    assert info == {"pose_photos": [str(photos["pose"])], "smirk_crop": "insightface 68 points (chosen)",
                    "head_shape": "identity photos"}
    a, b = read_one(reader, photos["person_a"]), read_one(reader, photos["person_b"])
    torch.testing.assert_close(rendered[0].shape, torch.cat([a.shape, b.shape]), atol=0, rtol=0)
