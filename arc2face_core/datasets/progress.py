"""The progress line of a dataset run (images done, rate, ETA) and its summary at the end."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from typing import Optional, TextIO

LOG_EVERY_S = 30.0          # without a terminal (a Slurm log), one line this often instead of a live bar


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class ProgressBar:
    """``label  [#####.....]  120/400 images  3.1 images/s  ETA 1:30``, redrawn in place on a terminal. ``unit``
    names what is counted (images for a dataset, denoising steps for ``generate``)."""

    def __init__(self, total: int, label: str = "dataset", quiet: bool = False, stream: Optional[TextIO] = None,
                 unit: str = "images"):
        self.total, self.label, self.quiet, self.unit = total, label, quiet, unit
        self.stream = stream or sys.stderr
        self.live = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.done, self.start, self._logged = 0, time.perf_counter(), -math.inf

    def line(self) -> str:
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else math.inf
        filled = int(20 * self.done / self.total) if self.total else 20
        return (f"{self.label} [{'#' * filled}{'.' * (20 - filled)}] {self.done}/{self.total} {self.unit}  "
                f"{rate:.2f} {self.unit}/s  elapsed {_clock(elapsed)}  ETA {_clock(eta)}")

    def set(self, done: int) -> None:
        self.done = min(done, self.total)
        if self.quiet:
            return
        now = time.perf_counter()
        last = self.done >= self.total
        if self.live:
            print("\r" + self.line(), end="\n" if last else "", file=self.stream, flush=True)
        elif last or now - self._logged >= LOG_EVERY_S:
            print(self.line(), file=self.stream, flush=True)
            self._logged = now

    def advance(self, count: int) -> None:
        self.set(self.done + count)


@dataclass
class RunStats:
    """What one run (or shard) did."""

    batches: int = 0
    generated: int = 0              # images generated, redraws included
    seconds: float = 0.0
    rows: list[dict] = field(default_factory=list)

    def merge(self, other: "RunStats") -> "RunStats":
        return RunStats(self.batches + other.batches, self.generated + other.generated,
                        max(self.seconds, other.seconds), self.rows + other.rows)


def summarize(rows: list[dict]) -> dict:
    """Counts and similarity statistics of manifest rows."""
    kept = [r for r in rows if not r["dropped"]]
    faces = [r["similarity"] for r in kept if r["similarity"] is not None and r["similarity"] != -1.0]
    summary = {"images": len(kept), "dropped": len(rows) - len(kept),
               "redrawn": sum(1 for r in rows if r["attempt"] > 0),
               "no_face": sum(1 for r in kept if r["similarity"] == -1.0)}
    if faces:
        mean = sum(faces) / len(faces)
        summary.update(similarity_mean=mean,
                       similarity_std=math.sqrt(sum((s - mean) ** 2 for s in faces) / len(faces)),
                       similarity_min=min(faces), similarity_max=max(faces))
    return summary


def format_summary(stats: RunStats, dataset_rows: Optional[list[dict]]) -> str:
    rate = stats.generated / stats.seconds if stats.seconds > 0 else 0.0
    lines = [f"this run: {stats.batches} batches, {stats.generated} images generated in {_clock(stats.seconds)} "
             f"({rate:.2f} images/s)"]
    for title, rows in (("this run", stats.rows), ("dataset", dataset_rows)):
        if not rows:
            continue
        s = summarize(rows)
        text = (f"{title}: {s['images']} images kept, {s['redrawn']} redrawn, {s['dropped']} dropped, "
                f"{s['no_face']} kept without a face")
        if "similarity_mean" in s:
            text += (f"; identity similarity mean {s['similarity_mean']:.3f} ± {s['similarity_std']:.3f} "
                     f"(min {s['similarity_min']:.3f}, max {s['similarity_max']:.3f})")
        lines.append(text)
    return "\n".join(lines)
