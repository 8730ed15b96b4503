"""Load times, peak memory and seconds per step, with random weights in the real layouts (no downloads).

Each phase runs in a fresh subprocess so its peak resident memory (ru_maxrss) is its own.

    python scripts/benchmark.py [--work DIR] [--device cpu] [--full-step-size 512]

Phases: the full-size ID encoder (fp32 pickle, 123M parameters) load + encode; the full-size SD1.5-shaped UNet (fp16
safetensors, 860M parameters) load in fp32; seconds per denoising step for the tiny test UNet and the full UNet.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0   # KiB on Linux


def phase_encoder(work: Path, device: str) -> dict:
    import torch

    from arc2face_core.identity.encoder import load_id_encoder

    t0 = time.perf_counter()
    encoder = load_id_encoder(work / "arc2face" / "encoder" / "pytorch_model.bin").to(device)
    load_s = time.perf_counter() - t0
    embeds = torch.nn.functional.normalize(torch.randn(4, 512), dim=1)
    encoder.encode(embeds)
    t0 = time.perf_counter()
    for _ in range(5):
        encoder.encode(embeds)
        encoder.encode_empty()
    encode_s = (time.perf_counter() - t0) / 5
    return {"encoder_load_s": round(load_s, 2), "encode_4_ids_plus_negative_s": round(encode_s, 3),
            "encoder_peak_rss_mb": round(_peak_mb())}


def phase_unet(work: Path, device: str) -> dict:
    import torch

    from arc2face_core.headless.model_files import find_unet, load_unet

    t0 = time.perf_counter()
    unet = load_unet(*find_unet([work / "arc2face"])).to(device, torch.float32)   # the file is fp16; run in fp32
    return {"unet_load_s": round(time.perf_counter() - t0, 2), "unet_params_m": round(
        sum(p.numel() for p in unet.parameters()) / 1e6), "unet_peak_rss_mb": round(_peak_mb())}


def _seconds_per_step(unet, size: int, batch: int, device: str, steps: int) -> float:
    import torch

    latent = torch.randn(2 * batch, unet.config.in_channels, size // 8, size // 8, device=device)
    cond = torch.randn(2 * batch, 77, unet.config.cross_attention_dim, device=device)
    with torch.no_grad():
        unet(latent, 999, encoder_hidden_states=cond)   # warm-up
        t0 = time.perf_counter()
        for t in range(steps):
            unet(latent, 999 - t, encoder_hidden_states=cond)
    return (time.perf_counter() - t0) / steps


def phase_steps(work: Path, device: str, full_size: int) -> dict:
    import torch

    from arc2face_core.headless.model_files import find_unet, load_unet

    tiny = load_unet(*find_unet([work / "tiny"])).to(device, torch.float32)
    out = {"tiny_unet_s_per_step_64px_batch1_cfg": round(_seconds_per_step(tiny, 64, 1, device, 10), 4)}
    full = load_unet(*find_unet([work / "arc2face"])).to(device, torch.float32)
    out[f"full_unet_s_per_step_{full_size}px_batch1_cfg"] = round(_seconds_per_step(full, full_size, 1, device, 2), 2)
    out["full_unet_s_per_step_64px_batch1_cfg"] = round(_seconds_per_step(full, 64, 1, device, 3), 3)
    return out


def build(work: Path) -> None:
    sys.path.insert(0, str(REPO / "tests"))
    from builders import clip_encoder, sd15_random, tiny_diffusers

    if not (work / "arc2face" / "encoder" / "pytorch_model.bin").is_file():
        clip_encoder.write_encoder(work / "arc2face", full_size=True)
    if not (work / "arc2face" / "arc2face" / "diffusion_pytorch_model.safetensors").is_file():
        sd15_random.write_unet(work / "arc2face" / "arc2face")
    if not (work / "tiny" / "arc2face" / "diffusion_pytorch_model.safetensors").is_file():
        tiny_diffusers.write_tiny_unet(work / "tiny")


PHASES = {"encoder": phase_encoder, "unet": phase_unet, "steps": phase_steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "arc2face_benchmark")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--full-step-size", type=int, default=512)
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    if args.phase:
        extra = (args.full_step_size,) if args.phase == "steps" else ()
        print(json.dumps(PHASES[args.phase](args.work, args.device, *extra)))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    build(args.work)
    results = {}
    for phase in PHASES:
        proc = subprocess.run([sys.executable, __file__, "--phase", phase, "--work", str(args.work), "--device",
                               args.device, "--full-step-size", str(args.full_step_size)],
                              capture_output=True, text=True, check=True)
        results.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    import torch

    results.update(torch=torch.__version__, threads=torch.get_num_threads(), device=args.device)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
