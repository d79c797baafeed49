"""Initial-noise optimisation for rare findings (InitNO, CVPR 2024; docs/methods.md §5).

Why: a model that rarely saw a (finding, side, zone, severity) combination often ignores
its words: the finding's tokens draw no attention at the first step, and the film comes
out without it. InitNO moves the initial noise, before sampling, to a place where they do.
The noise is reparameterised ``z_T = μ + σ ⊙ ε`` (``ε`` the seed's own noise) and ``μ``,
``log σ²`` are optimised with Adam on

* the response loss ``1 − max_i Ã_ik`` for the finding's tokens ``k`` (the worst token),
  ``Ã`` the cross-attention of the finest grid at the first sampling step
  (:class:`medcf.editing.energy.CrossAttentionProbe`, the same probe as the concentration
  energy), plus
* ``KL(N(μ, σ²) ‖ N(0, I))`` (per element), which keeps ``z_T`` a plausible Gaussian
  sample — without it the optimiser would leave the noise the model was trained on.

Bounded: at most ``rounds`` × ``iterations`` differentiable denoiser calls. A round that
does not bring the response loss under ``target`` starts again from a fresh ``ε`` (derived
from the seed, so a run is reproducible); the best noise seen is kept. What it cost and
what it reached is returned (:class:`NoiseReport`) and recorded with the output.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from medcf.editing.control import AttentionController
from medcf.editing.energy import CrossAttentionProbe, normalized_token_attention
from medcf.errors import InputError
from medcf.models.base import Generator, TextEncoding
from medcf.models.sampling import initial_noise


@dataclass(frozen=True)
class NoiseOptimization:
    """InitNO's settings (docs/methods.md §5: Adam lr 1e-2, up to ~5 rounds × 10 steps)."""

    rounds: int = 5
    iterations: int = 10
    learning_rate: float = 1e-2
    kl_weight: float = 1.0
    target: float = 0.2  # response loss at which a noise is good enough

    def __post_init__(self) -> None:
        if not (1 <= self.rounds <= 20 and 1 <= self.iterations <= 100):
            raise InputError(f"noise optimisation: rounds {self.rounds} (1..20) and iterations {self.iterations} "
                             "(1..100) bound its cost")


@dataclass
class NoiseReport:
    """What the optimisation did: recorded in ``pairs.jsonl`` / the generate manifest."""

    rounds: int
    denoiser_calls: int
    response_loss_before: float
    response_loss_after: float
    kl: float
    reached: bool
    seconds: float

    def to_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def response_loss(maps: list[torch.Tensor], tokens: list[int]) -> torch.Tensor:
    """``max_k (1 − max_i Ã_ik)`` averaged over the sites of ``maps``: small when every token
    of the finding has a place it is strongly attended to."""
    losses = []
    for probabilities in maps:
        peak = normalized_token_attention(probabilities, tokens).max(dim=1).values  # (batch, |tokens|)
        losses.append((1 - peak).max(dim=-1).values)
    return torch.stack(losses).mean()


def gaussian_kl(mean: torch.Tensor, log_variance: torch.Tensor) -> torch.Tensor:
    """``KL(N(μ, σ²) ‖ N(0, 1))`` per element, averaged."""
    return 0.5 * (mean.pow(2) + log_variance.exp() - 1 - log_variance).mean()


def round_seed(seed: int, round_index: int) -> int:
    """Round 0 starts from the seed's own noise; later rounds from seeds derived from it
    (not ``seed + r``, which is another pair's seed in ``medcf pairs``)."""
    if round_index == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), round_index]).generate_state(1)[0])


def optimize_initial_noise(generator: Generator, text: TextEncoding, tokens: list[int], seed: int, steps: int,
                           settings: NoiseOptimization = NoiseOptimization()) -> tuple[torch.Tensor, NoiseReport]:
    """Initial noise ``(1, C, h, w)`` for sampling the prompt encoded in ``text`` (one prompt,
    encoded once by the caller, who also found its ``tokens`` in it) with ``steps`` DDIM steps
    from ``seed``, optimised so that ``tokens`` are attended to at the first step."""
    if not tokens:
        raise InputError("noise optimisation: the prompt has no token of the finding to attend to")
    started = time.perf_counter()
    scheduler = generator.make_scheduler("ddim")
    scheduler.set_timesteps(steps, device=generator.device)
    first = scheduler.timesteps[0]
    probe = CrossAttentionProbe(generator, text)
    calls = 0
    best: tuple[float, torch.Tensor, float] | None = None
    before = None
    with AttentionController(generator, [probe], steps=steps):
        for round_index in range(settings.rounds):
            noise = initial_noise(generator, [round_seed(seed, round_index)]).float()
            mean = torch.zeros_like(noise, requires_grad=True)
            log_variance = torch.zeros_like(noise, requires_grad=True)
            optimizer = torch.optim.Adam([mean, log_variance], lr=settings.learning_rate)
            for iteration in range(settings.iterations + 1):
                with torch.enable_grad():
                    z = mean + (0.5 * log_variance).exp() * noise
                    model_input = scheduler.scale_model_input(z.to(generator.latent_dtype) * scheduler.init_noise_sigma,
                                                              first)
                    loss = response_loss(probe.attention_maps(model_input, int(first)), tokens).float()
                    kl = gaussian_kl(mean, log_variance)
                    calls += 1
                    value = float(loss.detach())
                    before = value if before is None else before
                    if best is None or value < best[0]:
                        best = (value, z.detach().clone(), float(kl.detach()))
                    if value < settings.target or iteration == settings.iterations:
                        break
                    # gradients of the noise's parameters only (none accumulate on the denoiser's weights)
                    mean.grad, log_variance.grad = torch.autograd.grad(loss + settings.kl_weight * kl,
                                                                       [mean, log_variance])
                optimizer.step()
            if best[0] < settings.target:
                break
    value, noise, kl = best
    report = NoiseReport(rounds=round_index + 1, denoiser_calls=calls, response_loss_before=before,
                         response_loss_after=value, kl=kl, reached=value < settings.target,
                         seconds=time.perf_counter() - started)
    return noise.to(generator.device, generator.latent_dtype), report
