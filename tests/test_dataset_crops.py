"""``dataset --crop arcface``: each image's aligned 112x112 face beside it (or instead of it), on tiny models.

Independent route: the crop on disk must equal insightface's own ``face_align.norm_crop`` of the keypoints that
insightface's own SCRFD wrapper (``model_zoo.get_model`` on the detector file, ``detect`` at det_size 640) finds in
the full image on disk, the largest box taken, as the reference code aligns faces. The rigged detector reports the
astronaut's box and keypoints scaled to the image (fixtures_faces); one rigged below insightface's score threshold
finds no face anywhere, which is how the no-face path is exercised.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image
from test_datasets import SIZE, manifest, models, pixels, run  # noqa: F401  (models: the shared fixture)

from builders.onnx_faces import astronaut_face, build_rigged_detector
from fixtures_faces import DETECTOR_REL
from fixtures_models import link_or_copy

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning",
                                        "ignore:`estimate` is deprecated:FutureWarning")

RECIPE = ("--identities", "3", "--ids-per-batch", "2", "--seed", "5", "--crop", "arcface")


@pytest.fixture(scope="module")
def cropped(models, tiny_vae_folder, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("cropped") / "faces"
    assert run(models, tiny_vae_folder, out, *RECIPE) == 0
    return out


def insightface_crop(models_dir, rgb: np.ndarray) -> np.ndarray:
    """The largest detected face of ``rgb`` aligned by insightface itself: uint8 BGR 112x112."""
    from insightface.model_zoo import get_model
    from insightface.utils import face_align

    detector = get_model(str(models_dir / DETECTOR_REL), providers=["CPUExecutionProvider"])
    detector.prepare(-1, input_size=(640, 640), det_thresh=0.5)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    boxes, keypoints = detector.detect(bgr, max_num=0)
    assert len(boxes) >= 1
    largest = int(np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))
    return face_align.norm_crop(bgr, landmark=keypoints[largest], image_size=112)


def test_crops_sit_beside_the_images_and_the_manifest_names_both(cropped):
    rows = manifest(cropped)
    assert len(rows) == 6
    for row in rows:
        i, j = row["identity"], row["image"]
        assert row["file"] == f"{i:05d}/{j:03d}.png" and row["crop"] == f"arcface112/{i:05d}/{j:03d}.png"
        assert row["dropped"] is False and row["mode"] == "dpmpp_2m" and "dropped_because" not in row
        crop = Image.open(cropped / row["crop"])
        assert crop.size == (112, 112) and crop.mode == "RGB"
        assert Image.open(cropped / row["file"]).size == (SIZE, SIZE)
    assert sorted(p.relative_to(cropped).as_posix() for p in (cropped / "arcface112").rglob("*.png")) == \
        [f"arcface112/{i:05d}/{j:03d}.png" for i in range(3) for j in range(2)]
    settings = json.loads((cropped / "dataset.json").read_text())["settings"]
    assert settings["crop"] == {"kind": "arcface", "size": 112, "keep_full": True}
    assert settings["max_attempts"] == 3          # a faceless image is redrawn, so the tries are part of the recipe


def test_each_crop_is_insightfaces_norm_crop_of_the_detected_keypoints(cropped, models):  # noqa: F811
    crops = []
    for row in manifest(cropped):
        expected = insightface_crop(models, pixels(cropped / row["file"]))
        crop = pixels(cropped / row["crop"])
        assert np.array_equal(crop[..., ::-1], expected), row       # the file is RGB; norm_crop works in BGR
        crops.append(crop.astype(int))
    assert np.abs(crops[0] - crops[1]).mean() > 1                   # two images, two different faces


def test_no_keep_full_writes_the_same_crops_alone(cropped, models, tiny_vae_folder, tmp_path):  # noqa: F811
    out = tmp_path / "faces"
    assert run(models, tiny_vae_folder, out, *RECIPE, "--no-keep-full") == 0
    assert not [p for p in out.glob("0*")]                           # no identity folders of full images
    for row, full in zip(manifest(out), manifest(cropped)):
        assert row["file"] is None and row["crop"] == full["crop"] and row["seed"] == full["seed"]
        assert (out / row["crop"]).read_bytes() == (cropped / full["crop"]).read_bytes()
    assert json.loads((out / "dataset.json").read_text())["settings"]["crop"]["keep_full"] is False


def test_an_image_without_a_face_is_redrawn_then_dropped(tmp_path, models, tiny_vae_folder):  # noqa: F811
    """A detector that finds no face in any image (its only face scores below insightface's threshold 0.5)."""
    faceless = tmp_path / "models"
    link_or_copy(models / "arc2face", faceless / "arc2face")
    build_rigged_detector(faceless / DETECTOR_REL, [dataclasses.replace(astronaut_face(), score=0.3)], (512, 512))
    out = tmp_path / "faces"
    assert run(faceless, tiny_vae_folder, out, "--identities", "1", "--crop", "arcface", "--max-attempts", "2") == 0
    rows = manifest(out)
    assert [(r["identity"], r["image"]) for r in rows] == [(0, 0), (0, 1)]
    for row in rows:
        assert row["dropped"] is True and row["dropped_because"] == "no face"
        assert row["tries"] == [-1.0, -1.0] and row["attempt"] == 1
        assert row["file"] is None and row["crop"] is None
    assert not [p for p in out.rglob("*.png") if p.parent != out]     # no image or crop (report_*.png are on top)


@pytest.mark.parametrize("extra, message", [
    (("--crop", "arcface", "--no-similarity"), "--crop arcface writes the face the identity check aligns"),
    (("--no-keep-full",), "--no-keep-full leaves out the full images: it needs --crop arcface"),
])
def test_crop_misuse_is_refused(models, tiny_vae_folder, tmp_path, capsys, extra, message):  # noqa: F811
    assert run(models, tiny_vae_folder, tmp_path / "out", "--identities", "1", *extra) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_each_crop_is_hashed_and_verify_makes_a_damaged_crop_again(cropped, models, tiny_vae_folder, tmp_path,  # noqa: F811
                                                                   capsys):
    """The manifest keeps each crop's SHA-256 (hashlib of the file on disk); a crop cut short after the run is found by
    --verify, whose rerun writes the same bytes again; --no-keep-full rows (no full image) pass the record checks."""
    import hashlib
    import shutil

    rows = manifest(cropped)
    for row in rows:
        assert row["crop_sha256"] == hashlib.sha256((cropped / row["crop"]).read_bytes()).hexdigest()
    out = tmp_path / "faces"
    shutil.copytree(cropped, out)
    victim = out / rows[-1]["crop"]                 # identity 2: batch 1
    whole = victim.read_bytes()
    victim.write_bytes(whole[: len(whole) // 2])
    assert run(models, tiny_vae_folder, out, *RECIPE) == 0        # a plain rerun trusts the record
    assert victim.read_bytes() != whole
    assert run(models, tiny_vae_folder, out, *RECIPE, "--verify") == 0
    warning = next(line for line in capsys.readouterr().err.splitlines() if "--verify:" in line)
    assert str(victim) in warning and "batch 1 is made again" in warning
    assert victim.read_bytes() == whole
    assert manifest(out) == rows
