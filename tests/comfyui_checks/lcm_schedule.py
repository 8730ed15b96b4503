"""ComfyUI's LCM route against diffusers' LCMScheduler, inside a real ComfyUI (its own model sampling and sampler).

Run by tests/integration/test_live_first_evening.py with ComfyUI's own interpreter, from DIR/ComfyUI:
    DIR/venv/bin/python <this file> <pack dir>
Prints one JSON object of measurements; the test asserts on them.

The workflow arc2face_lcm.json patches the model with the stock ModelSamplingDiscrete node set to ``lcm`` and samples
with sampler ``lcm`` + scheduler ``simple``. Here that model sampling (built exactly as the node builds it) and
ComfyUI's ``sample_lcm`` run a toy noise predictor (a fixed nonlinear function of the input and the timestep); the
same predictor runs through diffusers' LCMScheduler (from SD1.5's scheduler config, as the demo does) with the same
initial and between-step noise. Timesteps, sigmas and the final latents must agree; the two settings the issue warns
about (sgm_uniform, no ModelSamplingDiscrete) are measured too.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

from comfyui_boot import start_comfyui

start_comfyui()

import comfy.k_diffusion.sampling as kds  # noqa: E402
import comfy.model_sampling  # noqa: E402
import comfy.samplers  # noqa: E402
import torch  # noqa: E402
from comfy_extras.nodes_model_advanced import LCM, ModelSamplingDiscreteDistilled  # noqa: E402
from diffusers import LCMScheduler, PNDMScheduler  # noqa: E402

SD15_SCHEDULER_CONFIG = {   # stable-diffusion-v1-5/scheduler/scheduler_config.json
    "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False,
    "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
    "trained_betas": None}
SHAPE = (2, 4, 8, 8)


class LCMSampling(ModelSamplingDiscreteDistilled, LCM):   # what ModelSamplingDiscrete(sampling="lcm") builds
    pass


def eps_model(x_vp: torch.Tensor, t: float) -> torch.Tensor:
    """A toy epsilon predictor on the VP-scaled input (what both libraries feed the UNet)."""
    return torch.tanh(1.3 * x_vp + 0.002 * t) + 0.1 * torch.sin(x_vp * 3 + t / 100)


def comfy_run(ms, sigmas: torch.Tensor, noises: list[torch.Tensor]) -> torch.Tensor:
    def denoiser(x, sigma):   # BaseModel.apply_model: calculate_input -> UNet(x, timestep) -> calculate_denoised
        t = ms.timestep(sigma).float()
        return ms.calculate_denoised(sigma, eps_model(ms.calculate_input(sigma, x), float(t[0])), x)

    denoiser.inner_model = SimpleNamespace(inner_model=SimpleNamespace(model_sampling=ms))
    later = iter(noises[1:])
    x = ms.noise_scaling(sigmas[0], noises[0], torch.zeros(SHAPE), max_denoise=True)   # KSampler at denoise 1.0
    return kds.sample_lcm(denoiser, x, sigmas, disable=True, noise_sampler=lambda s, sn: next(later))


def diffusers_run(steps: int, noises: list[torch.Tensor]) -> tuple[list[int], torch.Tensor]:
    scheduler = LCMScheduler.from_config(PNDMScheduler.from_config(SD15_SCHEDULER_CONFIG).config)
    scheduler.set_timesteps(steps)
    generator = torch.Generator().manual_seed(1)
    latents = noises[0] * scheduler.init_noise_sigma
    for index, t in enumerate(scheduler.timesteps):
        step_noise = noises[index + 1] if index + 1 < len(noises) else torch.zeros(SHAPE)
        out = scheduler.step(eps_model(latents, float(t)), t, latents, generator=generator)
        if index < steps - 1:   # the scheduler's own noise replaced by the shared draw (same formula, same tensor)
            a_prev = scheduler.alphas_cumprod[int(scheduler.timesteps[index + 1])]
            latents = a_prev.sqrt() * out.denoised + (1 - a_prev).sqrt() * step_noise
        else:
            latents = out.prev_sample
    return scheduler.timesteps.tolist(), latents


def main() -> None:
    result = {}
    lcm = LCMSampling(None)
    plain = comfy.model_sampling.ModelSamplingDiscrete(None)
    class Eps(comfy.model_sampling.ModelSamplingDiscrete, comfy.model_sampling.EPS):   # noqa: E306
        pass
    eps = Eps(None)
    for steps in (2, 3, 4):
        generator = torch.Generator().manual_seed(steps)
        noises = [torch.randn(SHAPE, generator=generator) for _ in range(steps)]
        sigmas = comfy.samplers.calculate_sigmas(lcm, "simple", steps)
        timesteps, reference = diffusers_run(steps, noises)
        ours = comfy_run(lcm, sigmas, noises)
        alphas = LCMScheduler.from_config(SD15_SCHEDULER_CONFIG).alphas_cumprod
        expected_sigmas = [float(((1 - alphas[t]) / alphas[t]).sqrt()) for t in timesteps]
        result[str(steps)] = {
            "comfy_timesteps": [int(lcm.timestep(s)) for s in sigmas[:-1]],
            "diffusers_timesteps": timesteps,
            "sigma_rel_err": max(abs(float(s) - e) / e for s, e in zip(sigmas[:-1], expected_sigmas)),
            "final_max_abs_diff": float((ours - reference).abs().max()),
            "final_scale": float(reference.abs().mean()),
            "sgm_uniform_timesteps": [int(lcm.timestep(s)) for s in
                                      comfy.samplers.calculate_sigmas(lcm, "sgm_uniform", steps)[:-1]],
            "sgm_uniform_sigma_rel_err": max(
                abs(float(s) - e) / e for s, e in
                zip(comfy.samplers.calculate_sigmas(lcm, "sgm_uniform", steps)[:-1], expected_sigmas)),
            "without_lcm_sampling_timesteps": [round(float(plain.timestep(s))) for s in
                                               comfy.samplers.calculate_sigmas(plain, "simple", steps)[:-1]],
            "eps_route_final_max_abs_diff": float((comfy_run(eps, comfy.samplers.calculate_sigmas(eps, "simple", steps),
                                                             noises) - reference).abs().max()),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
