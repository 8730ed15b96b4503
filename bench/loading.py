"""Loading the ID encoder and the UNet: the pack against transformers / diffusers ``from_pretrained``, same files.

    python bench/loading.py --data /work/bench-data --lock /work/locks/comfy.lock [--only encoder|unet] [--pairs 5]

* encoder: ``load_id_encoder`` against ``CLIPTextModel.from_pretrained`` on ``encoder/{config.json,
  pytorch_model.bin}`` (fp32 pickle, ``text_model.*`` keys, 123M parameters). Timed: importing the library and
  loading (``import torch`` comes first on both sides and is not counted). Peak memory after the same work: load,
  then the tower on 4 pseudo-prompt rows and on the empty prompt.
* UNet: ``load_unet`` against ``UNet2DConditionModel.from_pretrained`` on ``arc2face/{config.json,
  diffusion_pytorch_model.safetensors}`` (fp32, 860M parameters). diffusers only maps the file and a forward pass is
  the first thing that reads it, so the work for peak memory is load + one denoising step (batch 2, as one image with
  CFG, at 512 px); import + load + that step is reported too.

Both sides do the same computation: the children report a checksum of an output both compute (the empty-prompt
hidden states; the step's noise prediction) and the parent refuses to write a result where they differ.
Writes its sections of bench/RESULTS.md. Files: see bench/data.py (built first if missing).
"""

from __future__ import annotations

import argparse
import json
import sys
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


# ---- children -------------------------------------------------------------------------------------------------------

def child_encoder(side: str, data: Path, pseudo_ids: list[int], empty_ids: list[int]) -> dict:
    import torch

    clock = Clock()
    weights, config = bench_data.encoder_files(data)
    if side == "pack":
        from arc2face_core.identity.encoder import load_id_encoder

        clock.mark("import")
        load = lambda: load_id_encoder(weights, config)  # noqa: E731
        encoder = load()
        clock.mark("load")
        embeds = torch.nn.functional.normalize(torch.randn(4, 512, generator=torch.Generator().manual_seed(0)), dim=1)
        encoder.encode(embeds)
        negative, _ = encoder.encode_empty()
    else:
        from transformers import CLIPTextModel

        clock.mark("import")
        load = lambda: CLIPTextModel.from_pretrained(weights.parent)  # noqa: E731
        model = load()
        clock.mark("load")
        with torch.no_grad():
            model(input_ids=torch.tensor([pseudo_ids] * 4))
            negative = model(input_ids=torch.tensor([empty_ids])).last_hidden_state
    clock.mark("work")
    peak = peak_rss_mib()
    encoder = model = None  # noqa: F841  (freed before the second load)
    return dict(clock.marks, peak_mib=peak, reload_s=_timed(load), checksum=float(negative.double().sum()),
                abs_checksum=float(negative.double().abs().sum()))


