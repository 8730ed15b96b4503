"""Draw the pack's icon for the Comfy Registry (pyproject's [tool.comfy] Icon): docs/icon.png, 256x256.

An abstract mark, not a face photo: a head outline whose inner ring stands for the 512-d ArcFace identity vector.

    python scripts/build_icon.py
"""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
ICON = REPO / "docs" / "icon.png"
SIZE = 256


def draw_icon() -> Image.Image:
    scale = 4   # drawn large, then reduced: smooth edges without a font or an anti-aliasing library
    big = SIZE * scale
    image = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle((0, 0, big - 1, big - 1), radius=56 * scale, fill=(38, 30, 62, 255))
    cx, cy = big / 2, big * 0.47
    head = (cx - 70 * scale, cy - 90 * scale, cx + 70 * scale, cy + 90 * scale)
    draw.ellipse(head, outline=(196, 168, 255, 255), width=10 * scale)
    for k in range(32):   # the identity vector: 32 spokes of varying length around the face
        angle = 2 * math.pi * k / 32
        length = (22 + 16 * (0.5 + 0.5 * math.sin(5 * angle + 1.3))) * scale
        inner = 28 * scale
        x0, y0 = cx + inner * math.cos(angle), cy + inner * math.sin(angle)
        x1, y1 = cx + (inner + length) * math.cos(angle), cy + (inner + length) * math.sin(angle)
        draw.line((x0, y0, x1, y1), fill=(255, 170, 60, 255), width=4 * scale)
    draw.rounded_rectangle((cx - 60 * scale, big - 46 * scale, cx + 60 * scale, big - 30 * scale),
                           radius=8 * scale, fill=(100, 181, 246, 255))
    return image.resize((SIZE, SIZE), Image.LANCZOS)


def main() -> None:
    ICON.parent.mkdir(exist_ok=True)
    draw_icon().save(ICON, optimize=True)
    print(f"wrote {ICON.relative_to(REPO)}")


if __name__ == "__main__":
    main()
