"""Dataset throughput: images per second of ``python -m arc2face_core dataset`` for each speed setting, and the
identity sampler's time for N identities. A script, not a test: it reports, it asserts nothing.

    python bench/dataset_throughput.py --models M --vae V --device cuda --size 512 --steps 25 \\
        --ids-per-batch 1 4 --dtype fp16 bf16 --channels-last --compile
    python bench/dataset_throughput.py --random-models /tmp/arc2face_random ...   # full-size random weights

Each setting runs in a fresh process (no compile cache, no warm allocator carried over) and makes a fresh dataset;
the figure is generated images over the generation time the run reports (model loading excluded, the identity check
included unless ``--no-similarity``, the first batch's warm-up too: give enough identities). The same seeds are used
for every setting, so the work is the same.
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


def build_random_models(base: Path) -> tuple[Path, Path]:
    """Full-size random Arc2Face UNet and encoder, SD1.5's VAE shape, and the tiny rigged face models (tests')."""
    sys.path[:0] = [str(REPO), str(REPO / "tests")]
    from builders import clip_encoder, onnx_faces, sd15_random

    models = base / "models"
    if not (models / "arc2face" / "arc2face" / "diffusion_pytorch_model.safetensors").is_file():
        sd15_random.write_unet(models / "arc2face" / "arc2face")
        clip_encoder.write_encoder(models / "arc2face", full_size=True)
        onnx_faces.build_recogniser(models / "arc2face" / "arcface.onnx", seed=1234)
        onnx_faces.build_rigged_detector(models / "insightface/models/antelopev2/scrfd_10g_bnkps.onnx",
                                         [onnx_faces.astronaut_face()], (512, 512))
        sd15_random.write_vae(models / "vae" / "sd15_vae.safetensors")
    return models, models / "vae" / "sd15_vae.safetensors"


def one_setting(args: argparse.Namespace, ids_per_batch: int, dtype: str, out: Path) -> dict:
    """Run the dataset command in this process; returns its throughput."""
    sys.path.insert(0, str(REPO))
    from arc2face_core.datasets import command
    from arc2face_core.datasets.config import DatasetConfig

    config = DatasetConfig(out=out, models=args.models, vae=args.vae, identities=args.identities,
                           images_per_id=args.images_per_id, seed=0, ids_per_batch=ids_per_batch, steps=args.steps,
                           width=args.size, height=args.size, device=args.device, dtype=dtype,
                           channels_last=args.channels_last, compile=args.compile, score=not args.no_similarity,
                           quiet=True)
    stats = {}
    real = command.load_maker

    def timed_maker(*a, **k):   # the generation loop's own timing, without model loading
        maker = real(*a, **k)
        run = maker.run

        def run_and_keep(*ra, **rk):
            result = run(*ra, **rk)
            stats.update(seconds=result.seconds, generated=result.generated)
            return result

        maker.run = run_and_keep
        return maker

    command.load_maker = timed_maker
    command.make_dataset(config)
    return {"ids_per_batch": ids_per_batch, "dtype": dtype, "images_per_batch": ids_per_batch * args.images_per_id,
            "images": stats["generated"], "seconds": round(stats["seconds"], 2),
            "images_per_s": round(stats["generated"] / stats["seconds"], 3)}


def sampler_time(count: int) -> dict:
    sys.path.insert(0, str(REPO))
    import torch

    from arc2face_core.datasets.sampling import unique_identities

    device = "cuda" if torch.cuda.is_available() else "cpu"
    start = time.perf_counter()
    sampled = unique_identities(count, seed=0, device=device)
    return {"unique_identities": count, "device": device, "seconds": round(time.perf_counter() - start, 2),
            "rejected": sampled.rejected, "max_similarity": round(sampled.max_similarity, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path)
    parser.add_argument("--vae", type=Path)
    parser.add_argument("--random-models", type=Path, help="write (once) and use full-size random models here")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--identities", type=int, default=8)
    parser.add_argument("--images-per-id", type=int, default=4)
    parser.add_argument("--ids-per-batch", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--dtype", nargs="+", default=["auto"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--no-similarity", action="store_true")
    parser.add_argument("--sampler-identities", type=int, default=100_000)
    parser.add_argument("--one", nargs=3, metavar=("IDS_PER_BATCH", "DTYPE", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--sampler-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.random_models:
        args.models, args.vae = build_random_models(args.random_models)
    if args.one:
        print(json.dumps(one_setting(args, int(args.one[0]), args.one[1], Path(args.one[2]))))
        return
    if args.sampler_only:
        print(json.dumps(sampler_time(args.sampler_identities)))
        return
    if args.models is None or args.vae is None:
        parser.error("give --models and --vae, or --random-models DIR")
    passed = [a for a in sys.argv[1:] if a != "--random-models" and a != str(args.random_models)]
    passed += ["--models", str(args.models), "--vae", str(args.vae)]
    results = []
    for ids_per_batch, dtype in itertools.product(args.ids_per_batch, args.dtype):
        with tempfile.TemporaryDirectory() as work:
            proc = subprocess.run([sys.executable, __file__, *passed, "--one", str(ids_per_batch), dtype,
                                   str(Path(work) / "faces")], capture_output=True, text=True, check=True)
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
    proc = subprocess.run([sys.executable, __file__, "--sampler-only", "--sampler-identities",
                           str(args.sampler_identities)], capture_output=True, text=True, check=True)
    print(proc.stdout.strip())


if __name__ == "__main__":
    main()
