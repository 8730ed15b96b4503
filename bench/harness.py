"""What every benchmark here shares: fresh processes, paired runs, the machine's description, RESULTS.md sections.

A figure compares the pack with the library a user would use instead. Each side runs in its own fresh Python
process (so imports, peak memory and file mapping are its own); a *pair* is one run of each side, back to back, the
order alternating from pair to pair; a warm-up pair first puts the files into the page cache and is not counted.
Reported: each side's median and the median of the per-pair ratios (pack / baseline), over 5 pairs by default.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "RESULTS.md"
PACKAGES = ("torch", "diffusers", "transformers", "accelerate", "safetensors", "numpy")


# ---- inside a measured (child) process ----------------------------------------------------------------------------

def peak_rss_mib() -> float:
    """The process's peak resident memory so far (Linux reports ru_maxrss in KiB): file pages it mapped and touched
    count too, so a memory-mapped checkpoint counts as much as a copied one once it is used."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Clock:
    """Wall and CPU time since it was made, read at named marks."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), cpu_seconds()
        self.marks: dict[str, float] = {}

    def mark(self, name: str) -> None:
        self.marks[f"{name}_s"] = time.perf_counter() - self.wall
        self.marks[f"{name}_cpu_s"] = cpu_seconds() - self.cpu


def emit(result: dict) -> None:
    """The child's answer: one JSON line, the last thing it prints."""
    print(json.dumps(result), flush=True)


# ---- in the parent -------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def held(lock: Path | None) -> Iterator[None]:
    """Hold ``lock`` (flock, the lock `flock(1)` takes) for the whole measurement, so no other heavy job shares the
    machine's memory meanwhile; nothing when ``lock`` is None."""
    if lock is None:
        yield
        return
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def run_child(script: Path, args: Sequence[str], timeout: float = 1800) -> dict:
    """Run ``script --child ...`` in a fresh interpreter and return its JSON answer (its last stdout line)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=REPO)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{script.name} {' '.join(args)} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1])


@dataclass
class Pairs:
    """The runs of one comparison: ``pack[i]`` and ``baseline[i]`` form pair i."""

    pack: list[dict] = field(default_factory=list)
    baseline: list[dict] = field(default_factory=list)
    load_average: list[tuple[float, float, float]] = field(default_factory=list)

    def median(self, side: str, key: str) -> float:
        return statistics.median(run[key] for run in getattr(self, side))

    def ratio(self, key: str) -> float:
        """The median over pairs of pack / baseline."""
        return statistics.median(p[key] / b[key] for p, b in zip(self.pack, self.baseline))


def paired_runs(run_side: Callable[[str], dict], pairs: int, log=print) -> Pairs:
    """One uncounted warm-up pair, then ``pairs`` pairs; within pair i the side that runs first alternates."""
    out = Pairs()
    for index in range(-1, pairs):
        order = ("pack", "baseline") if index % 2 == 0 else ("baseline", "pack")
        load = os.getloadavg()
        runs = {side: run_side(side) for side in order}
        if index < 0:
            log(f"  warm-up pair done (load average {load[0]:.1f})")
            continue
        out.pack.append(runs["pack"])
        out.baseline.append(runs["baseline"])
        out.load_average.append(load)
        log(f"  pair {index + 1}/{pairs} ({' first, '.join(order)} second; load average {load[0]:.1f}) done")
    return out


# ---- describing the run ---------------------------------------------------------------------------------------------

def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _memory_gib() -> str:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2 ** 20:.0f} GiB"
    return "unknown"


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO).stdout.strip()

    commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "arc2face_core", "bench",
                ":(exclude)bench/RESULTS.md")
    return commit + (" + uncommitted changes to arc2face_core/ or bench/" if dirty else "")


def environment(extra: dict | None = None) -> dict:
    import torch

    info = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": f"{_cpu_model()}, {os.cpu_count()} logical cores, {_memory_gib()} RAM, "
                   f"{platform.system()} {platform.release()}",
        "torch threads": str(torch.get_num_threads()),
        "python": platform.python_version(),
        "versions": ", ".join(f"{p} {_version(p)}" for p in PACKAGES),
        "commit": git_commit(),
    }
    info.update(extra or {})
    return info


def command_line() -> str:
    script = Path(sys.argv[0]).resolve()
    with contextlib.suppress(ValueError):
        script = script.relative_to(REPO)
    return " ".join(["python", str(script), *sys.argv[1:]])


# ---- RESULTS.md ------------------------------------------------------------------------------------------------------

def write_section(name: str, body: str, path: Path = RESULTS) -> None:
    """Replace the section ``name`` of RESULTS.md (between its begin/end markers) with ``body``, or append it."""
    begin, end = f"<!-- begin {name}: written by bench/, do not edit -->", f"<!-- end {name} -->"
    text = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmark results\n"
    block = f"{begin}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")


def environment_lines(info: dict) -> str:
    return "\n".join(f"- {key}: {value}" for key, value in info.items())


def fmt(value: float, unit: str) -> str:
    if unit == "MiB":
        return f"{value:.0f}"
    return f"{value:.3g}" if value < 10 else f"{value:.1f}"


def table(rows: Sequence[tuple[str, str, str, float, float, float]]) -> str:
    """rows of (figure, unit, baseline name, pack median, baseline median, ratio) as a markdown table."""
    lines = ["| figure | pack | baseline | pack / baseline (median of pairs) |", "|---|---:|---:|---:|"]
    for figure, unit, baseline, pack_value, base_value, ratio in rows:
        lines.append(f"| {figure} | {fmt(pack_value, unit)} {unit} | {fmt(base_value, unit)} {unit} ({baseline}) "
                     f"| **{ratio:.2f}x** |")
    return "\n".join(lines)


def raw_runs(pairs: Pairs, keys: Sequence[str]) -> str:
    """Every pair's numbers, for the record."""
    head = "| pair | load avg | " + " | ".join(f"{k} pack / base" for k in keys) + " |"
    lines = [head, "|---|---:|" + "---:|" * len(keys)]
    for i, (p, b, load) in enumerate(zip(pairs.pack, pairs.baseline, pairs.load_average), 1):
        cells = " | ".join(f"{p[k]:.3g} / {b[k]:.3g}" for k in keys)
        lines.append(f"| {i} | {load[0]:.1f} | {cells} |")
    return "\n".join(lines)
