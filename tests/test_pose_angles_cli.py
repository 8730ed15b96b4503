"""``python -m arc2face_core --pose-angles YAW PITCH ROLL [--flame PKL]``: hints rendered from typed angles.

The images must equal the API's with the hints the core renders for those angles (the generic head, or the FLAME
head of a small random file in FLAME's layout), and settings.json must say which made them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from arc2face_core.cli.main import main as cli_main
from arc2face_core.faces.head_pose import rotation_from_angles
from arc2face_core.identity.embeddings import random_identities
from arc2face_core.pose.flame import load_flame
from arc2face_core.pose.flame_hint import flame_normal_maps, typed_face_parameters
from arc2face_core.pose.hint import prepare_normal_map
from arc2face_core.pose.render import render_normal_map
from builders.flame import write_flame_folder
from fixtures_models import link_or_copy

SIZE = 32


@pytest.fixture(scope="module")
def base(tmp_path_factory, tiny_controlnet_root):
    folder = tmp_path_factory.mktemp("cli_angles")
    for part in ("encoder", "arc2face", "controlnet"):
        link_or_copy(tiny_controlnet_root / part, folder / "models" / "arc2face" / part)
    write_flame_folder(folder / "flame", seed=4)
    return folder


def args_for(base: Path, vae: Path, out: str, *extra: str) -> list[str]:
    return ["--models", str(base / "models"), "--vae", str(vae), "--steps", "2", "--width", str(SIZE), "--height",
            str(SIZE), "--images-per-id", "1", "--out", str(base / out), "--device", "cpu", "-q", *extra]


def test_generic_head_one_pose_per_identity(base, tiny_vae_folder, tiny_control_pipeline):
    assert cli_main(args_for(base, tiny_vae_folder, "generic", "--random-identities", "2", "--seed", "3",
                             "--pose-angles", "30", "0", "0", "--pose-angles", "-20", "10", "5")) == 0
    hints = torch.cat([torch.from_numpy(render_normal_map(None, rotation_from_angles(p, y, r), roll_in_frame=True))[None]
                       for y, p, r in ((30, 0, 0), (-20, 10, 5))])
    expected = tiny_control_pipeline.generate(random_identities(2, seed=3), 1, steps=2, width=SIZE, height=SIZE,
                                              seed=3, hint=prepare_normal_map(hints))
    for name, want in zip(("id000_00.png", "id001_00.png"), expected):
        got = np.asarray(Image.open(base / "generic" / name))
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1, name
    settings = json.loads((base / "generic" / "settings.json").read_text())
    assert settings["pose"]["pose_angles"] == [[30.0, 0.0, 0.0], [-20.0, 10.0, 5.0]]
    assert settings["pose"]["pose_hint"] == "generic head"


def test_flame_head(base, tiny_vae_folder, tiny_control_pipeline):
    model = base / "flame" / "generic_model.pkl"
    assert cli_main(args_for(base, tiny_vae_folder, "flame", "--random-identities", "1", "--seed", "5",
                             "--pose-angles", "15", "-10", "0", "--flame", str(model))) == 0
    hint = torch.from_numpy(flame_normal_maps(load_flame(model), typed_face_parameters(-10, 15, 0))).float() / 255
    expected = tiny_control_pipeline.generate(random_identities(1, seed=5), 1, steps=2, width=SIZE, height=SIZE,
                                              seed=5, hint=prepare_normal_map(hint))
    got = np.asarray(Image.open(base / "flame" / "id000_00.png"))
    assert np.abs(got.astype(int) - expected[0].astype(int)).max() <= 1
    assert json.loads((base / "flame" / "settings.json").read_text())["pose"]["pose_hint"] == f"FLAME {model}"


@pytest.mark.parametrize("extra, message", [
    (["--pose-angles", "100", "0", "0"], "yaw 100.0 is outside -90..90 degrees"),
    (["--pose-angles", "0", "0", "nan"], "roll nan is outside"),
    (["--pose-angles", "0", "0", "0", "--normal-map", "x.png"], "pass one of them"),
    (["--flame", "generic_model.pkl"], "--flame renders the hint of --pose-angles"),
    (["--pose-angles", "0", "0", "0", "--flame", "nowhere.pkl"], "no such file"),
    (["--pose-angles", "0", "0", "0", "--pose-angles", "1", "0", "0"], "normal_map has a batch of 2 but"),
])
def test_refusals(base, tiny_vae_folder, capsys, extra, message):
    assert cli_main(args_for(base, tiny_vae_folder, "refused", "--random-identities", "3", *extra)) == 2
    assert message in capsys.readouterr().err
    assert not (base / "refused").exists()
