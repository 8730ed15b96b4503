"""One command that checks the pack on a GPU and measures it there, with no network and nothing but this repository,
a Python with the pack's requirements (torch with CUDA, diffusers, transformers, insightface, onnxruntime) and a
ComfyUI checkout (its own requirements installed in that Python, or in ``--comfyui-python``).

    python bench/gpu_check.py --comfyui /path/to/ComfyUI --out results/          # on a GPU: about 5-8 minutes
    python bench/gpu_check.py --comfyui /path/to/ComfyUI --out results/ --cpu-smoke   # the same, small, on the CPU
    COMFYUI_DIR=/path/to/install python bench/gpu_check.py --out results/     # an install made by setup.sh

1. Models: full-size random weights in the real layouts, written once into ``--work``/models by the test builders
   (SD1.5-shape UNet, VAE and pose ControlNet, a full-size ID encoder, the LCM-LoRA, the adapters, SMIRK, FLAME,
   rigged face models).
2. ComfyUI (bench/gpu_check_comfyui.py): every shipped workflow and every node of the pack in a real server, on
   CUDA with fp16 weights; each saved image must be a picture.
3. Speed (bench/gpu_check_speed.py): seconds per step and images per second at 512x512, batch 1 and 16, CFG 3.0,
   25 steps, the pack's pipeline (and ``--variants``) against the reference's route on the same weights.
4. Datasets: images per second of the ``dataset`` command in the 25-step default and the LCM mode, with the
   identity check, on the same identities.

``--cpu-smoke`` runs all of it on the CPU at 64 px and 2 steps (the ComfyUI part on the full-size random models,
the rest on tiny ones), which is what CI runs to keep this script working (with ``--workflows`` naming the two
workflows no other live test runs). The figures go to ``--out``:
``gpu_check.json`` (everything) and ``gpu_check.md`` (the summary, ready for bench/RESULTS.md). The exit code is 1
when anything failed (the rest still runs), 2 when the environment cannot run it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from bench.gpu_check_speed import run_child  # noqa: E402

FULL_ENCODER_MARK = ".full_size_encoder"


def log(text: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def preflight(args) -> dict:
    """The environment, or exit 2 naming what is missing."""
    import importlib.util

    missing = [name for name in ("torch", "diffusers", "transformers", "insightface", "onnxruntime", "safetensors",
                                 "onnx", "cv2", "skimage", "PIL", "pytest") if importlib.util.find_spec(name) is None]
    if missing:
        sys.exit(f"gpu_check: this Python ({sys.executable}) lacks {missing}: install the pack's requirements "
                 "(requirements.txt, requirements-dev.txt) or carry them as wheels")
    import torch

    if not args.cpu_smoke and not torch.cuda.is_available():
        sys.exit("gpu_check: torch sees no CUDA GPU; run it on one, or pass --cpu-smoke")
    if not (args.comfyui / "main.py").is_file() and args.server is None:
        sys.exit(f"gpu_check: no ComfyUI at {args.comfyui} (main.py): pass --comfyui or set COMFYUI_DIR")
    return {"python": platform.python_version(), "torch": torch.__version__,
            "device": torch.cuda.get_device_name(0) if not args.cpu_smoke else f"CPU ({os.cpu_count()} cores)",
            "cuda": torch.version.cuda, "machine": platform.platform()}


def full_models(models: Path) -> Path:
    """The random models ComfyUI and the full-size measurements use (written once)."""
    from builders.clip_encoder import write_encoder
    from fixtures_comfyui import write_models

    write_models(models)
    if not (models / "arc2face" / FULL_ENCODER_MARK).is_file():   # the test server's encoder is tiny
        write_encoder(models / "arc2face", seed=0, full_size=True)
        (models / "arc2face" / FULL_ENCODER_MARK).write_text("full-size random encoder\n")
    return models


def tiny_models(models: Path) -> Path:
    """Tiny UNet, VAE and encoder, the rigged face models and a LoRA for them: the CPU smoke's headless parts."""
    from arc2face_core.diffusers_backend.model_files import load_unet
    from builders.clip_encoder import write_encoder
    from builders.lora import lora_targets, write_lora
    from builders.onnx_faces import astronaut_face, astronaut_rgb
    from builders.tiny_diffusers import write_tiny_unet, write_tiny_vae_folder
    from fixtures_faces import FaceScene, write_face_models

    if not (models / "loras" / "lcm.safetensors").is_file():
        write_face_models(models, FaceScene(astronaut_rgb(), (astronaut_face(),)))
        write_encoder(models / "arc2face", seed=0)
        write_tiny_unet(models / "arc2face", seed=0)
        write_tiny_vae_folder(models / "vae" / "tiny", seed=1)   # a folder: its config is not SD1.5's
        unet = load_unet(models / "arc2face" / "arc2face" / "diffusion_pytorch_model.safetensors")
        write_lora(models / "loras" / "lcm.safetensors", lora_targets(unet), rank=4, alpha=8.0, seed=3, gain=0.5)
    return models


