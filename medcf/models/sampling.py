"""One sampling loop for every :class:`~medcf.models.base.Generator`: DDIM with
classifier-free guidance, per-image seeds, a step count and a progress bar.

The editor drives it through an observer (``begin_step`` / ``end_step``), never by
copying it: ``begin_step(index, timestep, branches)`` tells which batch halves are
unconditional and conditional before each denoiser call, ``end_step`` may replace
the latents (latent blending, energy-guided corrections).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from medcf.devices import precision_hint
from medcf.errors import InputError
from medcf.models.base import Generator, TextEncoding

UNCOND, COND = "uncond", "cond"


class SamplingObserver(Protocol):
    def begin_step(self, index: int, timestep: int, branches: tuple[str, ...]) -> None: ...

    def end_step(self, index: int, timestep: int, latents: torch.Tensor) -> torch.Tensor | None: ...


def _prepare(observer, index: int, timestep: int, latents: torch.Tensor) -> torch.Tensor:
    """An observer may also correct the latents *before* a step (``prepare_latents``:
    energy-guided latent updates); the hook is optional."""
    hook = getattr(observer, "prepare_latents", None)
    if hook is None:
        return latents
    replaced = hook(index, timestep, latents)
    return latents if replaced is None else replaced


@dataclass
class SampleResult:
    """Images ``(B, H, W)`` float32 in [0, 1] (bright = dense), the final latents, and how they were made."""

    images: np.ndarray | None
    latents: torch.Tensor
    prompts: list[str]
    seeds: list[int]
    steps: int
    guidance_scale: float
    seconds: float
    settings: dict = field(default_factory=dict)


def initial_noise(generator: Generator, seeds: Sequence[int], height: int | None = None,
                  width: int | None = None) -> torch.Tensor:
    """Unit Gaussian latents, one independent stream per seed: image ``i`` with seed ``s``
    is the same whatever the batch it is drawn in."""
    height = height or generator.image_size[0]
    width = width or generator.image_size[1]
    if height % generator.vae_factor or width % generator.vae_factor:
        raise InputError(f"image size {height}x{width} is not a multiple of the model's {generator.vae_factor}-pixel "
                         "latent cell")
    shape = (generator.latent_channels, height // generator.vae_factor, width // generator.vae_factor)
    noise = [torch.randn(shape, generator=torch.Generator().manual_seed(int(seed))) for seed in seeds]
    return torch.stack(noise).to(generator.device, generator.latent_dtype)


def guided_prediction(generator: Generator, latents: torch.Tensor, timestep, text: TextEncoding,
                      uncond: TextEncoding | None, guidance_scale: float | torch.Tensor) -> torch.Tensor:
    """One denoiser call, with classifier-free guidance when ``uncond`` is given: the
    batch is ``[uncond..., cond...]`` and the result ``u + g (c - u)``; ``g`` may be a map
    that broadcasts over the latents (guidance strong only where an edit goes)."""
    batch = latents.shape[0]
    if uncond is None:
        t = torch.full((batch,), int(timestep), device=latents.device, dtype=torch.long)
        return generator.denoise(latents, t, text)
    t = torch.full((2 * batch,), int(timestep), device=latents.device, dtype=torch.long)
    both = generator.denoise(torch.cat([latents, latents]), t, TextEncoding.cat([uncond, text]))
    prediction_uncond, prediction_cond = both.chunk(2)
    return prediction_uncond + guidance_scale * (prediction_cond - prediction_uncond)


def sample(generator: Generator, prompts: str | Sequence[str], *, seed: int | Sequence[int] = 0, steps: int = 25,
           guidance_scale: float | torch.Tensor | None = None, negative_prompt: str = "", height: int | None = None,
           width: int | None = None, eta: float = 0.0, latents: torch.Tensor | None = None,
           observer: SamplingObserver | None = None, progress: bool = True, decode: bool = True,
           start_step: int = 0, noise_maps: Sequence[torch.Tensor] | None = None,
           text: TextEncoding | None = None) -> SampleResult:
    """Generate one image per prompt.

    ``seed``: one int (image ``i`` gets ``seed + i``) or one seed per prompt.
    ``guidance_scale``: classifier-free guidance (default: the model's); ``<= 1`` runs
    the conditional branch alone; a tensor is a guidance map broadcast over the latents
    (``(1, 1, h, w)``: the editor's region-restricted guidance). ``latents``: start from these instead of noise.
    ``start_step``: skip the first steps; ``latents`` are then the trajectory at that
    step's timestep (editing from an inverted trajectory). ``noise_maps``: the noise added
    at each step of an ``eta = 1`` sampler, already scaled (``σ_t z_t``), from the
    edit-friendly DDPM inversion (docs/methods.md §4).
    ``text``: an already encoded prompt batch (conditioning that is not plain text).
    """
    from tqdm import tqdm

    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise InputError("no prompt to sample")
    if steps < 1:
        raise InputError(f"--steps {steps}: at least one sampling step is needed")
    seeds = [int(seed) + i for i in range(len(prompts))] if isinstance(seed, int) else [int(s) for s in seed]
    if len(seeds) != len(prompts):
        raise InputError(f"{len(seeds)} seed(s) for {len(prompts)} prompt(s)")
    if isinstance(guidance_scale, torch.Tensor):
        guidance = guidance_scale.to(generator.device, generator.latent_dtype)
        guided = float(guidance.max()) > 1.0
    else:
        guidance = generator.guidance_scale if guidance_scale is None else float(guidance_scale)
        guided = guidance > 1.0
    started = time.perf_counter()
    scheduler = generator.make_scheduler("ddim")
    scheduler.set_timesteps(steps, device=generator.device)
    if not 0 <= start_step < steps:
        raise InputError(f"start step {start_step} is outside 0..{steps - 1}")
    if noise_maps is not None and len(noise_maps) != steps:
        raise InputError(f"{len(noise_maps)} noise maps for {steps} steps")
    if latents is None:
        x = initial_noise(generator, seeds, height, width) * scheduler.init_noise_sigma
    else:
        x = latents.to(generator.device, generator.latent_dtype)
        x = x * scheduler.init_noise_sigma if start_step == 0 else x
    with torch.no_grad():
        text = generator.encode_text(prompts) if text is None else text
        uncond = generator.unconditional(len(prompts), negative_prompt) if guided else None
    branches = (UNCOND, COND) if guided else (COND,)
    timesteps = scheduler.timesteps
    for index in tqdm(range(start_step, steps), desc="sampling", unit="step", disable=not progress):
        t = timesteps[index]
        if observer is not None:
            x = _prepare(observer, index, int(t), x)
            observer.begin_step(index, int(t), branches)
        with torch.no_grad():
            model_input = scheduler.scale_model_input(x, t)
            prediction = guided_prediction(generator, model_input, t, text, uncond, guidance)
            if noise_maps is None:
                x = scheduler.step(prediction, t, x, eta=eta).prev_sample
            else:
                mean = scheduler.step(prediction, t, x, eta=1.0, variance_noise=torch.zeros_like(x)).prev_sample
                x = mean + noise_maps[index].to(x.device, x.dtype)
        if observer is not None:
            replaced = observer.end_step(index, int(t), x)
            if replaced is not None:
                x = replaced
    images = generator.decode_images(x) if decode else None
    if images is not None and not np.isfinite(images).all():
        raise InputError(f"the model {generator.source} produced NaN/inf pixels; refusing its output"
                         + precision_hint(generator.dtype))
    scale = float(guidance.max()) if isinstance(guidance, torch.Tensor) else guidance
    return SampleResult(images, x, prompts, seeds, steps, scale, time.perf_counter() - started,
                        {"scheduler": "DDIM", "eta": 1.0 if noise_maps is not None else eta, "start_step": start_step, "negative_prompt": negative_prompt,
                         "timesteps": [int(t) for t in scheduler.timesteps]})
