"""The command line's LCM speed mode options (``--scheduler lcm``, ``--lora``, ``--lora-strength``), over the diffusers
backend's LCM scheduler (``diffusers_backend.lcm``) and LoRA merge (``diffusers_backend.lora``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..diffusers_backend.lcm import SCHEDULERS, adds_noise, check_lcm_steps
from ..errors import InvalidInputError, WeightsNotFoundError


def add_lcm_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "LCM speed mode (SD1.5's LCM-LoRA: latent-consistency/lcm-lora-sdv1-5)",
        "e.g. --lora models/loras/lcm-lora-sdv1-5.safetensors --scheduler lcm --steps 3 --cfg 1.0")
    group.add_argument("--scheduler", choices=SCHEDULERS, default="dpmpp_2m",
                       help="sampler: dpmpp_2m (the paper's DPM-Solver++ 2M) or lcm (diffusers' LCMScheduler; use it "
                            "with an LCM LoRA, 2-4 steps, CFG 1.0)")
    group.add_argument("--lora", type=Path, default=None, metavar="FILE",
                       help="a UNet LoRA (.safetensors, kohya or diffusers keys) merged into the Arc2Face UNet")
    group.add_argument("--lora-strength", type=float, default=1.0, metavar="S", help="how strongly to apply --lora")


def check_lcm_arguments(args: argparse.Namespace) -> None:
    """Before anything loads: --lora-strength without --lora, lcm steps out of range, a missing --lora file."""
    if getattr(args, "lora", None) is None and getattr(args, "lora_strength", 1.0) != 1.0:
        raise InvalidInputError("--lora-strength needs a LoRA: pass --lora FILE")
    if adds_noise(getattr(args, "scheduler", "dpmpp_2m")):
        check_lcm_steps(args.steps)
    if getattr(args, "lora", None) is not None and not Path(args.lora).is_file():
        raise WeightsNotFoundError(f"LoRA file not found: {args.lora}. Pass the .safetensors file itself, e.g. "
                                   "models/loras/lcm-lora-sdv1-5.safetensors (latent-consistency/lcm-lora-sdv1-5's "
                                   "pytorch_lora_weights.safetensors; python -m arc2face_core.cli.downloads "
                                   "--with lcm puts it there)")


def apply_lcm_arguments(pipeline, args: argparse.Namespace) -> dict:
    """Set the pipeline's scheduler and merge --lora; returns what settings.json records about them."""
    from ..diffusers_backend.lora import apply_lora

    check_lcm_arguments(args)
    pipeline.scheduler_name = args.scheduler
    name = "LCMScheduler" if args.scheduler == "lcm" else "DPMSolverMultistepScheduler"
    info: dict = {"scheduler": {f"{name}.from_config": pipeline.SCHEDULER_CONFIG}}
    if adds_noise(args.scheduler):
        info["noise_between_steps"] = ("after each step but the last, the next torch.randn of the same shape from the "
                                       "same generator as the initial noise (diffusers' LCM pipeline with "
                                       "generator=torch.Generator('cpu').manual_seed(seed))")
    if args.lora is not None:
        layers = apply_lora(pipeline.unet, args.lora, args.lora_strength)
        pipeline.files["lora"] = str(args.lora)
        info.update(lora=str(args.lora), lora_strength=args.lora_strength, lora_layers=layers)
    return info
