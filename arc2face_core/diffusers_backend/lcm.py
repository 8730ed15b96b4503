"""LCM speed mode of the diffusers pipeline, as the official demo offers it: SD1.5's LCM-LoRA, LCMScheduler, 3 steps,
CFG 1.0.

The demo swaps in ``LCMScheduler.from_config(pipeline.scheduler.config)`` (SD1.5's config: timesteps 999, 679, 339 for
3 steps, with its c_skip/c_out boundary condition) and loads ``latent-consistency/lcm-lora-sdv1-5``. Unlike DPM-Solver,
LCM adds fresh noise after every step but the last; here that noise is drawn from the same CPU generator as the
initial noise, one [N*k, C, h, w] draw per step, exactly as diffusers' pipeline draws it with
``generator=torch.Generator("cpu").manual_seed(seed)``. So the noise of a run is [N*k, steps, C, h, w] (index 0 the
initial noise), and slicing its rows still gives each batch its own part of one run.
"""

from __future__ import annotations

import torch

from ..errors import InvalidInputError

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
