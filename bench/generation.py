"""Generation speed: the headless pipeline against diffusers' ``StableDiffusionPipeline`` on the same UNet and latents.

    python bench/generation.py --data /work/bench-data --lock /work/locks/comfy.lock [--pairs 5] [--dtype float32]

The baseline is what Arc2Face's reference code runs: ``StableDiffusionPipeline`` with the Arc2Face UNet, SD1.5's VAE
and ``DPMSolverMultistepScheduler.from_config`` of SD1.5's scheduler config, given the ID encoder's conditioning as
``prompt_embeds`` / ``negative_prompt_embeds`` and the pack's seeded noise as ``latents``. The conditioning comes
from the pack's encoder, computed once before the pairs, so both sides run exactly the same numbers; each child
reports checksums of its results and the parent refuses to write a result where they differ.

* seconds per denoising step: 512x512, one image (batch 2 with CFG 3.0), ``--steps`` DPM-Solver++ steps; the
  median duration of the steps after the first (the first also pages the lazily mapped file in, on diffusers' side).
* images per second: a small generation, 2 images of one identity at 256x256, 4 steps, CFG 3.0, decoded to uint8;
  the pack's side is ``Arc2FacePipeline.generate`` from the ArcFace vector (its ID encoding included), the baseline
  the pipeline call from the precomputed conditioning.
Loading (both sides load UNet + VAE, the pack the encoder too) and each run's peak memory are recorded per pair but
are not figures here (the sides hold different models): see loading.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import data as bench_data  # noqa: E402
from bench.harness import (  # noqa: E402
    Clock,
    command_line,
    emit,
    environment,
    environment_lines,
    held,
    paired_runs,
    peak_rss_mib,
    raw_runs,
    run_child,
    table,
    write_section,
)

SCRIPT = Path(__file__).resolve()
GUIDANCE, SEED = 3.0, 0


def _identity():
    import torch

    return torch.nn.functional.normalize(torch.randn(1, 512, generator=torch.Generator().manual_seed(7)), dim=1)


def child_prepare(data: Path, out: Path) -> dict:
    """The pack's conditioning for the benchmark identity: what the reference passes to the diffusers pipeline."""
    import torch

    from arc2face_core.identity.encoder import load_id_encoder

    encoder = load_id_encoder(*bench_data.encoder_files(data))
    positive, _ = encoder.encode(_identity())
    negative, _ = encoder.encode_empty()
    torch.save({"positive": positive, "negative": negative}, out)
    return {"written": str(out)}


def _durations(stamps: list[float], start: float) -> list[float]:
    return [b - a for a, b in zip([start] + stamps[:-1], stamps)]


def child_pack(args) -> dict:
    import numpy as np
    import torch

    clock = Clock()
    from arc2face_core.diffusers_backend.pipeline import Arc2FacePipeline
    from arc2face_core.weights import ModelRoots

    clock.mark("import")
    pipe = Arc2FacePipeline.load(ModelRoots(arc2face=[args.data / "arc2face"]), bench_data.vae_folder(args.data),
                                 dtype=getattr(torch, args.dtype))
    clock.mark("load")
    cond = torch.load(args.conditioning, weights_only=True)
    noise = pipe.noise(1, args.size, args.size, SEED)
    stamps: list[float] = []
    start = time.perf_counter()
    latents = pipe.denoise(cond["positive"], cond["negative"], noise, args.steps, GUIDANCE,
                           progress=lambda done, total: stamps.append(time.perf_counter()))
    step_times = _durations(stamps, start)
    start = time.perf_counter()
    images = pipe.generate(_identity(), images_per_id=args.small_images, steps=args.small_steps,
                           guidance_scale=GUIDANCE, width=args.small_size, height=args.small_size, seed=SEED)
    small_s = time.perf_counter() - start
    return _answer(args, clock, step_times, latents, small_s, np.asarray(images))


