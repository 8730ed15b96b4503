"""Draw the template browser's thumbnail of every shipped workflow: a picture of its node graph, not of an output.

ComfyUI's template browser shows ``<workflow>.jpg`` beside ``example_workflows/<workflow>.json`` (both frontends
tested build the URL ``/api/workflow_templates/<pack folder>/<workflow>.jpg``). No model output can be made where the
pack is built, so each thumbnail shows what the workflow takes and does: its title, the Note's first sentence, and
its graph (boxes where the nodes are, coloured by role, links coloured by type), labelled "node graph". The JPEG's
comment records the SHA-256 of the workflow file it was drawn from, so a test can tell a stale thumbnail. The graph
fills the top (frontend 1.58.1 lays a "Node graph" badge over the top-left corner and both frontends print the name
under the card), the Note's sentence and the legend the bottom.

    python scripts/build_thumbnails.py
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "example_workflows"
SIZE = 512
MARGIN, GRAPH_BOTTOM = 14, 392   # the graph panel: MARGIN..GRAPH_BOTTOM; below it the sentence and the legend
BACKGROUND, PANEL, TEXT, DIM = (24, 24, 28), (38, 38, 44), (236, 236, 240), (160, 160, 170)
ROLE_COLOURS = {"input": (52, 110, 190), "arc2face": (124, 72, 190), "loader": (46, 130, 96),
                "stock": (88, 88, 98), "output": (196, 120, 40)}
ROLE_NAMES = {"input": "photo in", "loader": "model files", "arc2face": "Arc2Face", "stock": "ComfyUI",
              "output": "images out"}
LINK_COLOURS = {"IMAGE": (100, 181, 246), "LATENT": (255, 156, 240), "CONDITIONING": (255, 170, 60),
                "MODEL": (180, 160, 255), "VAE": (255, 99, 99), "MASK": (129, 199, 132)}
COMMENT_PREFIX = "arc2face node-graph thumbnail of "


def role(node_type: str) -> str:
    if node_type == "LoadImage":
        return "input"
    if node_type in ("SaveImage", "PreviewImage", "PreviewAny"):
        return "output"
    if "Loader" in node_type:
        return "loader"
    return "arc2face" if node_type.startswith("Arc2Face") else "stock"


def workflow_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def what_it_does(note: str) -> str:
    """The Note's WHAT IT DOES line, up to its "-> outputs" part."""
    does = note.split("WHAT IT DOES: ", 1)[-1].split("\n", 1)[0]
    return does.split(" -> ")[0].rstrip(".")


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int, lines: int) -> list[str]:
    out, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if draw.textlength(trial, font=font) <= width:
            line = trial
        else:
            out.append(line)
            line = word
    out.append(line)
    if len(out) > lines:
        out = out[:lines]
        out[-1] = out[-1].rstrip(",;:") + " …"
    return out


