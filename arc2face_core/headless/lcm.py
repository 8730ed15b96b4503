"""LCM speed mode of the headless pipeline, as the official demo offers it: SD1.5's LCM-LoRA, LCMScheduler, 3 steps,
CFG 1.0.

The demo swaps in ``LCMScheduler.from_config(pipeline.scheduler.config)`` (SD1.5's config: timesteps 999, 679, 339 for
3 steps, with its c_skip/c_out boundary condition) and loads ``latent-consistency/lcm-lora-sdv1-5``. Unlike DPM-Solver,
LCM adds fresh noise after every step but the last; here that noise is drawn from the same CPU generator as the
initial noise, one [N*k, C, h, w] draw per step, exactly as diffusers' pipeline draws it with
``generator=torch.Generator("cpu").manual_seed(seed)``. So the noise of a run is [N*k, steps, C, h, w] (index 0 the
initial noise), and slicing its rows still gives each batch its own part of one run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..errors import InvalidInputError, WeightsNotFoundError

SCHEDULERS = ("dpmpp_2m", "lcm")   # DPM-Solver++ 2M (the paper's), LCM (with an LCM LoRA)
LCM_MAX_STEPS = 50   # LCMScheduler's original_inference_steps for SD1.5's config


def make_lcm_scheduler(config: dict):
    from diffusers import LCMScheduler

    return LCMScheduler.from_config(config)


def adds_noise(scheduler_name: str) -> bool:
    """Whether the sampler adds noise between steps (then the run's noise carries one draw per step)."""
    return scheduler_name == "lcm"


def check_lcm_steps(steps: int) -> None:
    """LCMScheduler picks its steps among the 50 of its distillation schedule (original_inference_steps)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= LCM_MAX_STEPS:
        raise InvalidInputError(f"steps must be 1 to {LCM_MAX_STEPS} with the lcm scheduler (its distillation "
                                f"schedule has {LCM_MAX_STEPS} timesteps; 2-4 is its range), got {steps!r}")


def draw_step_noise(generator: torch.Generator, first: torch.Tensor, steps: int) -> torch.Tensor:
    """[count, steps, C, h, w]: ``first`` (the initial draw) then steps-1 more draws of its shape from ``generator``."""
    draws = [first] + [torch.randn(first.shape, generator=generator, dtype=first.dtype) for _ in range(steps - 1)]
    return torch.stack(draws, dim=1)


def lcm_step(scheduler, eps: torch.Tensor, t, index: int, latents: torch.Tensor,
             noise: torch.Tensor) -> torch.Tensor:
    """One LCMScheduler step with the run's own noise (``noise`` [B, C, h, w], used unless it is the last step)."""
    spare = torch.Generator(device=latents.device).manual_seed(0)   # LCMScheduler draws noise too: not from torch's
    out = scheduler.step(eps, t, latents, generator=spare, return_dict=True)   # global generator, and unused
    timesteps = scheduler.timesteps
    if index == len(timesteps) - 1:
        return out.prev_sample   # the last step returns the denoised sample, as LCMScheduler does
    alpha_prev = scheduler.alphas_cumprod[int(timesteps[index + 1])].to(latents.device, torch.float32)
    denoised = out.denoised
    return (alpha_prev.sqrt() * denoised + (1 - alpha_prev).sqrt() * noise.to(denoised)).to(latents.dtype)


# ------------------------------------------------------------------------------------------------- command line

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
                                   "pytorch_lora_weights.safetensors; python -m arc2face_core.headless.downloads "
                                   "--with lcm puts it there)")


def apply_lcm_arguments(pipeline, args: argparse.Namespace) -> dict:
    """Set the pipeline's scheduler and merge --lora; returns what settings.json records about them."""
    from .lora import apply_lora

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
