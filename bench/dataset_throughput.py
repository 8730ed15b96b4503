"""Dataset throughput: the ``dataset`` command's speed options against its default, images per second.

    python bench/dataset_throughput.py --random-models /work/bench-data/dataset --lock /work/locks/heavy.lock \\
        --size 256 --steps 4 --variants channels-last compile bf16 fp16

Each variant is compared with the default settings (fp32 on the CPU, fp16 on a GPU; no ``--channels-last``, no
``--compile``) in pairs, as ``harness`` pairs runs: each run a fresh process making a fresh dataset of the same
seeds, the two sides of a pair back to back, the side that goes first alternating, one uncounted warm-up pair, and
the ratio is the median of the per-pair ratios (variant / default; higher is faster). A run makes ``--identities``
batches of ``--ids-per-batch`` x ``--images-per-id`` images, the identity check included as the command does it; its
figures:

* images per second after the first batch: the batch's images over the median time of the batches after the first
  (``DatasetMaker.make_batch``: generation, decoding and the identity check; the PNGs are written meanwhile),
* the first batch's seconds (where ``--compile`` compiles) and the run's peak resident memory.

Both sides' images are compared (mean absolute difference in 0..255 levels): a speed option must not change the
pictures beyond rounding. ``--random-models DIR`` writes (once) and uses full-size random Arc2Face weights and the
tests' tiny rigged face models; ``--models`` / ``--vae`` use real files. ``--sampler-identities N`` times the identity
sampler instead (printed, not written).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import data as bench_data  # noqa: E402
from bench.harness import (  # noqa: E402
    Pairs,
    command_line,
    emit,
    environment,
    environment_lines,
    held,
    paired_runs,
    peak_rss_mib,
    run_child,
    write_section,
)

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).resolve()
VARIANTS = {"channels-last": {"channels_last": True}, "compile": {"compile": True}, "bf16": {"dtype": "bf16"},
            "fp16": {"dtype": "fp16"}, "default": {}}
DEFAULT_LIMIT_S = 3600.0


def child_run(args: argparse.Namespace) -> dict:
    """One dataset made in this process with the options of variant ``args.child``; the generation loop's own batch times."""
    from arc2face_core.datasets import command
    from arc2face_core.datasets.config import DatasetConfig

    config = DatasetConfig(out=args.out, models=args.models, vae=args.vae, identities=args.identities,
                           images_per_id=args.images_per_id, seed=0, ids_per_batch=args.ids_per_batch,
                           steps=args.steps, width=args.size, height=args.size, device=args.device,
                           score=not args.no_similarity, quiet=True, **VARIANTS[args.child])
    batch_seconds: list[float] = []
    real = command.load_maker

    def timed_maker(*a, **k):   # model loading excluded: only the batches are timed
        maker = real(*a, **k)
        make_batch = maker.make_batch

        def timed(batch):
            start = time.perf_counter()
            result = make_batch(batch)
            batch_seconds.append(time.perf_counter() - start)
            return result

        maker.make_batch = timed
        return maker

    command.load_maker = timed_maker
    command.make_dataset(config)
    images = args.ids_per_batch * args.images_per_id
    later = batch_seconds[1:] or batch_seconds
    return {"images_per_s": images / statistics.median(later), "first_batch_s": batch_seconds[0],
            "batch_s": statistics.median(later), "batches": len(batch_seconds), "peak_mib": peak_rss_mib()}


def mean_pixel_difference(a: Path, b: Path) -> float:
    import numpy as np
    from PIL import Image

    diffs = [np.abs(np.asarray(Image.open(p), dtype=np.float64) - np.asarray(Image.open(b / p.relative_to(a)),
                                                                             dtype=np.float64)).mean()
             for p in sorted(a.rglob("*.png"))]
    return float(max(diffs)) if diffs else float("nan")


def sampler_time(count: int) -> dict:
    import torch

    from arc2face_core.datasets.sampling import unique_identities

    device = "cuda" if torch.cuda.is_available() else "cpu"
    start = time.perf_counter()
    sampled = unique_identities(count, seed=0, device=device)
    return {"unique_identities": count, "device": device, "seconds": round(time.perf_counter() - start, 2),
            "rejected": sampled.rejected, "max_similarity": round(sampled.max_similarity, 4)}


