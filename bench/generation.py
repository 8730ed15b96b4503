"""Generation speed and memory: the headless pipeline and the dataset command against the reference's route.

    python bench/generation.py --data /work/bench-data --lock /work/locks/heavy.lock [--pairs 5] [--dtype float32]

The baseline is what Arc2Face's reference code runs (bench/reference_route.py): transformers' ``CLIPTextModel`` as
the ID encoder (the "id" token's embedding replaced by the padded ArcFace vector; the empty prompt for the negative)
and diffusers' ``StableDiffusionPipeline`` with the Arc2Face UNet, SD1.5's VAE and ``DPMSolverMultistepScheduler``
of SD1.5's config. Both sides load the same three files and compute everything from the ArcFace vector themselves,
so their peak memory is like for like; each child reports checksums and the parent refuses to write a result where
they differ.

* seconds per denoising step: 512x512, one image (batch 2 with CFG 3.0), ``--steps`` DPM-Solver++ steps; the
  median duration of the steps after the first (the first also pages the lazily mapped file in).
* images per second: a small generation, 2 images of one identity at 256x256, 4 steps, CFG 3.0, ID encoding and
  decoding to uint8 included.
* peak memory: the child process's peak resident set over all of the above (loading included).
* the dataset command (bench/dataset_pairs.py): ``--dataset-identities`` identities x 2 images at the small size,
  one identity per batch, PNGs written, no identity check (the benchmark files have no face models), against the
  reference's pipeline making the same images from the same seeds and saving them with PIL; images per second of
  the generation loop, and the process's peak memory.
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
                                 dtype=getattr(torch, args.dtype), vae_encoder=False)   # as generate loads it
    clock.mark("load")
    noise = pipe.noise(1, args.size, args.size, SEED)
    stamps: list[float] = []
    start = time.perf_counter()
    positive, negative = pipe.conditioning(_identity(), 1)
    latents = pipe.denoise(positive, negative, noise, args.steps, GUIDANCE,
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
    from bench.reference_route import load_reference_pipeline, reference_conditioning

    clock.mark("import")
    dtype = getattr(torch, args.dtype)
    pipe, encoder = load_reference_pipeline(args.data, json.loads(args.scheduler), dtype)
    clock.mark("load")
    tokens = json.loads(args.tokens)
    f = pipe.vae_scale_factor
    noise = torch.randn((1, 4, args.size // f, args.size // f), generator=torch.Generator("cpu").manual_seed(SEED),
                        dtype=torch.float32)   # the pack's documented draw
    stamps: list[float] = []

    def on_step(pipeline, index, timestep, kwargs):
        stamps.append(time.perf_counter())
        return kwargs

    start = time.perf_counter()
    positive, negative = reference_conditioning(encoder, _identity(), tokens)
    latents = pipe(prompt_embeds=positive, negative_prompt_embeds=negative, latents=noise.to(dtype),
                   num_inference_steps=args.steps, guidance_scale=GUIDANCE, output_type="latent",
                   callback_on_step_end=on_step).images
    step_times = _durations(stamps, start)
    small_noise = torch.randn((args.small_images, 4, args.small_size // f, args.small_size // f),
                              generator=torch.Generator("cpu").manual_seed(SEED), dtype=torch.float32)
    start = time.perf_counter()
    positive, negative = reference_conditioning(encoder, _identity(), tokens)
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


def _check_same(pairs, dataset) -> str:
    ref = pairs.pack[0]
    runs = pairs.pack + pairs.baseline
    latent_diff = max(abs(r["checksum"] - ref["checksum"]) / ref["abs_checksum"] for r in runs)
    image_diff = max(abs(r["image_mean"] - ref["image_mean"]) for r in runs)
    first = dataset.pack[0]["dataset_image_mean"]
    dataset_diff = max(abs(r["dataset_image_mean"] - first) for r in dataset.pack + dataset.baseline)
    if latent_diff > 1e-3 or image_diff > 0.5 or dataset_diff > 0.5:
        raise SystemExit(f"the two sides computed different results (latents {latent_diff:.1e}, image mean "
                         f"{image_diff:.2f}, dataset image mean {dataset_diff:.2f}); not writing results")
    return (f"final latents of the timed steps agree to {latent_diff:.1e} of their absolute sum, the small "
            f"generation's mean pixel value to {image_diff:.2f} of 255, the dataset images' to {dataset_diff:.2f}")


NOTES = (
    "Both sides hold the same three models and compute the conditioning from the ArcFace vector themselves. Peak "
    "memory counts the file pages a process touched: diffusers and transformers map the files and read what a "
    "forward pass uses; the pack maps them too and reads every weight once more to refuse NaN/inf, but leaves out "
    "what generation never uses (the VAE's encoder half, loaded only with a reference photo, and all but the 7 rows "
    "of the encoder's 49,408-row token table it looks up). It reuses the empty prompt's encoding, samples under "
    "`torch.inference_mode` and does not import transformers. The dataset command's time includes writing the PNGs "
    "(on two background threads while the next batch is generated) and its manifest; the baseline's includes "
    "saving the same PNGs with PIL.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=bench_data.default_data_dir())
    parser.add_argument("--lock", type=Path, help="hold this flock file while measuring (the machine's memory lock)")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--size", type=int, default=512, help="image size of the seconds-per-step run (pixels)")
    parser.add_argument("--steps", type=int, default=3, help="denoising steps of the seconds-per-step run (>= 2)")
    parser.add_argument("--small-size", type=int, default=256, help="image size of the small generation")
    parser.add_argument("--small-images", type=int, default=2, help="images (of one identity) it makes")
    parser.add_argument("--small-steps", type=int, default=4, help="its denoising steps (and the dataset's)")
    parser.add_argument("--dataset-identities", type=int, default=3, help="identities of the dataset comparison")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--no-write", action="store_true", help="print the section instead of writing RESULTS.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--scheduler", help=argparse.SUPPRESS)
    parser.add_argument("--tokens", help=argparse.SUPPRESS)
    parser.add_argument("--embeddings", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--images-per-id", type=int, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        from bench import dataset_pairs

        children = {"pack": child_pack, "baseline": child_diffusers, "dataset:pack": dataset_pairs.child_dataset_pack,
                    "dataset:baseline": dataset_pairs.child_dataset_baseline}
        emit(children[args.child](args))
        return

    from arc2face_core.diffusers_backend.pipeline import SD15_SCHEDULER_CONFIG
    from bench.dataset_pairs import write_identities
    from bench.reference_route import pack_tokens

    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    common = ["--data", str(args.data), "--dtype", args.dtype, "--scheduler", json.dumps(SD15_SCHEDULER_CONFIG),
              "--tokens", pack_tokens(), "--size", str(args.size), "--steps", str(args.steps), "--small-size",
              str(args.small_size), "--small-images", str(args.small_images), "--small-steps", str(args.small_steps)]
    with tempfile.TemporaryDirectory() as tmp:
        embeddings = write_identities(Path(tmp) / "identities.safetensors", args.dataset_identities)
        runs = iter(range(10 ** 6))

        def dataset_side(side: str) -> dict:
            out = Path(tmp) / f"faces_{next(runs)}"
            return run_child(SCRIPT, ["--child", f"dataset:{side}", *common, "--embeddings", str(embeddings),
                                      "--out", str(out)])

        with held(args.lock):
            bench_data.build(args.data)
            log("generation: Arc2FacePipeline vs the reference's route (transformers CLIPTextModel + diffusers)")
            pairs = paired_runs(lambda side: run_child(SCRIPT, ["--child", side, *common]), args.pairs, log)
            log("dataset: the dataset command vs the reference's route making the same images")
            dataset = paired_runs(dataset_side, args.pairs, log)
    same = _check_same(pairs, dataset)
    base = "reference route"
    rows = [
        (f"seconds per denoising step, {args.size} px, 1 image with CFG", "s", base,
         pairs.median("pack", "s_per_step"), pairs.median("baseline", "s_per_step"), pairs.ratio("s_per_step")),
        (f"images per second, {args.small_images} images {args.small_size} px, {args.small_steps} steps, encoded "
         "and decoded (higher is better)", "img/s", base, pairs.median("pack", "images_per_s"),
         pairs.median("baseline", "images_per_s"), pairs.ratio("images_per_s")),
        ("peak memory of the run above (load, 512 px steps, small generation)", "MiB", base,
         pairs.median("pack", "peak_mib"), pairs.median("baseline", "peak_mib"), pairs.ratio("peak_mib")),
        (f"dataset command: images per second, {args.dataset_identities} identities x 2 images, {args.small_size} "
         f"px, {args.small_steps} steps, PNGs written (higher is better)", "img/s", base,
         dataset.median("pack", "dataset_images_per_s"), dataset.median("baseline", "dataset_images_per_s"),
         dataset.ratio("dataset_images_per_s")),
        ("dataset command: peak memory", "MiB", base, dataset.median("pack", "dataset_peak_mib"),
         dataset.median("baseline", "dataset_peak_mib"), dataset.ratio("dataset_peak_mib")),
    ]
    info = environment({"dtype": args.dtype, "pairs": f"{args.pairs} (+1 warm-up) of each comparison, each side a "
                                                      "fresh process",
                        "files": "the encoder, UNet and VAE of bench/data.py (fp32, random values); SD1.5's "
                                 "scheduler config"})
    section = (f"## Generation speed and memory\n\n`Arc2FacePipeline` and the `dataset` command against the "
               f"reference's route (transformers' `CLIPTextModel` as the ID encoder, diffusers' "
               f"`StableDiffusionPipeline`) on the same files, identities and latents.\n\n```\n{command_line()}\n"
               f"```\n\n{table(rows)}\n\nSame work on both sides: {same}.\n\n{NOTES}\n\n"
               f"{environment_lines(info)}\n\n<details><summary>every pair</summary>\n\n"
               f"{raw_runs(pairs, ['s_per_step', 'images_per_s', 'peak_mib', 'first_step_s', 'load_s'])}\n\n"
               f"{raw_runs(dataset, ['dataset_images_per_s', 'dataset_peak_mib', 'load_s'])}\n\n</details>\n")
    print(section) if args.no_write else write_section("generation", section)


if __name__ == "__main__":
    main()