def vae_paths(models: Path, work: Path, tiny: bool) -> tuple[Path, Path]:
    """(what the pack loads, a diffusers folder for the reference's AutoencoderKL.from_pretrained): the tiny VAE's
    folder for both, or SD1.5's file and a folder over it."""
    if tiny:
        return models / "vae" / "tiny", models / "vae" / "tiny"
    from builders.sd15_random import SD15_VAE_CONFIG

    file, folder = models / "vae" / "sd15_vae.safetensors", work / "vae_diffusers"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(SD15_VAE_CONFIG, indent=2))
    weights = folder / "diffusion_pytorch_model.safetensors"
    if not weights.exists():
        weights.symlink_to(file.resolve())
    return file, folder


def comfyui_part(args, models: Path) -> dict:
    from bench.gpu_check_comfyui import Server, prepare_base, run_comfyui, start_server

    if args.server:
        server = Server(args.server, args.comfyui_base or args.comfyui)
    else:
        base = args.work / "comfy_base"
        prepare_base(base, models)
        log("starting ComfyUI")
        server = start_server(args.comfyui, args.comfyui_python, base, args.cpu_smoke, args.comfyui_args)
    try:
        return run_comfyui(server, not args.cpu_smoke, args.size, args.steps, log, args.workflows)
    finally:
        server.stop()


def speed_part(args, models: Path, vae: tuple[Path, Path]) -> dict:
    from bench.reference_route import pack_tokens

    common = ["--models", str(models), "--vae-file", str(vae[0]), "--device",
              args.device, "--dtype", args.dtype, "--size", str(args.size), "--steps", str(args.steps)]
    sides = {}
    for side in ["diffusers", "pack", *args.variants]:
        log(f"  steps: {side}")
        sides[side] = run_child(["steps", "--side", side, *common, "--vae-dir", str(vae[1]), "--tokens",
                                 pack_tokens(), "--batches", *map(str, args.batches)], args.child_timeout)
    base = sides["diffusers"]["batches"]
    for result in sides.values():
        for batch, figures in result["batches"].items():
            figures["images_per_s_vs_diffusers"] = figures["images_per_s"] / base[batch]["images_per_s"]
            figures["step_speedup_vs_diffusers"] = base[batch]["s_per_step"] / figures["s_per_step"]
    return sides


def dataset_part(args, models: Path, vae: Path, lora: Path) -> dict:
    common = ["--models", str(models), "--vae-file", str(vae), "--device",
              args.device, "--dtype", args.dtype, "--size", str(args.size), "--steps", str(args.steps), "--lora",
              str(lora), *args.dataset_shape]
    modes = {}
    for mode in ("default", "lcm"):
        log(f"  dataset: {mode}")
        out = args.work / f"dataset_{mode}_{time.strftime('%H%M%S')}"
        modes[mode] = run_child(["dataset", "--side", mode, *common, "--out", str(out)], args.child_timeout)
    return modes


