"""gpu_check, parts 2 and 3: seconds per step against diffusers, and the dataset command's images per second.

Part 2, each side in its own process on the same files: the pack's ``Arc2FacePipeline`` (as loaded, and with each
``--variants`` speed-up: ``channels_last``, ``compile``) and the reference's route (bench/reference_route.py:
transformers' ``CLIPTextModel`` + diffusers' ``StableDiffusionPipeline``). Per batch size, one untimed warm-up
generation of 2 steps, then one generation of ``steps`` DPM-Solver++ steps at CFG 3.0 from one identity, decoded:
seconds per step (the median of the steps after the first; the device is synchronised at every step on both sides),
images per second (the batch over the whole call: encoding, steps and decoding), the device's peak memory. Both
sides start from the same seeded noise; the mean pixel value of their images is recorded to show the same work.

Part 3: ``arc2face_core.datasets`` as the ``dataset`` command runs it, on the same identities in the 25-step default
and the LCM mode (SD1.5's LCM-LoRA file, LCM scheduler, 4 steps, CFG 1), with the identity check: images per second
of the generation loop (PNG writing and the identity check included, loading excluded) and the distribution of the
identity similarities (meaningless with random weights; real figures with real ones).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

SEED, GUIDANCE = 0, 3.0


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _peak_mib(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2 ** 20
    from bench.harness import peak_rss_mib

    return peak_rss_mib()


def _identity():
    import torch

    return torch.nn.functional.normalize(torch.randn(1, 512, generator=torch.Generator().manual_seed(7)), dim=1)


def child_steps(args) -> dict:
    """One side of part 2 (see the module docstring)."""
    import numpy as np
    import torch

    dtype = getattr(torch, args.dtype)
    models = Path(args.models)
    if args.side == "diffusers":
        from arc2face_core.diffusers_backend.pipeline import SD15_SCHEDULER_CONFIG
        from bench.reference_route import load_reference_pipeline, reference_conditioning

        pipe, encoder = load_reference_pipeline(None, SD15_SCHEDULER_CONFIG, dtype, args.device,
                                                unet_dir=models / "arc2face" / "arc2face", vae_dir=Path(args.vae_dir),
                                                encoder_dir=models / "arc2face" / "encoder")
        tokens = json.loads(args.tokens)

        def generate(batch: int, steps: int, on_step) -> np.ndarray:
            side = args.size // pipe.vae_scale_factor   # the pack's documented draw (one CPU generator)
            noise = torch.randn((batch, 4, side, side), generator=torch.Generator().manual_seed(SEED))
            positive, negative = reference_conditioning(encoder, _identity(), tokens)
            return pipe(prompt_embeds=positive, negative_prompt_embeds=negative, latents=noise.to(args.device, dtype),
                        num_images_per_prompt=batch, num_inference_steps=steps, guidance_scale=GUIDANCE,
                        height=args.size, width=args.size, output_type="np",
                        callback_on_step_end=lambda p, i, t, kw: (on_step(), kw)[1]).images
    else:
        from arc2face_core.diffusers_backend.pipeline import Arc2FacePipeline
        from arc2face_core.weights import ModelRoots

        pipe = Arc2FacePipeline.load(ModelRoots.under(models), Path(args.vae_file), device=args.device, dtype=dtype,
                                     vae_encoder=False)   # as generate and dataset load it
        pipe.optimize(channels_last=args.side == "channels_last", compile=args.side == "compile")

        def generate(batch: int, steps: int, on_step) -> np.ndarray:
            return pipe.generate(_identity(), batch, steps, GUIDANCE, args.size, args.size, seed=SEED,
                                 progress=lambda done, total: on_step())
    result = {"side": args.side, "batches": {}}
    for batch in args.batches:
        generate(batch, 2, lambda: None)                       # warm-up: kernels, autotuning, compilation
        _sync(args.device)
        stamps: list[float] = []

        def on_step() -> None:
            _sync(args.device)
            stamps.append(time.perf_counter())

        start = time.perf_counter()
        images = np.asarray(generate(batch, args.steps, on_step))
        _sync(args.device)
        total = time.perf_counter() - start
        steps = [b - a for a, b in zip(stamps, stamps[1:])]
        pixels = images if images.dtype == np.uint8 else (images * 255).round()
        result["batches"][str(batch)] = {"s_per_step": statistics.median(steps), "images_per_s": batch / total,
                                         "seconds": total, "image_mean": float(pixels.mean())}
    result["peak_mib"] = _peak_mib(args.device)
    return result


def child_dataset(args) -> dict:
    """Part 3 for one mode: the dataset made in this process; images per second and the similarity distribution."""
    from arc2face_core.datasets.command import prepare
    from arc2face_core.datasets.config import DatasetConfig
    from arc2face_core.datasets.generation import load_maker
    from arc2face_core.datasets.progress import summarize

    lcm = args.side == "lcm"
    config = DatasetConfig(out=Path(args.out), models=Path(args.models), vae=Path(args.vae_file),
                           identities=args.identities, images_per_id=args.images_per_id, seed=SEED,
                           ids_per_batch=args.ids_per_batch, steps=4 if lcm else args.steps,
                           guidance=1.0 if lcm else GUIDANCE, width=args.size, height=args.size,
                           scheduler="lcm" if lcm else "dpmpp_2m", lora=Path(args.lora) if lcm else None,
                           device=args.device, dtype=_dtype_name(args.dtype), quiet=True).check()
    ready = prepare(config)
    maker = load_maker(ready.config, ready.identities, ready.store)
    stats = maker.run(ready.batches)
    ready.store.assemble_manifest()
    rows = ready.store.read_rows()
    scores = sorted(r["similarity"] for r in rows if r["similarity"] is not None)
    quartiles = statistics.quantiles(scores, n=4) if len(scores) > 1 else scores * 3
    return {"mode": "lcm (4 steps, CFG 1)" if lcm else f"dpmpp_2m ({args.steps} steps, CFG 3)",
            "images": stats.generated, "seconds": stats.seconds, "images_per_s": stats.generated / stats.seconds,
            "similarity": dict(summarize(rows), quartiles=quartiles), "peak_mib": _peak_mib(args.device)}


def _dtype_name(name: str) -> str:
    return {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}[name]


def run_child(args: list[str], timeout: float) -> dict:
    """This script as a fresh process (the side's own imports, memory and compile caches)."""
    import subprocess

    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(args[:2])} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["steps", "dataset"])
    parser.add_argument("--side", required=True)
    parser.add_argument("--models", required=True)
    parser.add_argument("--vae-file", required=True)
    parser.add_argument("--vae-dir")
    parser.add_argument("--lora")
    parser.add_argument("--tokens")
    parser.add_argument("--out")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="float16")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--identities", type=int, default=4)
    parser.add_argument("--images-per-id", type=int, default=8)
    parser.add_argument("--ids-per-batch", type=int, default=2)
    args = parser.parse_args()
    print(json.dumps(child_steps(args) if args.part == "steps" else child_dataset(args)), flush=True)


if __name__ == "__main__":
    main()
