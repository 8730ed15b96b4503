"""Side-by-side pose hints for docs/: the generic head, the one it replaced, and (with your FLAME file) FLAME's.

Rows: the generic head (this checkout), the previous generic head (the pack's code at ``--old-revision``, taken from
git: ``git archive`` of its ``arc2face_core`` into a temporary folder, imported beside this one), and FLAME's head by
the pack's FLAME path when ``--flame generic_model.pkl`` is given (FLAME is licence-gated: the pack never ships it,
so the picture in docs/ has no FLAME row; run this with your file to add it). Columns: typed poses (yaw, pitch,
roll), the last ones with an expression (jaw opening, eyelids), which the previous generic head ignored.

    python scripts/pose_head_pictures.py                         # writes docs/pose_generic_head.png
    python scripts/pose_head_pictures.py --flame ~/flame/generic_model.pkl --out flame_compare.png
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

OLD_REVISION = "afa2685"      # the last commit with the previous generic head (a face surface through 68 points)
POSES = (  # yaw, pitch, roll, jaw opening (rad), eyelids (left, right)
    (0.0, 0.0, 0.0, 0.0, (0.0, 0.0)),
    (30.0, 0.0, 0.0, 0.0, (0.0, 0.0)),
    (-60.0, 0.0, 0.0, 0.0, (0.0, 0.0)),
    (0.0, 20.0, 0.0, 0.0, (0.0, 0.0)),
    (-25.0, -15.0, 0.0, 0.0, (0.0, 0.0)),
    (0.0, 0.0, 10.0, 0.0, (0.0, 0.0)),
    (0.0, 0.0, 0.0, 0.3, (0.0, 0.0)),
    (20.0, 0.0, 0.0, 0.15, (1.0, 1.0)),
)
CELL = 256
LABEL = 18


def expression(jaw: float, eyelids) -> "torch.Tensor":  # noqa: F821
    from arc2face_core.expression.vectors import make_expression

    return make_expression(jaw, tuple(eyelids))


def new_row() -> list[np.ndarray]:
    from arc2face_core.pose.flame_hint import typed_face_parameters
    from arc2face_core.pose.render import generic_normal_maps

    return [generic_normal_maps(typed_face_parameters(pitch, yaw, roll, expression(jaw, lids)), CELL)[0]
            for yaw, pitch, roll, jaw, lids in POSES]


def old_row(revision: str) -> list[np.ndarray]:
    folder = Path(tempfile.mkdtemp(prefix="arc2face_old_"))
    archive = subprocess.run(["git", "-C", str(REPO), "archive", revision, "arc2face_core"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    (folder / "arc2face_core").rename(folder / "arc2face_core_old")
    sys.path.insert(0, str(folder))
    render = importlib.import_module("arc2face_core_old.pose.render")
    head_pose = importlib.import_module("arc2face_core_old.faces.head_pose")
    return [render.render_generic_head(None, head_pose.rotation_from_angles(pitch, yaw, roll), CELL,
                                       roll_in_frame=True).image for yaw, pitch, roll, _, _ in POSES]


def flame_row(path: Path) -> list[np.ndarray]:
    from arc2face_core.pose.flame import load_flame
    from arc2face_core.pose.flame_hint import flame_normal_maps, typed_face_parameters

    flame = load_flame(path)
    return [flame_normal_maps(flame, typed_face_parameters(pitch, yaw, roll, expression(jaw, lids)), CELL)[0]
            for yaw, pitch, roll, jaw, lids in POSES]


def caption(yaw, pitch, roll, jaw, lids) -> str:
    text = f"yaw {yaw:g} pitch {pitch:g} roll {roll:g}"
    if jaw or any(lids):
        text += f" | jaw {jaw:g} lids {lids[0]:g}"
    return text


def sheet(rows: list[tuple[str, list[np.ndarray]]]) -> Image.Image:
    width, height = CELL * len(POSES), (CELL + LABEL) * len(rows) + LABEL
    out = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(out)
    for column, pose in enumerate(POSES):
        draw.text((column * CELL + 4, 3), caption(*pose), fill=(0, 0, 0))
    for index, (name, images) in enumerate(rows):
        top = LABEL + index * (CELL + LABEL)
        draw.text((4, top + 3), name, fill=(0, 0, 0))
        for column, image in enumerate(images):
            out.paste(Image.fromarray(image), (column * CELL, top + LABEL))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flame", type=Path, default=None, help="FLAME 2020's generic_model.pkl: adds FLAME's row")
    parser.add_argument("--old-revision", default=OLD_REVISION, help="git revision of the previous generic head")
    parser.add_argument("--no-old", action="store_true", help="leave out the previous generic head")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "pose_generic_head.png")
    args = parser.parse_args(argv)

    rows = [("generic head (this checkout)", new_row())]
    if not args.no_old:
        rows.append((f"previous generic head ({args.old_revision}; no expression)", old_row(args.old_revision)))
    if args.flame is not None:
        rows.append((f"FLAME ({args.flame.name}), the pack's FLAME path", flame_row(args.flame)))
    else:
        print("No --flame file: the picture has no FLAME row (FLAME is licence-gated; pass your generic_model.pkl).")
    sheet(rows).save(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