def summary(report: dict) -> str:
    lines = [f"## GPU check: {report['environment']['device']}", "",
             f"`{report['command']}` ({report['seconds']:.0f} s; torch {report['environment']['torch']}, "
             f"CUDA {report['environment']['cuda']})", ""]
    comfy = report.get("comfyui")
    if comfy:
        ok = sum(1 for w in comfy["workflows"].values() if w["ok"])
        nodes = ("nodes not counted (not every workflow ran)" if comfy["nodes_not_run"] is None else
                 f"{comfy['nodes'] - len(comfy['nodes_not_run'])} of {comfy['nodes']} nodes")
        lines += [f"ComfyUI: {ok} of {len(comfy['workflows'])} workflows ran, the nodes outside them "
                  f"{'ran' if comfy.get('extra_prompts', {}).get('ok') else 'FAILED'}, {nodes}; ComfyUI reported "
                  f"{json.dumps(comfy.get('reported', {}))}", ""]
    if report.get("speed"):
        lines += ["| side | batch | s / step | images / s | step speed-up vs diffusers | images / s vs diffusers |",
                  "|---|---:|---:|---:|---:|---:|"]
        for side, result in report["speed"].items():
            for batch, f in result["batches"].items():
                lines.append(f"| {side} | {batch} | {f['s_per_step']:.4g} | {f['images_per_s']:.3g} | "
                             f"**{f['step_speedup_vs_diffusers']:.2f}x** | **{f['images_per_s_vs_diffusers']:.2f}x** |")
        lines.append("")
    if report.get("dataset"):
        lines += ["| dataset mode | images / s | similarity mean ± std (quartiles) |", "|---|---:|---|"]
        for result in report["dataset"].values():
            s = result["similarity"]
            spread = (f"{s['similarity_mean']:.3f} ± {s['similarity_std']:.3f} "
                      f"({', '.join(f'{q:.3f}' for q in s['quartiles'])})" if "similarity_mean" in s else "no faces")
            lines.append(f"| {result['mode']} | {result['images_per_s']:.3g} | {spread} |")
        lines += ["", "Random weights: the similarities say nothing about real faces (the identity check runs, "
                      "its scores are noise); the speeds are real."]
    if report["failures"]:
        lines += ["", "**Failures:**", *[f"- {f}" for f in report["failures"]]]
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    install = Path(os.environ["COMFYUI_DIR"]) if os.environ.get("COMFYUI_DIR") else None
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comfyui", type=Path, default=install / "ComfyUI" if install else Path("ComfyUI"),
                        help="a ComfyUI checkout (default: $COMFYUI_DIR/ComfyUI)")
    parser.add_argument("--comfyui-python", default=str(install / "venv" / "bin" / "python") if install
                        else sys.executable, help="the Python that runs ComfyUI (default: $COMFYUI_DIR/venv, else this)")
    parser.add_argument("--comfyui-args", nargs="*", default=[], help="more arguments for ComfyUI's main.py")
    parser.add_argument("--server", help="use this running ComfyUI (URL) instead of starting one; its models must be "
                                         "the test builders' (tests/fixtures_comfyui.py)")
    parser.add_argument("--comfyui-base", type=Path, help="with --server: its base folder (output/ is read)")
    parser.add_argument("--models", type=Path, help="a models folder already holding the random models")
    parser.add_argument("--out", type=Path, required=True, help="where gpu_check.json and gpu_check.md go")
    parser.add_argument("--work", type=Path, help="models and scratch (default: <out>/work; keep it to reuse models)")
    parser.add_argument("--cpu-smoke", action="store_true", help="everything on the CPU, small (what CI runs)")
    parser.add_argument("--variants", nargs="*", default=None, choices=["channels_last", "compile"],
                        help="the pack's speed-ups to time too (default on a GPU: channels_last compile)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["comfyui", "speed", "dataset"])
    parser.add_argument("--workflows", nargs="+", metavar="NAME",
                        help="run only these shipped workflows (default: all of them, and every node is then checked "
                             "to have run); CI's smoke run takes two, the other live tests run every workflow")
    parser.add_argument("--child-timeout", type=float, default=600)
    args = parser.parse_args(argv)
    for name in ("comfyui", "comfyui_base", "models", "out", "work"):   # ComfyUI runs in its own folder
        if getattr(args, name) is not None:
            setattr(args, name, getattr(args, name).resolve())
    args.comfyui_python = str(Path(args.comfyui_python).absolute()) if os.sep in args.comfyui_python \
        else args.comfyui_python
    args.work = args.work or args.out / "work"
    smoke = args.cpu_smoke
    args.device, args.dtype = ("cpu", "float32") if smoke else ("cuda", "float16")
    args.size, args.steps = (64, 2) if smoke else (512, 25)
    args.batches = [1, 2] if smoke else [1, 16]
    args.dataset_shape = (["--identities", "1", "--images-per-id", "2", "--ids-per-batch", "1"] if smoke else
                          ["--identities", "6", "--images-per-id", "8", "--ids-per-batch", "2"])
    if args.variants is None:
        args.variants = [] if smoke else ["channels_last", "compile"]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    report = {"command": " ".join(["python bench/gpu_check.py", *(argv if argv is not None else sys.argv[1:])]),
              "environment": preflight(args), "failures": []}
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    log("models")
    comfy_models = args.models or full_models(args.work / "models")
    headless = tiny_models(args.work / "tiny_models") if args.cpu_smoke else comfy_models
    lora = headless / "loras" / ("lcm.safetensors" if args.cpu_smoke else "lcm-lora-sdv1-5.safetensors")
    vae = vae_paths(headless, args.work, args.cpu_smoke)
    parts = (("comfyui", lambda: comfyui_part(args, comfy_models)), ("speed", lambda: speed_part(args, headless, vae)),
             ("dataset", lambda: dataset_part(args, headless, vae[0], lora)))
    for name, part in parts:
        if name in args.skip:
            continue
        log(name)
        try:
            report[name] = part()
            report["failures"] += report[name].get("failures", []) if name == "comfyui" else []
        except Exception as exc:  # noqa: BLE001  (reported; the next part still runs)
            report["failures"].append(f"{name}: {type(exc).__name__}: {str(exc)[-1500:]}")
            log(f"{name} FAILED: {str(exc)[-500:]}")
    report["seconds"] = time.perf_counter() - started
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    (args.out / "gpu_check.md").write_text(summary(report))
    log(f"done in {report['seconds']:.0f} s: {args.out / 'gpu_check.md'}; {len(report['failures'])} failure(s)")
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
