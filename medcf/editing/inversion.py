"""Turning a given radiograph's latent back into a sampling trajectory (docs/methods.md §4).

- :func:`ddim_inversion`: run DDIM backwards (deterministic, approximate: the sampler
  does not retrace it exactly, so a reconstruction differs from the input);
- :func:`edit_friendly_inversion`: edit-friendly DDPM inversion (Huberman-Spiegelglas et
  al., CVPR 2024): noise the latent independently to every timestep, then choose each
  step's noise map so that the ``eta = 1`` sampler lands exactly on the next noised
  latent (the maps are kept scaled, ``σ_t z_t``). Sampling with those maps and the same conditioning reproduces the input
  latent (up to float rounding); changing the conditioning edits it.

Both use the scheduler the model was trained with (its noise schedule and timestep
spacing), through diffusers' ``DDIMScheduler.step`` — no re-implemented update rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from medcf.models.base import Generator, TextEncoding
from medcf.models.sampling import guided_prediction


@dataclass
class Trajectory:
    """``latents[i]`` is the latent entering sampling step ``i`` (``latents[steps]`` the clean
    latent); ``noise_maps`` the per-step added noise ``σ_t z_t`` of the edit-friendly
    inversion (else None)."""

    latents: list[torch.Tensor]
    timesteps: list[int]
    noise_maps: list[torch.Tensor] | None = None

    @property
    def steps(self) -> int:
        return len(self.timesteps)


def predicted_noise(generator: Generator, prediction: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """The noise the denoiser's ``prediction`` at ``x`` (cumulative alpha ``alpha``) implies,
    whatever it predicts (ε, v or x₀): inversion and the evidence check both reason in ε."""
    if generator.prediction_type == "epsilon":
        return prediction
    if generator.prediction_type == "v_prediction":
        return alpha.sqrt() * prediction + (1 - alpha).sqrt() * x
    return (x - alpha.sqrt() * prediction) / (1 - alpha).sqrt()


def ddim_inversion(generator: Generator, latents: torch.Tensor, text: TextEncoding, uncond: TextEncoding | None,
                   steps: int, guidance_scale: float) -> Trajectory:
    scheduler = generator.make_scheduler("ddim")
    scheduler.set_timesteps(steps, device=generator.device)
    timesteps = [int(t) for t in scheduler.timesteps]
    alphas = scheduler.alphas_cumprod.to(generator.device)
    x = latents.clone()
    path = [x]
    with torch.no_grad():
        for index in reversed(range(steps)):
            t = timesteps[index]
            alpha_prev = alphas[timesteps[index + 1]] if index + 1 < steps else scheduler.final_alpha_cumprod
            alpha_t = alphas[t]
            prediction = guided_prediction(generator, x, t, text, uncond, guidance_scale)
            eps = predicted_noise(generator, prediction, x, alpha_t)
            x0 = (x - (1 - alpha_prev).sqrt() * eps) / alpha_prev.sqrt()
            x = alpha_t.sqrt() * x0 + (1 - alpha_t).sqrt() * eps
            path.append(x)
    return Trajectory(list(reversed(path)), timesteps)


def edit_friendly_inversion(generator: Generator, latents: torch.Tensor, text: TextEncoding,
                            uncond: TextEncoding | None, steps: int, guidance_scale: float, seed: int = 0,
                            start_step: int = 0) -> Trajectory:
    """Noise maps for steps ``start_step..steps-1`` (earlier ones are not needed to edit)."""
    scheduler = generator.make_scheduler("ddim")
    scheduler.set_timesteps(steps, device=generator.device)
    timesteps = [int(t) for t in scheduler.timesteps]
    alphas = scheduler.alphas_cumprod.to(generator.device)
    rng = torch.Generator().manual_seed(int(seed))
    noised = []
    for t in timesteps:
        noise = torch.randn(latents.shape, generator=rng).to(latents.device, latents.dtype)
        noised.append(alphas[t].sqrt() * latents + (1 - alphas[t]).sqrt() * noise)
    noised.append(latents)
    maps = [torch.zeros_like(latents) for _ in timesteps]
    zeros = torch.zeros_like(latents)
    with torch.no_grad():
        for index in range(start_step, steps):
            t, x = timesteps[index], noised[index]
            prediction = guided_prediction(generator, x, t, text, uncond, guidance_scale)
            mean = scheduler.step(prediction, t, x, eta=1.0, variance_noise=zeros).prev_sample
            # σ_t z_t, kept scaled: exact even on a step whose σ_t is 0 (a last step to alpha = 1).
            maps[index] = noised[index + 1] - mean
    return Trajectory(noised, timesteps, maps)


def refresh_noise_maps(generator: Generator, trajectory: Trajectory, mask: torch.Tensor, share: float,
                       seed: int) -> Trajectory:
    """The trajectory with its edit-friendly noise maps partly replaced by fresh noise inside ``mask``.

    Why: the maps are chosen so that the sampler lands back on the *input*; inside the edit
    region they carry the input's own detail, so a re-sampled region is pulled back towards
    what it must lose (a removed effusion keeps its meniscus line) or keep (an added finding
    stays faint). ``share`` (0..1, times the latent ``mask``, ``(1, 1, h, w)``) of each map's
    variance is drawn afresh: ``sqrt(1 - w) · map + sqrt(w) · σ_t z``, ``σ_t`` the ``eta = 1``
    sampler's own noise scale (read off diffusers' step, not re-derived). Outside the mask
    the maps are untouched; ``share = 1`` makes the region an SDEdit re-sample from the
    same noised start.
    """
    if trajectory.noise_maps is None or share <= 0:
        return trajectory
    scheduler = generator.make_scheduler("ddim")
    scheduler.set_timesteps(trajectory.steps, device=generator.device)
    rng = torch.Generator().manual_seed(int(seed) + 1)  # not the inversion's own noise draw
    weight = (share * mask).clamp(0, 1)
    maps = []
    for t, old in zip(trajectory.timesteps, trajectory.noise_maps):
        zeros, ones = torch.zeros_like(old), torch.ones_like(old)
        sigma = (scheduler.step(zeros, t, zeros, eta=1.0, variance_noise=ones).prev_sample
                 - scheduler.step(zeros, t, zeros, eta=1.0, variance_noise=zeros).prev_sample)
        fresh = sigma * torch.randn(old.shape, generator=rng).to(old.device, old.dtype)
        maps.append(old if not old.any() else (1 - weight).sqrt() * old + weight.sqrt() * fresh)  # steps before the start stay unused zeros
    return Trajectory(trajectory.latents, trajectory.timesteps, maps)