def _child_args(args: argparse.Namespace, variant: str, out: Path) -> list[str]:
    passed = ["--models", str(args.models), "--vae", str(args.vae), "--device", args.device, "--size", str(args.size),
              "--steps", str(args.steps), "--identities", str(args.identities), "--images-per-id",
              str(args.images_per_id), "--ids-per-batch", str(args.ids_per_batch), "--child", variant, "--out",
              str(out)]
    return passed + (["--no-similarity"] if args.no_similarity else [])


def measure(args: argparse.Namespace, variant: str, work: Path, log) -> tuple[object, list[float]]:
    """Paired runs of ``variant`` against the default, and the image difference of each pair; (None, [seconds])
    when a run of the variant did not finish within its ``--limit``."""
    differences = []
    limit = args.limits.get(variant, DEFAULT_LIMIT_S)

    def run_side(side: str) -> dict:
        out = work / side / "faces"
        shutil.rmtree(out.parent, ignore_errors=True)
        result = run_child(SCRIPT, _child_args(args, variant if side == "pack" else "default", out),
                           timeout=limit if side == "pack" else DEFAULT_LIMIT_S)
        if (work / "pack" / "faces").is_dir() and (work / "baseline" / "faces").is_dir():
            differences.append(mean_pixel_difference(work / "baseline" / "faces", work / "pack" / "faces"))
            for gone in ("pack", "baseline"):
                shutil.rmtree(work / gone, ignore_errors=True)
        return result

    log(f"dataset throughput: {variant} against the default")
    try:
        return paired_runs(run_side, args.pairs, log), differences
    except subprocess.TimeoutExpired:
        log(f"  {variant}: a run did not finish within {limit:.0f} s")
        return None, [limit]


def _flag(variant: str) -> str:
    return {"bf16": "--dtype bf16", "fp16": "--dtype fp16"}.get(variant, "--" + variant)


def _limit(text: str) -> tuple[str, float]:
    variant, _, seconds = text.partition("=")
    if variant not in VARIANTS or not seconds:
        raise argparse.ArgumentTypeError(f"--limit VARIANT=SECONDS, VARIANT one of {sorted(VARIANTS)}; got {text!r}")
    return variant, float(seconds)