def _bezier(a: tuple[float, float], b: tuple[float, float], steps: int = 16) -> list[tuple[float, float]]:
    """LiteGraph's link shape: a cubic from a node's right edge to the next node's left edge."""
    dx = max(20.0, (b[0] - a[0]) * 0.5)
    c1, c2 = (a[0] + dx, a[1]), (b[0] - dx, b[1])
    points = []
    for i in range(steps + 1):
        t = i / steps
        points.append(tuple((1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t ** 2 * p2 + t ** 3 * p3
                            for p0, p1, p2, p3 in zip(a, c1, c2, b)))
    return points


def draw_thumbnail(name: str, workflow: dict, object_info: dict) -> Image.Image:
    image = Image.new("RGB", (SIZE, SIZE), BACKGROUND)
    draw = ImageDraw.Draw(image)
    text_font, small = _font(15), _font(12)
    note = next((n["widgets_values"][0] for n in workflow["nodes"] if n["type"] == "Note"), "")
    for row, line in enumerate(_wrap(draw, what_it_does(note), text_font, SIZE - 2 * MARGIN, 3)):
        draw.text((MARGIN, GRAPH_BOTTOM + 8 + row * 18), line, fill=TEXT, font=text_font)

    nodes = [n for n in workflow["nodes"] if n["type"] != "Note"]
    x0 = min(n["pos"][0] for n in nodes)
    y0 = min(n["pos"][1] - 30 for n in nodes)
    x1 = max(n["pos"][0] + n["size"][0] for n in nodes)
    y1 = max(n["pos"][1] + n["size"][1] for n in nodes)
    area = (MARGIN, MARGIN, SIZE - MARGIN, GRAPH_BOTTOM)
    scale = min((area[2] - area[0]) / (x1 - x0), (area[3] - area[1]) / (y1 - y0))
    ox = area[0] + ((area[2] - area[0]) - (x1 - x0) * scale) / 2 - x0 * scale
    oy = area[1] + ((area[3] - area[1]) - (y1 - y0) * scale) / 2 - y0 * scale
    draw.rounded_rectangle(area, radius=8, fill=PANEL)

    def box(node: dict) -> tuple[float, float, float, float]:
        x, y = node["pos"]
        w, h = node["size"]
        return ox + x * scale, oy + (y - 30) * scale, ox + (x + w) * scale, oy + (y + h) * scale

    by_id = {n["id"]: n for n in nodes}
    for _, src, _, dst, _, link_type in workflow["links"]:
        a, b = box(by_id[src]), box(by_id[dst])
        draw.line(_bezier((a[2], (a[1] + a[3]) / 2), (b[0], (b[1] + b[3]) / 2)),
                  fill=LINK_COLOURS.get(link_type, (200, 200, 200)), width=2)
    for node in nodes:
        left, top, right, bottom = box(node)
        draw.rounded_rectangle((left, top, right, bottom), radius=3, fill=(48, 48, 54),
                               outline=ROLE_COLOURS[role(node["type"])], width=2)
        draw.rectangle((left + 2, top + 2, right - 2, top + max(4.0, 30 * scale)), fill=ROLE_COLOURS[role(node["type"])])
        label = node.get("title") or object_info.get(node["type"], {}).get("display_name", node["type"])
        lines = _wrap(draw, label, small, int(right - left) - 6, 3)
        if len(lines) * 13 + 8 <= bottom - top:
            for row, line in enumerate(lines):
                draw.text((left + 4, top + 4 + row * 13), line, fill=TEXT, font=small)

    x = MARGIN
    for key, colour in ROLE_COLOURS.items():
        draw.rectangle((x, SIZE - 36, x + 10, SIZE - 26), fill=colour)
        draw.text((x + 14, SIZE - 38), ROLE_NAMES[key], fill=DIM, font=small)
        x += 18 + draw.textlength(ROLE_NAMES[key], font=small) + 10
    draw.text((MARGIN, SIZE - 20), "node graph of the template (not a generated image)", fill=DIM, font=small)
    return image


def jpeg_bytes(image: Image.Image, digest: str, name: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=88, comment=f"{COMMENT_PREFIX}{name}.json sha256={digest}".encode())
    return buffer.getvalue()


def main() -> None:
    object_info = json.loads((REPO / "tests" / "data" / "object_info.json").read_text())
    for path in sorted(WORKFLOWS.glob("*.json")):
        image = draw_thumbnail(path.stem, json.loads(path.read_text()), object_info)
        path.with_suffix(".jpg").write_bytes(jpeg_bytes(image, workflow_digest(path), path.stem))
        print(f"wrote example_workflows/{path.stem}.jpg")
    stale = {p.stem for p in WORKFLOWS.glob("*.jpg")} - {p.stem for p in WORKFLOWS.glob("*.json")}
    if stale:
        sys.exit(f"thumbnails without a workflow: {sorted(stale)}")


if __name__ == "__main__":
    main()
