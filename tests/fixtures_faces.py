"""Face-analysis fixtures: tiny rigged ONNX detector + recogniser in the real folder layout, and test images.

Layout written under a temporary ``models`` folder, as in ComfyUI:
    models/insightface/models/antelopev2/scrfd_10g_bnkps.onnx   (rigged SCRFD-layout detector)
    models/arc2face/arcface.onnx                                (tiny ArcFace-layout recogniser)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from arc2face_core.weights import ModelRoots
from builders.onnx_faces import (
    RiggedFace,
    astronaut_face,
    astronaut_rgb,
    build_recogniser,
    build_rigged_detector,
    paste_face_copy,
)

DETECTOR_REL = Path("insightface/models/antelopev2/scrfd_10g_bnkps.onnx")
ARCFACE_REL = Path("arc2face/arcface.onnx")
RECOGNISER_SEED = 1234


@dataclass(frozen=True)
class FaceScene:
    """An RGB uint8 image and the faces the rigged detector for it reports, left to right."""

    image: np.ndarray
    faces: tuple[RiggedFace, ...]

    @property
    def size(self) -> tuple[int, int]:
        return self.image.shape[1], self.image.shape[0]


def write_face_models(models_dir: Path, scene: FaceScene, *, detector: bool = True, arcface: bool = True) -> ModelRoots:
    """Write the rigged detector for ``scene`` and the tiny recogniser under ``models_dir``; return its roots."""
    if detector:
        build_rigged_detector(models_dir / DETECTOR_REL, scene.faces, scene.size)
    if arcface:
        build_recogniser(models_dir / ARCFACE_REL, seed=RECOGNISER_SEED)
    return ModelRoots.under(models_dir)


def comfy_image(*rgb_images: np.ndarray) -> torch.Tensor:
    """uint8 RGB arrays -> a ComfyUI IMAGE batch (float32 [B,H,W,C], 0..1), as ComfyUI's LoadImage makes it."""
    return torch.from_numpy(np.stack(rgb_images).astype(np.float32) / 255.0)


@pytest.fixture(scope="session")
def astronaut_scene() -> FaceScene:
    """skimage's astronaut, one face."""
    return FaceScene(astronaut_rgb(), (astronaut_face(),))


@pytest.fixture(scope="session")
def two_face_scene(astronaut_scene: FaceScene) -> FaceScene:
    """The astronaut with a half-size copy of her face pasted on the wall to the right.

    The small copy scores higher (0.95 vs 0.9), so insightface lists it first: neither "largest" nor the
    left-to-right index can be right by taking insightface's order.
    """
    big = astronaut_scene.faces[0]
    image, small = paste_face_copy(astronaut_scene.image, big, region=(168, 64, 280, 192), scale=0.5,
                                   top_left=(320, 40), score=0.95)
    return FaceScene(image, (big, small))


@pytest.fixture(scope="session")
def black_image() -> np.ndarray:
    return np.zeros((512, 512, 3), np.uint8)


@pytest.fixture(scope="session")
def face_models(tmp_path_factory: pytest.TempPathFactory, astronaut_scene: FaceScene) -> ModelRoots:
    """Model roots whose detector finds the astronaut's face."""
    return write_face_models(tmp_path_factory.mktemp("one_face") / "models", astronaut_scene)


@pytest.fixture(scope="session")
def two_face_models(tmp_path_factory: pytest.TempPathFactory, two_face_scene: FaceScene) -> ModelRoots:
    """Model roots whose detector finds both faces of ``two_face_scene``."""
    return write_face_models(tmp_path_factory.mktemp("two_faces") / "models", two_face_scene)


@pytest.fixture(scope="session")
def face_analyzer(face_models: ModelRoots):
    from arc2face_core.faces.analysis import load_face_analyzer

    return load_face_analyzer(face_models, ["CPUExecutionProvider"])


@pytest.fixture(scope="session")
def two_face_analyzer(two_face_models: ModelRoots):
    from arc2face_core.faces.analysis import load_face_analyzer

    return load_face_analyzer(two_face_models, ["CPUExecutionProvider"])
