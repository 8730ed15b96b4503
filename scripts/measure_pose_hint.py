"""How close the pack's frontal generic-head hint is to an official example hint: silhouette IoU and normal angle.

The official Arc2Face repository shows five EMOCA/FLAME hints in its README's pose figure (``assets/controlnet.jpg``,
top row). That image is theirs: it is never committed here. Give its path (the whole figure, with ``--panel`` for
which of the five to crop; the second is the frontal one), or the path of one hint already cropped to a square:

    python scripts/measure_pose_hint.py controlnet.jpg --panel 2
    python scripts/measure_pose_hint.py frontal_hint.png

The hint is resized to 512 (LANCZOS). Silhouettes: pixels whose largest channel differs from the 127 grey by more
than ``--threshold`` (the figure is a JPEG; a normal of length about 1 always has a channel at least 0.57 from 0,
i.e. 73 levels from the grey). Normals: ``n = rgb / 255 * 2 - 1`` normalised; the angle is measured on the pixels
both silhouettes cover. The pack's hint is the frontal generic head (``render_generic_head()``), or with
``--yaw/--pitch/--roll`` a turned one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BACKGROUND = 127
PANEL_GREY_TOLERANCE = 6      # the figure's panel background is 127 +- JPEG noise; the page around it is white


def figure_panels(figure: np.ndarray) -> list[tuple[int, int, int, int]]:
    """(top, bottom, left, right) of the grey hint panels in the figure's top row, left to right (exclusive ends)."""
    grey = (np.abs(figure.astype(np.int16) - BACKGROUND) <= PANEL_GREY_TOLERANCE).all(-1)
    rows = np.flatnonzero(grey.mean(1) > 0.05)
    if not len(rows):
        raise SystemExit("No grey hint panel found in the figure.")
    top = rows[0]
    bottom = top + np.argmax(grey[top:].mean(1) <= 0.05)     # first row below the panels with (almost) no grey
    band = grey[top:top + 10].mean(0) > 0.5           # the panels' first rows are background (above the scalp)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], band.astype(np.int8), [0]])))
    return [(top, bottom, start, end) for start, end in zip(edges[::2], edges[1::2]) if end - start > 100]


def load_hint(path: Path, panel: int | None, size: int = 512) -> np.ndarray:
    image = np.asarray(Image.open(path).convert("RGB"))
    if panel is not None:
        panels = figure_panels(image)
        if not 1 <= panel <= len(panels):
            raise SystemExit(f"--panel {panel}: the figure shows {len(panels)} panels")
        top, bottom, left, right = panels[panel - 1]
        image = image[top:bottom, left:right]
    if abs(image.shape[0] - image.shape[1]) > 2:
        raise SystemExit(f"The hint is not square ({image.shape[1]}x{image.shape[0]}); pass --panel for the figure.")
    return np.asarray(Image.fromarray(image).resize((size, size), Image.LANCZOS))


def silhouette(image: np.ndarray, threshold: int) -> np.ndarray:
    return (np.abs(image.astype(np.int16) - BACKGROUND) > threshold).any(-1)


def normals(image: np.ndarray) -> np.ndarray:
    n = image.astype(np.float64) / 255 * 2 - 1
    return n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-9)


def compare(ours: np.ndarray, theirs: np.ndarray, threshold: int = 30) -> dict[str, float]:
    """Silhouette IoU and the mean and median angle (degrees) between the normals where both are covered."""
    a, b = silhouette(ours, threshold), silhouette(theirs, threshold)
    both = a & b
    cosine = np.clip((normals(ours)[both] * normals(theirs)[both]).sum(-1), -1.0, 1.0)
    angle = np.degrees(np.arccos(cosine))
    return {"iou": float(both.sum() / (a | b).sum()), "mean_angle": float(angle.mean()),
            "median_angle": float(np.median(angle)), "ours_cover": float(a.mean()), "theirs_cover": float(b.mean())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("image", type=Path, help="the official hint (a square crop) or the README figure (--panel)")
    parser.add_argument("--panel", type=int, default=None, help="which panel of the figure's top row (1-5)")
    parser.add_argument("--threshold", type=int, default=30, help="silhouette: levels away from 127 grey")
    parser.add_argument("--yaw", type=float, default=0.0)
    parser.add_argument("--pitch", type=float, default=0.0)
    parser.add_argument("--roll", type=float, default=0.0)
    parser.add_argument("--save", type=Path, default=None, help="write ours | theirs | overlap side by side here")
    args = parser.parse_args(argv)

    from arc2face_core.faces.head_pose import rotation_from_angles
    from arc2face_core.pose.render import render_generic_head

    theirs = load_hint(args.image, args.panel)
    ours = render_generic_head(None, rotation_from_angles(args.pitch, args.yaw, args.roll), roll_in_frame=True).image
    result = compare(ours, theirs, args.threshold)
    print(f"silhouette IoU {result['iou']:.3f}; angle between normals on the overlap: mean {result['mean_angle']:.1f} "
          f"deg, median {result['median_angle']:.1f} deg (cover: ours {result['ours_cover']:.3f}, theirs "
          f"{result['theirs_cover']:.3f})")
    if args.save is not None:
        a, b = silhouette(ours, args.threshold), silhouette(theirs, args.threshold)
        overlap = np.full(ours.shape, BACKGROUND, np.uint8)
        overlap[a & b] = (200, 200, 200)
        overlap[a & ~b] = (230, 60, 60)     # ours only: red
        overlap[~a & b] = (60, 60, 230)     # theirs only: blue
        Image.fromarray(np.concatenate([ours, theirs, overlap], 1)).save(args.save)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