def section(args: argparse.Namespace, results: dict) -> str:
    lines = ["| option | default | with the option | option / default (median of pairs) | first batch, default / "
             "option | peak memory, default / option | largest mean pixel difference |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for variant, (pairs, differences) in results.items():
        if pairs is None:
            lines.append(f"| `{_flag(variant)}` | | no run finished within {differences[0]:.0f} s | | | | |")
            continue
        ratio = statistics.median(p["images_per_s"] / b["images_per_s"] for p, b in zip(pairs.pack, pairs.baseline))
        lines.append(
            f"| `{_flag(variant)}` | "
            f"{pairs.median('baseline', 'images_per_s'):.3g} img/s | {pairs.median('pack', 'images_per_s'):.3g} img/s "
            f"| **{ratio:.2f}x** | {pairs.median('baseline', 'first_batch_s'):.3g} s / "
            f"{pairs.median('pack', 'first_batch_s'):.3g} s | {pairs.median('baseline', 'peak_mib'):.0f} / "
            f"{pairs.median('pack', 'peak_mib'):.0f} MiB | {max(differences):.2f} |")
    info = dict(args.environment or environment())
    info.update({"device": args.device, "pairs": f"{args.pairs} per option (+1 warm-up), each run a fresh "
                        "process making a fresh dataset",
                        "dataset": f"{args.identities} batches of {args.ids_per_batch} x {args.images_per_id} images, "
                                   f"{args.size} px, {args.steps} steps, identity check "
                                   f"{'off' if args.no_similarity else 'on'}",
                        "files": "full-size random Arc2Face UNet and encoder, SD1.5-shaped VAE (fp16 files, loaded "
                                 "in the run's dtype), the tests' tiny face models" if args.random_models else
                        f"{args.models}, {args.vae}"})
    command = args.command or command_line()
    raw = ["| option | pair | load avg | img/s default / option | first batch s default / option |",
           "|---|---|---:|---:|---:|"]
    for variant, (pairs, _) in results.items():
        if pairs is None:
            continue
        for i, (p, b, load) in enumerate(zip(pairs.pack, pairs.baseline, pairs.load_average), 1):
            raw.append(f"| {variant} | {i} | {load[0]:.1f} | {b['images_per_s']:.3g} / {p['images_per_s']:.3g} | "
                       f"{b['first_batch_s']:.3g} / {p['first_batch_s']:.3g} |")
    return (f"## Dataset throughput\n\nThe `dataset` command's speed options against its default settings (fp32 "
            f"on the CPU), images per second of the generation loop after its first batch.\n\n```\n{command}"
            f"\n```\n\n" + "\n".join(lines) + f"\n\n{args.note}\n\n{environment_lines(info)}\n\n"
            "<details><summary>every pair</summary>\n\n" + "\n".join(raw) + "\n\n</details>\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path)
    parser.add_argument("--vae", type=Path)
    parser.add_argument("--random-models", type=Path, help="write (once) and use full-size random models here")
    parser.add_argument("--lock", type=Path, help="hold this flock file while measuring (the machine's heavy lock)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--identities", type=int, default=3, help="batches per run (one identity each by default)")
    parser.add_argument("--images-per-id", type=int, default=1)
    parser.add_argument("--ids-per-batch", type=int, default=1)
    parser.add_argument("--variants", nargs="+", default=["channels-last", "compile", "bf16", "fp16"],
                        choices=[v for v in VARIANTS if v != "default"])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--limit", type=_limit, action="append", default=[], metavar="VARIANT=SECONDS",
                        help=f"give up a variant whose run takes longer (default {DEFAULT_LIMIT_S:.0f} s), e.g. "
                             "fp16=300 on a CPU without fp16 kernels")
    parser.add_argument("--no-similarity", action="store_true")
    parser.add_argument("--note", default="", help="a sentence for RESULTS.md under the table")
    parser.add_argument("--no-write", action="store_true", help="print the section instead of writing RESULTS.md")
    parser.add_argument("--save", type=Path, help="also keep the measurements in this JSON file")
    parser.add_argument("--render", type=Path, help="write the section from a --save file (e.g. with a --note), "
                                                    "measuring nothing")
    parser.add_argument("--sampler-identities", type=int, help="time the identity sampler for N identities instead")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.limits = dict(args.limit)
    if args.sampler_identities:
        print(json.dumps(sampler_time(args.sampler_identities)))
        return
    if args.child:
        emit(child_run(args))
        return
    if args.render:
        saved = json.loads(args.render.read_text())
        for key in ("command", "environment", "device", "size", "steps", "identities", "ids_per_batch",
                    "images_per_id", "pairs", "no_similarity", "random_models", "models", "vae"):
            setattr(args, key, saved["args"][key])
        results = {v: (Pairs(**r["pairs"]) if r["pairs"] else None, r["differences"]) for v, r in saved["results"].items()}
        text = section(args, results)
        print(text) if args.no_write else write_section("dataset-throughput", text)
        return
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    with held(args.lock):
        if args.random_models:
            args.models, args.vae = bench_data.dataset_models(args.random_models)
        if args.models is None or args.vae is None:
            parser.error("give --models and --vae, or --random-models DIR")
        with tempfile.TemporaryDirectory() as work:
            results = {variant: measure(args, variant, Path(work) / variant, log) for variant in args.variants}
    args.command, args.environment = command_line(), None
    if args.save:
        kept = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                if k in ("command", "device", "size", "steps", "identities", "ids_per_batch", "images_per_id",
                         "pairs", "no_similarity", "random_models", "models", "vae")}
        kept["environment"] = environment()
        args.save.write_text(json.dumps({"args": kept, "results": {
            v: {"pairs": dataclasses.asdict(p) if p else None, "differences": d} for v, (p, d) in results.items()}}))
    text = section(args, results)
    print(text) if args.no_write else write_section("dataset-throughput", text)


if __name__ == "__main__":
    main()
