"""The dataset's run log, ``runs.jsonl``: one line per run (or shard, or Ray job) that made batches, with its speed.

Timings differ from run to run, so they stay out of the manifest (whose bytes a restart reproduces); the report reads
them from here. Each line is appended with one ``write`` on a file opened for appending, so runs ending at once on
one machine do not mix their lines.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from .progress import RunStats

RUNS_FILE = "runs.jsonl"


def record_run(out: Path, stats: RunStats, label: str, device: str, dtype: str) -> None:
    if not stats.batches:
        return
    line = {"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": socket.gethostname(), "run": label,
            "device": device, "dtype": dtype, "batches": stats.batches, "images_generated": stats.generated,
            "seconds": round(stats.seconds, 6),
            "images_per_second": round(stats.generated / stats.seconds, 4) if stats.seconds > 0 else None}
    handle = os.open(out / RUNS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(handle, (json.dumps(line) + "\n").encode())
    finally:
        os.close(handle)


def read_runs(out: Path) -> list[dict]:
    """The recorded runs (unreadable lines, e.g. of a run killed while writing, are skipped)."""
    path = out / RUNS_FILE
    if not path.is_file():
        return []
    runs = []
    for line in path.read_text().splitlines():
        try:
            run = json.loads(line)
        except ValueError:
            continue
        if isinstance(run, dict):
            runs.append(run)
    return runs