def child_diffusers(args) -> dict:
    import numpy as np
    import torch

    clock = Clock()
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, StableDiffusionPipeline, UNet2DConditionModel

    clock.mark("import")
    dtype = getattr(torch, args.dtype)
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL.from_pretrained(bench_data.vae_folder(args.data), torch_dtype=dtype),
        unet=UNet2DConditionModel.from_pretrained(bench_data.unet_folder(args.data), torch_dtype=dtype),
        scheduler=DPMSolverMultistepScheduler.from_config(json.loads(args.scheduler)), text_encoder=None,
        tokenizer=None,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    clock.mark("load")
    cond = torch.load(args.conditioning, weights_only=True)
    positive, negative = cond["positive"].to(dtype), cond["negative"].to(dtype)
    f = pipe.vae_scale_factor
    noise = torch.randn((1, 4, args.size // f, args.size // f), generator=torch.Generator("cpu").manual_seed(SEED),
                        dtype=torch.float32)   # the pack's documented draw
    stamps: list[float] = []

    def on_step(pipeline, index, timestep, kwargs):
        stamps.append(time.perf_counter())
        return kwargs

    start = time.perf_counter()
    latents = pipe(prompt_embeds=positive, negative_prompt_embeds=negative, latents=noise.to(dtype),
                   num_inference_steps=args.steps, guidance_scale=GUIDANCE, output_type="latent",
                   callback_on_step_end=on_step).images
    step_times = _durations(stamps, start)
    small_noise = torch.randn((args.small_images, 4, args.small_size // f, args.small_size // f),
                              generator=torch.Generator("cpu").manual_seed(SEED), dtype=torch.float32)
    start = time.perf_counter()
    decoded = pipe(prompt_embeds=positive, negative_prompt_embeds=negative, latents=small_noise.to(dtype),
                   num_images_per_prompt=args.small_images, num_inference_steps=args.small_steps,
                   guidance_scale=GUIDANCE, height=args.small_size, width=args.small_size, output_type="np").images
    images = (np.asarray(decoded) * 255).round().astype(np.uint8)
    small_s = time.perf_counter() - start
    return _answer(args, clock, step_times, latents, small_s, images)


def _answer(args, clock, step_times: list[float], latents, small_s: float, images) -> dict:
    import statistics

    later = step_times[1:] or step_times
    return dict(clock.marks, s_per_step=statistics.median(later), first_step_s=step_times[0],
                images_per_s=args.small_images / small_s, small_generation_s=small_s, peak_mib=peak_rss_mib(),
                checksum=float(latents.double().sum()), abs_checksum=float(latents.double().abs().sum()),
                image_mean=float(images.mean()))


def _check_same(pairs) -> str:
    ref = pairs.pack[0]
    runs = pairs.pack + pairs.baseline
    latent_diff = max(abs(r["checksum"] - ref["checksum"]) / ref["abs_checksum"] for r in runs)
    image_diff = max(abs(r["image_mean"] - ref["image_mean"]) for r in runs)
    if latent_diff > 1e-3 or image_diff > 0.5:
        raise SystemExit(f"the two sides computed different results (latents {latent_diff:.1e}, image mean "
                         f"{image_diff:.2f}); not writing results")
    return (f"final latents of the timed steps agree to {latent_diff:.1e} of their absolute sum, the small "
            f"generation's mean pixel value to {image_diff:.2f} of 255")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=bench_data.default_data_dir())
    parser.add_argument("--lock", type=Path, help="hold this flock file while measuring (the machine's memory lock)")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--size", type=int, default=512, help="image size of the seconds-per-step run (pixels)")
    parser.add_argument("--steps", type=int, default=3, help="denoising steps of the seconds-per-step run (>= 2)")
    parser.add_argument("--small-size", type=int, default=256, help="image size of the small generation")
    parser.add_argument("--small-images", type=int, default=2, help="images (of one identity) it makes")
    parser.add_argument("--small-steps", type=int, default=4, help="its denoising steps")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--no-write", action="store_true", help="print the section instead of writing RESULTS.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--conditioning", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--scheduler", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "prepare":
        emit(child_prepare(args.data, args.conditioning))
        return
    if args.child in ("pack", "baseline"):
        emit((child_pack if args.child == "pack" else child_diffusers)(args))
        return

    from arc2face_core.diffusers_backend.pipeline import SD15_SCHEDULER_CONFIG

    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        conditioning = Path(tmp) / "conditioning.pt"
        common = ["--data", str(args.data), "--conditioning", str(conditioning), "--dtype", args.dtype,
                  "--scheduler", json.dumps(SD15_SCHEDULER_CONFIG), "--size", str(args.size), "--steps",
                  str(args.steps), "--small-size", str(args.small_size), "--small-images", str(args.small_images),
                  "--small-steps", str(args.small_steps)]
        with held(args.lock):
            bench_data.build(args.data)
            run_child(SCRIPT, ["--child", "prepare", "--data", str(args.data), "--conditioning", str(conditioning)])
            log("generation: Arc2FacePipeline vs diffusers StableDiffusionPipeline")
            pairs = paired_runs(lambda side: run_child(SCRIPT, ["--child", side, *common]), args.pairs, log)
    same = _check_same(pairs)
    base = "diffusers"
    rows = [
        (f"seconds per denoising step, {args.size} px, 1 image with CFG", "s", base,
         pairs.median("pack", "s_per_step"), pairs.median("baseline", "s_per_step"), pairs.ratio("s_per_step")),
        (f"images per second, {args.small_images} images {args.small_size} px, {args.small_steps} steps, decoded "
         "(higher is better)", "img/s", base, pairs.median("pack", "images_per_s"),
         pairs.median("baseline", "images_per_s"), pairs.ratio("images_per_s")),
    ]
    info = environment({"dtype": args.dtype, "pairs": f"{args.pairs} (+1 warm-up), each side a fresh process",
                        "files": "the UNet and VAE of bench/data.py (fp32, random values); SD1.5's scheduler config"})
    section = (f"## Generation speed\n\n`Arc2FacePipeline` against diffusers' `StableDiffusionPipeline` (the "
               f"reference's route) on the same UNet, VAE, conditioning and latents.\n\n```\n{command_line()}\n```\n\n"
               f"{table(rows)}\n\nSame work on both sides: {same}.\n\n{environment_lines(info)}\n\n"
               f"<details><summary>every pair</summary>\n\n"
               f"{raw_runs(pairs, ['s_per_step', 'images_per_s', 'first_step_s', 'load_s', 'peak_mib'])}\n\n"
               f"</details>\n")
    print(section) if args.no_write else write_section("generation", section)


if __name__ == "__main__":
    main()