def child_unet(side: str, data: Path, size: int) -> dict:
    import torch

    clock = Clock()
    folder = bench_data.unet_folder(data)
    if side == "pack":
        from arc2face_core.diffusers_backend.model_files import load_unet

        clock.mark("import")
        load = lambda: load_unet(folder / "diffusion_pytorch_model.safetensors", folder / "config.json")  # noqa: E731
    else:
        from diffusers import UNet2DConditionModel

        clock.mark("import")
        load = lambda: UNet2DConditionModel.from_pretrained(folder)  # noqa: E731
    unet = load()
    clock.mark("load")
    load_peak = peak_rss_mib()
    latents = torch.randn(2, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(0))
    context = torch.randn(2, 77, 768, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        eps = unet(latents, 999, encoder_hidden_states=context).sample
    clock.mark("step")
    peak = peak_rss_mib()
    del unet
    return dict(clock.marks, load_peak_mib=load_peak, peak_mib=peak, reload_s=_timed(load),
                checksum=float(eps.double().sum()), abs_checksum=float(eps.double().abs().sum()))


def _timed(load) -> float:
    """Seconds of a second load in the same process, the first model freed: the library is imported and the file
    cached, as in a ComfyUI session."""
    import gc

    gc.collect()
    start = time.perf_counter()
    load()
    return time.perf_counter() - start


# ---- parent ---------------------------------------------------------------------------------------------------------

ENCODER_NOTES = (
    "Both map the file and assign its tensors without a copy; the pack does not import transformers and also reads "
    "every weight once to refuse NaN/inf (transformers does not check), which is the whole of its \"load again\" "
    "time. Its peak memory includes those pages (the token table is read in full); transformers' includes its "
    "larger import.")
UNET_NOTES = (
    "diffusers maps the file and reads nothing until the first step. The pack maps it too while diffusers is "
    "imported, and checks every weight for NaN/inf (about 0.5 CPU-seconds for 3.4 GB) in a worker thread that "
    "starts when load_unet returns (started earlier, on two cores, it slowed the import by about a tenth); the "
    "UNet's first forward call waits for it, so a corrupt file is refused before anything is computed. In a "
    "headless run the check overlaps the encoder's and the VAE's loading; here nothing follows the load but the "
    "step, so import + load + one step (both sides have then read the whole file, and the pack has checked it) is "
    "the like-for-like time. \"Load again\" times the load alone.")


def _same_output(pairs, tolerance: float = 1e-4) -> tuple[bool, str]:
    """Every run's output checksum equals the first pack run's (relative to the absolute sum)."""
    ref = pairs.pack[0]
    worst = max(abs(r["checksum"] - ref["checksum"]) / ref["abs_checksum"] for r in pairs.pack + pairs.baseline)
    return worst <= tolerance, f"largest checksum difference {worst:.1e} of the output's absolute sum"


def measure_encoder(args, log) -> str:
    from arc2face_core.identity import prompt_tokens as tok

    ids = [tok.padded_ids(tok.PSEUDO_PROMPT_IDS).tolist(), tok.padded_ids(tok.EMPTY_PROMPT_IDS).tolist()]

    def run(side: str) -> dict:
        return run_child(SCRIPT, ["--child", f"encoder:{side}", "--data", str(args.data), "--ids", json.dumps(ids)])

    log("encoder: load_id_encoder vs transformers CLIPTextModel.from_pretrained")
    pairs = paired_runs(run, args.pairs, log)
    same, detail = _same_output(pairs)
    if not same:
        raise SystemExit(f"encoder: the two sides computed different outputs ({detail}); not writing results")
    base = "transformers"
    rows = [
        ("encoder: import + load", "s", base, pairs.median("pack", "load_s"), pairs.median("baseline", "load_s"),
         pairs.ratio("load_s")),
        ("encoder: peak memory, load + encode 4 rows and the empty prompt", "MiB", base,
         pairs.median("pack", "peak_mib"), pairs.median("baseline", "peak_mib"), pairs.ratio("peak_mib")),
        ("encoder: CPU time of import + load (all threads)", "s", base, pairs.median("pack", "load_cpu_s"),
         pairs.median("baseline", "load_cpu_s"), pairs.ratio("load_cpu_s")),
        ("encoder: load again in the same process (library imported, file cached)", "s", base,
         pairs.median("pack", "reload_s"), pairs.median("baseline", "reload_s"), pairs.ratio("reload_s")),
    ]
    return _section("Encoder loading", "`load_id_encoder` against transformers' `CLIPTextModel.from_pretrained`",
                    rows, pairs, ["load_s", "peak_mib", "reload_s"], detail,
                    {"files": "encoder/pytorch_model.bin (fp32 pickle, text_model.* keys, 123M parameters) + "
                              "config.json, random values (bench/data.py)"}, ENCODER_NOTES)


def measure_unet(args, log) -> str:
    def run(side: str) -> dict:
        return run_child(SCRIPT, ["--child", f"unet:{side}", "--data", str(args.data), "--size", str(args.size)])

    log("unet: load_unet vs diffusers UNet2DConditionModel.from_pretrained")
    pairs = paired_runs(run, args.pairs, log)
    same, detail = _same_output(pairs)
    if not same:
        raise SystemExit(f"unet: the two sides computed different outputs ({detail}); not writing results")
    base = "diffusers"
    rows = [
        ("UNet: import + load", "s", base, pairs.median("pack", "load_s"), pairs.median("baseline", "load_s"),
         pairs.ratio("load_s")),
        (f"UNet: peak memory, load + one step ({args.size} px, batch 2)", "MiB", base,
         pairs.median("pack", "peak_mib"), pairs.median("baseline", "peak_mib"), pairs.ratio("peak_mib")),
        ("UNet: import + load + one step", "s", base, pairs.median("pack", "step_s"),
         pairs.median("baseline", "step_s"), pairs.ratio("step_s")),
        ("UNet: CPU time of import + load (all threads)", "s", base, pairs.median("pack", "load_cpu_s"),
         pairs.median("baseline", "load_cpu_s"), pairs.ratio("load_cpu_s")),
        ("UNet: peak memory right after loading (before the step)", "MiB", base,
         pairs.median("pack", "load_peak_mib"), pairs.median("baseline", "load_peak_mib"),
         pairs.ratio("load_peak_mib")),
        ("UNet: load again in the same process (library imported, file cached)", "s", base,
         pairs.median("pack", "reload_s"), pairs.median("baseline", "reload_s"), pairs.ratio("reload_s")),
    ]
    return _section("UNet loading", "`load_unet` against diffusers' `UNet2DConditionModel.from_pretrained`",
                    rows, pairs, ["load_s", "peak_mib", "step_s", "reload_s"], detail,
                    {"files": "arc2face/diffusion_pytorch_model.safetensors (fp32, 860M parameters) + config.json, "
                              "random values (bench/data.py)"}, UNET_NOTES)


def _section(title: str, what: str, rows, pairs, raw_keys, same_detail: str, extra: dict, notes: str) -> str:
    info = environment(dict(extra, pairs=f"{len(pairs.pack)} (+1 warm-up), each side a fresh process"))
    return (f"## {title}\n\n{what}.\n\n```\n{command_line()}\n```\n\n{table(rows)}\n\n"
            f"Same work on both sides: {same_detail}.\n\n{notes}\n\n{environment_lines(info)}\n\n"
            f"<details><summary>every pair</summary>\n\n{raw_runs(pairs, raw_keys)}\n\n</details>\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=bench_data.default_data_dir())
    parser.add_argument("--lock", type=Path, help="hold this flock file while measuring (the machine's memory lock)")
    parser.add_argument("--only", choices=["encoder", "unet"])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--size", type=int, default=512, help="image size of the UNet's denoising step (pixels)")
    parser.add_argument("--no-write", action="store_true", help="print the sections instead of writing RESULTS.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--ids", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        model, side = args.child.split(":")
        if model == "encoder":
            pseudo, empty = json.loads(args.ids)
            emit(child_encoder(side, args.data, pseudo, empty))
        else:
            emit(child_unet(side, args.data, args.size))
        return
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    with held(args.lock):
        bench_data.build(args.data)
        sections = {name: measure(args, log) for name, measure in (("encoder", measure_encoder),
                                                                    ("unet", measure_unet))
                    if args.only in (None, name)}
    for name, section in sections.items():
        print(section) if args.no_write else write_section(f"{name}-loading", section)


if __name__ == "__main__":
    main()
