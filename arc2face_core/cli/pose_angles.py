"""Pose hints from typed angles for the command line: ``--pose-angles YAW PITCH ROLL`` (and ``--flame``).

``--pose-angles`` renders the hint the way Normal Map from Angles does: the generic whole head, or with ``--flame``
FLAME's head (the reference's recipe), placed as FFHQ alignment would place a photo of it. Repeat it once per identity
to pose each its own way, as ``--normal-map``. Angles follow insightface's convention (degrees; yaw > 0 turns the
nose to image right, pitch > 0 lifts the chin, roll > 0 tilts clockwise) within the node's ranges.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from ..errors import InvalidInputError

ANGLE_LIMITS = {"yaw": 90.0, "pitch": 60.0, "roll": 45.0}   # as the node's widgets


def add_pose_angle_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of this module, as their own group of ``parser``."""
    group = parser.add_argument_group("pose from angles (instead of --normal-map)")
    group.add_argument("--pose-angles", action="append", nargs=3, type=float, metavar=("YAW", "PITCH", "ROLL"),
                       help="a head pose in degrees (yaw > 0: nose to image right, pitch > 0: chin up, roll > 0: "
                            "clockwise) rendered as a whole-head normal map; repeat it once per identity")
    group.add_argument("--flame", type=Path, default=None, metavar="PKL",
                       help="FLAME 2020's generic_model.pkl (flame.is.tue.mpg.de; SMIRK's l_eyelid.npy and "
                            "r_eyelid.npy beside it are used): --pose-angles then renders FLAME's head, as the "
                            "reference's hints were made (default: a generic head built in code)")


def angle_hints(args: argparse.Namespace) -> tuple[torch.Tensor | None, dict]:
    """Hints [K, 512, 512, 3] in 0..1 from ``--pose-angles`` (None without it) and what made them (settings.json)."""
    angles = getattr(args, "pose_angles", None)
    flame_path = getattr(args, "flame", None)
    if not angles:
        if flame_path is not None:
            raise InvalidInputError("--flame renders the hint of --pose-angles: pass --pose-angles too")
        return None, {}
    if getattr(args, "normal_map", None):
        raise InvalidInputError("--pose-angles and --normal-map both pose the faces: pass one of them")
    for yaw, pitch, roll in angles:
        for name, value in (("yaw", yaw), ("pitch", pitch), ("roll", roll)):
            limit = ANGLE_LIMITS[name]
            if not np.isfinite(value) or abs(value) > limit:
                raise InvalidInputError(f"--pose-angles: {name} {value} is outside -{limit:g}..{limit:g} degrees")
    if flame_path is not None:
        from ..pose.flame import load_flame
        from ..pose.flame_hint import flame_normal_maps, typed_face_parameters

        if not Path(flame_path).is_file():
            raise InvalidInputError(f"--flame {flame_path}: no such file (FLAME 2020's generic_model.pkl from "
                                    "flame.is.tue.mpg.de)")
        flame = load_flame(flame_path)
        hints = np.concatenate([flame_normal_maps(flame, typed_face_parameters(pitch, yaw, roll))
                                for yaw, pitch, roll in angles])
        source = f"FLAME {flame_path}"
    else:
        from ..faces.head_pose import rotation_from_angles
        from ..pose.render import render_generic_head

        hints = np.stack([render_generic_head(None, rotation_from_angles(pitch, yaw, roll), roll_in_frame=True).image
                          for yaw, pitch, roll in angles])
        source = "generic head"
    info = {"pose_angles": [[float(v) for v in a] for a in angles], "pose_hint": source}
    return torch.from_numpy(hints).float() / 255, info
