"""Attention-concentration energy and its latent correction (docs/methods.md §2).

For each pathology token ``k`` of the conditional prompt, ``Ã_k`` is its spatial
attention (the cross-attention probabilities renormalised over the prompt tokens after
the start token, averaged over heads and over the finest cross-attention sites);
``E_k = 1 − Σ_{i∈M_T} Ã_ik / Σ_i Ã_ik`` and ``E = max_k E_k``. Before each early step
the latent takes a normalised gradient step ``z ← z − η_t ∇E / rms(∇E)`` (conditional
branch only), with a few extra refinement iterations at chosen steps until ``E`` falls
below a threshold — the only part of editing that back-propagates through the denoiser,
bounded by ``window`` and ``max_refinements`` (its cost is in the editor benchmark).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from medcf.editing.control import AttentionCall, ControlMethod
from medcf.editing.regions import EditRegion
from medcf.models.base import CROSS, Generator, TextEncoding
from medcf.models.sampling import COND


def concentration_energy(maps: list[torch.Tensor], target: torch.Tensor, tokens: list[int]) -> torch.Tensor:
    """``E`` from cross-attention probabilities ``(batch, heads, queries, keys)`` of sites on
    one grid whose flattened target mask is ``target`` ``(queries,)``."""
    energies = []
    for probabilities in maps:
        per_token = normalized_token_attention(probabilities, tokens)  # (batch, queries, |P|)
        inside = (per_token * target[None, :, None]).sum(dim=1)
        share = inside / per_token.sum(dim=1).clamp_min(1e-12)
        energies.append((1 - share).max(dim=-1).values)  # (batch,)
    return torch.stack(energies).mean()


def normalized_token_attention(probabilities: torch.Tensor, tokens: list[int]) -> torch.Tensor:
    """``Ã`` for ``tokens``: cross-attention probabilities ``(batch, heads, queries, keys)``
    averaged over heads, renormalised over the prompt's tokens after the start token (which
    soaks up most of the mass and says nothing of where a word goes); ``(batch, queries, |tokens|)``."""
    attention = probabilities.mean(dim=1)[..., 1:]
    attention = attention / attention.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    return attention[..., [k - 1 for k in tokens]]


@dataclass
class CrossAttentionProbe(ControlMethod):
    """One differentiable conditional denoiser call that keeps the cross-attention
    probabilities of the finest grid: what the concentration energy and the initial-noise
    optimisation (:mod:`medcf.editing.initno`) both measure. Needs the controller it runs
    under (``controller``)."""

    generator: Generator
    text: TextEncoding  # conditional prompt(s), one per batch row
    controller: object = None
    needs_maps: bool = False
    _maps: list[torch.Tensor] = field(default_factory=list, repr=False)
    _grid: tuple[int, int] | None = None

    def attach(self, controller) -> None:
        self.controller = controller

    def maps_wanted(self, call: AttentionCall) -> bool:
        return self.needs_maps and call.site.kind == CROSS and call.grid == self._grid

    def observe(self, call: AttentionCall, probabilities: torch.Tensor) -> None:
        self._maps.append(probabilities[call.rows(COND)])

    def _finest_grid(self) -> tuple[int, int]:
        hw = self.controller.latent_hw
        grids = [s.grid_for(hw) for s in self.generator.attention_sites() if s.kind == CROSS]
        return max(grids, key=lambda g: g[0] * g[1])

    @property
    def grid(self) -> tuple[int, int]:
        self._grid = self._grid or self._finest_grid()
        return self._grid

    def attention_maps(self, latents: torch.Tensor, timestep: int) -> list[torch.Tensor]:
        """The finest grid's cross-attention probabilities at ``latents`` (differentiable)."""
        _ = self.grid
        self._maps = []
        self.needs_maps = True
        saved = self.controller.branches
        self.controller.set_branches((COND,))
        try:
            t = torch.full((latents.shape[0],), int(timestep), device=latents.device, dtype=torch.long)
            self.generator.denoise(latents, t, self.text)
        finally:
            self.needs_maps = False
            self.controller.set_branches(saved)
        maps, self._maps = self._maps, []
        return maps


@dataclass
class ConcentrationEnergy(CrossAttentionProbe):
    """The latent correction (see the module's docstring)."""

    region: EditRegion = None
    tokens: list[int] = field(default_factory=list)
    step_size: float = 0.08
    window: tuple[float, float] = (0.0, 0.2)
    refine_at: tuple[int, ...] = (0,)
    max_refinements: int = 3
    threshold: float = 0.2
    history: list[tuple[int, float]] = field(default_factory=list)

    def energy(self, latents: torch.Tensor, timestep: int) -> torch.Tensor:
        """``E`` at ``latents`` (differentiable), one conditional denoiser call."""
        maps = self.attention_maps(latents, timestep)
        return concentration_energy(maps, self.region.target_tokens(self.grid).to(latents.device), self.tokens)

    def prepare_latents(self, step, timestep, latents):
        progress = self.controller.progress(step)
        if not self.tokens or not self.window[0] <= progress < self.window[1]:
            return None
        # A&E's schedule: η decays as sqrt(linspace(1, 0.5)) across the window.
        eta = self.step_size * float((1 - 0.5 * (progress - self.window[0]) / (self.window[1] - self.window[0])) ** 0.5)
        first = self.controller.first_step
        iterations = 1 + (self.max_refinements if step - first in self.refine_at else 0)
        z = latents
        for iteration in range(iterations):
            with torch.enable_grad():
                z = z.detach().requires_grad_(True)
                energy = self.energy(z, timestep)
                self.history.append((step, float(energy.detach())))
                if iteration > 0 and float(energy.detach()) < self.threshold:
                    break
                (gradient,) = torch.autograd.grad(energy, z)
            rms = gradient.pow(2).mean().sqrt().clamp_min(1e-12)
            z = (z - eta * gradient / rms).detach()
        return z
