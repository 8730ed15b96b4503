"""The dataset report's pictures, drawn with Pillow and numpy (no plotting library to install): histograms side by
side in one PNG, and a contact sheet of identities x their images.

A histogram panel is ``PANEL`` pixels; its bars fill the plot box ``plot_box(i)`` of panel ``i``: bin ``b`` of ``B``
spans the box's columns ``[left + b * width / B, left + (b + 1) * width / B)`` and rises ``count / largest count``
of the box's height from its bottom edge, in ``BAR`` colour. Values outside the panel's range are counted in its end
bins (the range is chosen to hold them; this only guards against rounding).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PANEL = (480, 300)                  # width, height of one histogram panel
LEFT, RIGHT, TOP, BOTTOM = 60, 16, 34, 46
BAR = (66, 106, 178)
MARK = (205, 40, 40)
INK = (30, 30, 30)
GRID = (225, 225, 225)
PAPER = (255, 255, 255)
TILE = 112
LABEL_WIDTH = 150
DROPPED = (200, 200, 200)


@dataclass(frozen=True)
class Histogram:
    title: str
    values: np.ndarray
    low: float
    high: float
    bins: int = 40
    xlabel: str = ""
    marks: tuple[tuple[float, str], ...] = ()    # vertical lines: (x, label)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:                              # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def plot_box(index: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of panel ``index``'s plot area, right and bottom exclusive."""
    x = index * PANEL[0]
    return x + LEFT, TOP, x + PANEL[0] - RIGHT, PANEL[1] - BOTTOM


def value_range(values: np.ndarray, step: float = 0.05, floor: float = -1.0, ceiling: float = 1.0,
                least: float = 0.1) -> tuple[float, float]:
    """A range on multiples of ``step`` holding ``values`` (at least ``least`` wide, within [floor, ceiling])."""
    if values.size == 0:
        return floor, ceiling
    low = max(floor, np.floor(values.min() / step) * step)
    high = min(ceiling, np.ceil(values.max() / step) * step)
    if high - low < least:
        middle = (high + low) / 2
        low, high = max(floor, middle - least / 2), min(ceiling, middle + least / 2)
    return float(low), float(high)


def _tick(value: float) -> str:
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _draw_panel(draw: ImageDraw.ImageDraw, index: int, panel: Histogram) -> None:
    left, top, right, bottom = plot_box(index)
    small, title = _font(11), _font(13)
    draw.text((index * PANEL[0] + LEFT, 8), panel.title, fill=INK, font=title)
    values = np.clip(np.asarray(panel.values, dtype=np.float64), panel.low, panel.high)
    counts, _ = np.histogram(values, bins=panel.bins, range=(panel.low, panel.high))
    largest = int(counts.max()) if counts.size and counts.max() > 0 else 1
    width, height = right - left, bottom - top
    for fraction in (0.25, 0.5, 0.75, 1.0):
        y = bottom - round(fraction * height)
        draw.line([(left, y), (right - 1, y)], fill=GRID)
    for b, count in enumerate(counts):
        x0 = left + (b * width) // panel.bins
        x1 = left + ((b + 1) * width) // panel.bins
        rise = round(count / largest * height)
        if rise:
            draw.rectangle([x0, bottom - rise, max(x0, x1 - 2), bottom - 1], fill=BAR)
    draw.line([(left, top), (left, bottom), (right, bottom)], fill=INK)
    for k in range(5):
        value = panel.low + k * (panel.high - panel.low) / 4
        x = left + round(k * width / 4)
        draw.line([(x, bottom), (x, bottom + 4)], fill=INK)
        draw.text((x, bottom + 6), _tick(value), fill=INK, font=small, anchor="ma")
    for count in sorted({0, largest // 2, largest} if largest % 2 == 0 else {0, largest}):
        y = bottom - round(count / largest * height)
        draw.text((left - 6, y), f"{count:,}", fill=INK, font=small, anchor="rm")
    draw.text(((left + right) // 2, PANEL[1] - 14), panel.xlabel, fill=INK, font=small, anchor="mm")
    for value, label in panel.marks:
        if panel.low <= value <= panel.high:
            x = left + round((value - panel.low) / (panel.high - panel.low) * width)
            draw.line([(x, top), (x, bottom - 1)], fill=MARK, width=1)
            draw.text((x + 3, top + 2), label, fill=MARK, font=small)


def histograms(panels: Sequence[Histogram]) -> Image.Image:
    """Panels side by side, each ``PANEL`` pixels (see the module docstring)."""
    image = Image.new("RGB", (PANEL[0] * len(panels), PANEL[1]), PAPER)
    draw = ImageDraw.Draw(image)
    for index, panel in enumerate(panels):
        _draw_panel(draw, index, panel)
    return image


def contact_sheet(rows: Sequence[tuple[Sequence[str], Sequence[Optional[Image.Image]]]]) -> Image.Image:
    """One row per identity: its label lines, then its images as ``TILE`` x ``TILE`` tiles (None: a dropped image,
    drawn grey and crossed out)."""
    columns = max((len(images) for _, images in rows), default=1)
    sheet = Image.new("RGB", (LABEL_WIDTH + columns * (TILE + 4), max(1, len(rows)) * (TILE + 4)), PAPER)
    draw = ImageDraw.Draw(sheet)
    font = _font(12)
    for r, (lines, images) in enumerate(rows):
        y = r * (TILE + 4) + 2
        for k, line in enumerate(lines):
            draw.text((6, y + 4 + 16 * k), line, fill=INK, font=font)
        for c, image in enumerate(images):
            x = LABEL_WIDTH + c * (TILE + 4)
            if image is None:
                draw.rectangle([x, y, x + TILE - 1, y + TILE - 1], fill=DROPPED)
                draw.line([(x, y), (x + TILE - 1, y + TILE - 1)], fill=MARK, width=2)
                draw.line([(x, y + TILE - 1), (x + TILE - 1, y)], fill=MARK, width=2)
            else:
                sheet.paste(image.convert("RGB").resize((TILE, TILE), Image.Resampling.LANCZOS), (x, y))
    return sheet
