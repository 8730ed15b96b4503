"""Dataset sampling modes: images per second of ``python -m arc2face_core dataset`` in each sampling mode (the
25-step default, the LCM mode) and batch size, the similarity distribution each mode gives on the same identities,
and the identity sampler's time for N identities. A script, not a test: it reports, it asserts nothing. (The speed
options, --channels-last, --compile and the dtypes, are paired against the default by bench/dataset_throughput.py.)

    python bench/dataset_modes.py --models M --vae V --device cuda --size 512 --steps 25 --ids-per-batch 1 4
    python bench/dataset_modes.py --models M --vae V --modes default lcm \\
        --lora M/loras/lcm-lora-sdv1-5.safetensors --write            # the LCM mode against the default
    python bench/dataset_modes.py --random-models /tmp/arc2face_random ...   # full-size random weights

Each setting runs in a fresh process (no compile cache, no warm allocator carried over) and makes a fresh dataset;
the figure is generated images over the generation time the run reports (model loading excluded, the identity check
included unless ``--no-similarity``, the first batch's warm-up too: give enough identities). The same seeds, hence
the same identities, are used for every setting, so the work is the same. The LCM mode is SD1.5's LCM-LoRA
(``--lora``), the LCM scheduler, ``--lcm-steps`` steps (4) and CFG 1.0. With random weights (``--random-models``,
whose face models are rigged) the similarities are meaningless: only the images per second mean anything; with real
weights both are real figures. ``--write`` puts the table into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import data as bench_data  # noqa: E402


def one_setting(args: argparse.Namespace, mode: str, ids_per_batch: int, dtype: str, out: Path) -> dict:
    """Run the dataset command in this process; returns its throughput and similarity distribution."""
    sys.path.insert(0, str(REPO))
    import statistics

    from arc2face_core.datasets.command import prepare
    from arc2face_core.datasets.config import DatasetConfig
    from arc2face_core.datasets.generation import load_maker
    from arc2face_core.datasets.progress import summarize

    lcm = mode == "lcm"
    config = DatasetConfig(out=out, models=args.models, vae=args.vae, identities=args.identities,
                           images_per_id=args.images_per_id, seed=0, ids_per_batch=ids_per_batch,
                           steps=args.lcm_steps if lcm else args.steps, guidance=1.0 if lcm else args.cfg,
                           width=args.size, height=args.size, scheduler="lcm" if lcm else "dpmpp_2m",
                           lora=args.lora if lcm else None, device=args.device, dtype=dtype,
                           channels_last=args.channels_last, compile=args.compile, score=not args.no_similarity,
                           quiet=True).check()
    ready = prepare(config)
    maker = load_maker(ready.config, ready.identities, ready.store)
    stats = maker.run(ready.batches)   # the generation loop's own timing, without model loading
    ready.store.assemble_manifest()
    rows = ready.store.read_rows()
    summary = summarize(rows)
    scores = sorted(r["similarity"] for r in rows if r["similarity"] is not None and r["similarity"] != -1.0)
    if len(scores) > 1:
        summary["similarity_quartiles"] = [round(q, 4) for q in statistics.quantiles(scores, n=4)]
    return {"mode": mode, "steps": config.steps, "cfg": config.guidance, "ids_per_batch": ids_per_batch,
            "dtype": dtype, "images_per_batch": ids_per_batch * args.images_per_id, "images": stats.generated,
            "seconds": round(stats.seconds, 2), "images_per_s": round(stats.generated / stats.seconds, 4),
            "similarity": {k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()}}


def sampler_time(count: int) -> dict:
    sys.path.insert(0, str(REPO))
    import torch

    from arc2face_core.datasets.sampling import unique_identities

    device = "cuda" if torch.cuda.is_available() else "cpu"
    start = time.perf_counter()
    sampled = unique_identities(count, seed=0, device=device)
    return {"unique_identities": count, "device": device, "seconds": round(time.perf_counter() - start, 2),
            "rejected": sampled.rejected, "max_similarity": round(sampled.max_similarity, 4)}


def section(args: argparse.Namespace, results: list[dict]) -> str:
    """The RESULTS.md section: one row per setting, the LCM rows against the default of the same batch and dtype."""
    sys.path.insert(0, str(REPO))
    from bench.harness import command_line, environment, environment_lines

    default = {(r["ids_per_batch"], r["dtype"]): r for r in results if r["mode"] == "default"}
    lines = ["| mode | steps, CFG | images per batch | dtype | images / s | vs the default | similarity mean ± std "
             "(quartiles) |", "|---|---|---:|---|---:|---:|---|"]
    for r in results:
        base = default.get((r["ids_per_batch"], r["dtype"]))
        ratio = f"**{r['images_per_s'] / base['images_per_s']:.2f}x**" if base else ""
        s = r["similarity"]
        quartiles = ", ".join(map(str, s.get("similarity_quartiles", [])))
        spread = (f"{s['similarity_mean']:.3f} ± {s['similarity_std']:.3f} ({quartiles})" if "similarity_mean" in s
                  else "not scored")
        lines.append(f"| {r['mode']} | {r['steps']}, {r['cfg']} | {r['images_per_batch']} | {r['dtype']} | "
                     f"{r['images_per_s']:.3g} | {ratio} | {spread} |")
    weights = ("full-size random weights (--random-models): the similarities are noise (random UNet, rigged face "
               "models); only the images per second mean anything" if args.random_models else
               f"the models in {args.models}")
    info = environment({"device": args.device, "size": f"{args.size}x{args.size}",
                        "identities": f"{args.identities} x {args.images_per_id} images, the same for every row",
                        "weights": weights})
    return (f"## LCM mode in datasets\n\nThe `dataset` command's images per second (generation loop: identity check "
            f"and PNGs included, loading excluded) and identity similarities, the LCM mode (LCM-LoRA, LCM "
            f"scheduler, CFG 1) against the 25-step default on the same identities.\n\n```\n{command_line()}\n"
            f"```\n\n" + "\n".join(lines) + f"\n\n{environment_lines(info)}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path)
    parser.add_argument("--vae", type=Path)
    parser.add_argument("--random-models", type=Path, help="write (once) and use full-size random models here")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--cfg", type=float, default=3.0)
    parser.add_argument("--modes", nargs="+", default=["default"], choices=["default", "lcm"])
    parser.add_argument("--lora", type=Path, help="the LCM-LoRA of the lcm mode (--random-models: a random one)")
    parser.add_argument("--lcm-steps", type=int, default=4)
    parser.add_argument("--identities", type=int, default=8)
    parser.add_argument("--images-per-id", type=int, default=4)
    parser.add_argument("--ids-per-batch", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--dtype", nargs="+", default=["auto"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--no-similarity", action="store_true")
    parser.add_argument("--sampler-identities", type=int, default=100_000)
    parser.add_argument("--no-sampler", action="store_true", help="skip the identity sampler's timing")
    parser.add_argument("--write", action="store_true", help="write the table into bench/RESULTS.md")
    parser.add_argument("--lock", type=Path, help="hold this flock file while measuring")
    parser.add_argument("--one", nargs=4, metavar=("MODE", "IDS_PER_BATCH", "DTYPE", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--sampler-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.random_models:
        args.models, args.vae = bench_data.dataset_models(args.random_models, lcm_lora=True)
        args.lora = args.lora or args.models / "loras" / bench_data.RANDOM_LORA
    if args.one:
        mode, ids_per_batch, dtype, out = args.one
        print(json.dumps(one_setting(args, mode, int(ids_per_batch), dtype, Path(out))))
        return
    if args.sampler_only:
        print(json.dumps(sampler_time(args.sampler_identities)))
        return
    if args.models is None or args.vae is None:
        parser.error("give --models and --vae, or --random-models DIR")
    if "lcm" in args.modes and args.lora is None:
        parser.error("the lcm mode needs --lora (SD1.5's LCM-LoRA file)")
    passed = [a for a in sys.argv[1:] if a not in ("--random-models", str(args.random_models), "--write")]
    passed += ["--models", str(args.models), "--vae", str(args.vae)] + (["--lora", str(args.lora)] if args.lora
                                                                        else [])
    sys.path.insert(0, str(REPO))
    from bench.harness import held, write_section

    results = []
    with held(args.lock):
        for mode, ids_per_batch, dtype in itertools.product(args.modes, args.ids_per_batch, args.dtype):
            with tempfile.TemporaryDirectory() as work:
                proc = subprocess.run([sys.executable, __file__, *passed, "--one", mode, str(ids_per_batch), dtype,
                                       str(Path(work) / "faces")], capture_output=True, text=True)
            if proc.returncode:
                raise SystemExit(f"{mode} x{ids_per_batch} {dtype} failed:\n{proc.stderr[-3000:]}")
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), flush=True)
        if not args.no_sampler:
            proc = subprocess.run([sys.executable, __file__, "--sampler-only", "--sampler-identities",
                                   str(args.sampler_identities)], capture_output=True, text=True, check=True)
            print(proc.stdout.strip())
    if args.write:
        write_section("dataset-lcm", section(args, results))


if __name__ == "__main__":
    main()
