"""The one attention-control mechanism every editing method goes through (docs/methods.md §0).

An :class:`AttentionController` is both the attention processor installed on every
attention site of a :class:`~medcf.models.base.Generator` and the observer the sampler
advances step by step. Editing methods are small :class:`ControlMethod` objects that the
controller consults at each (site, step, branch):

- ``bias(call)``: an additive bias on the attention logits (regulation, enhancement);
- ``steer(call, hidden)``: a new layer output, after the output projection and before the
  residual add (activation steering);
- ``needs_maps``: ask the controller to compute probabilities explicitly and hand them to
  ``observe(call, probabilities)`` (energies, vector estimation). Off unless a method asks,
  so plain editing runs on the fused scaled-dot-product kernel.

Why one controller and not a processor per method: methods compose (``regulated+steer``)
without knowing about each other, and the classifier-free-guidance bookkeeping (which half
of the batch is conditional) lives in one place. No method copies a model's forward.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from medcf.models.base import CROSS, AttentionProcessor, AttentionSite, Generator, attention_probabilities
from medcf.models.sampling import COND, UNCOND


@dataclass
class AttentionCall:
    """Where one attention call happens: the site, the sampling step, and which batch rows
    belong to which classifier-free-guidance branch."""

    site: AttentionSite
    step: int
    steps: int
    timestep: int
    branches: tuple[str, ...]
    batch: int
    grid: tuple[int, int]
    first_step: int = 0

    @property
    def progress(self) -> float:
        """Fraction of this run done before the step: 0 at its first step, → 1 at the last
        (a run that starts part-way down an inverted trajectory counts from where it starts)."""
        return (self.step - self.first_step) / max(1, self.steps - self.first_step)

    def within(self, window: tuple[float, float]) -> bool:
        """Whether this step lies in ``window`` (fractions of the run, start inclusive)."""
        return window[0] <= self.progress < window[1]

    def rows(self, branch: str) -> slice:
        """The batch rows of one branch (``[uncond..., cond...]`` when guided)."""
        if branch not in self.branches:
            return slice(0, 0)
        per = self.batch // len(self.branches)
        index = self.branches.index(branch)
        return slice(index * per, (index + 1) * per)

    def branch_mask(self, branches: Iterable[str]) -> torch.Tensor:
        """Boolean ``(batch,)``: rows that belong to any of ``branches``."""
        mask = torch.zeros(self.batch, dtype=torch.bool)
        for branch in branches:
            mask[self.rows(branch)] = True
        return mask


class ControlMethod:
    """One editing method as the controller sees it. Every hook is optional."""

    #: compute attention probabilities explicitly and pass them to :meth:`observe`
    needs_maps: bool = False

    def maps_wanted(self, call: "AttentionCall") -> bool:
        """Whether this call's probabilities are wanted (default: ``needs_maps``)."""
        return self.needs_maps

    def attach(self, controller: "AttentionController") -> None:
        """Called when a controller takes the method (methods that call the denoiser keep it)."""

    def bias(self, call: AttentionCall, queries: int, keys: int) -> torch.Tensor | None:
        """Additive logit bias broadcastable to ``(batch, heads, queries, keys)``, or None."""
        return None

    def observe(self, call: AttentionCall, probabilities: torch.Tensor) -> torch.Tensor | None:
        """Probabilities ``(batch, heads, queries, keys)`` of this call (only if ``needs_maps``);
        return a tensor of the same shape to replace them (attention injection, Prompt-to-Prompt)."""

    def steer(self, call: AttentionCall, hidden: torch.Tensor) -> torch.Tensor:
        """The layer output ``(batch, tokens, channels)``; return it changed or as is."""
        return hidden

    def begin_step(self, step: int, timestep: int) -> None:
        """Called once before each denoiser call."""

    def prepare_latents(self, step: int, timestep: int, latents: torch.Tensor) -> torch.Tensor | None:
        """May return corrected latents before the step (energy-guided updates)."""
        return None

    def end_step(self, step: int, timestep: int, latents: torch.Tensor) -> torch.Tensor | None:
        """May return replaced latents after the step (latent blending)."""
        return None


class AttentionController(AttentionProcessor):
    """Installed on every site of ``generator``; consults ``methods`` in order.

    Use as a context manager (installs and always restores the model's own attention) and
    pass it to :func:`medcf.models.sampling.sample` as ``observer``.
    """

    def __init__(self, generator: Generator, methods: Sequence[ControlMethod] = (), steps: int = 1,
                 latent_hw: tuple[int, int] | None = None, first_step: int = 0):
        self.generator = generator
        self.methods = list(methods)
        self.steps, self.first_step = steps, first_step
        self.latent_hw = latent_hw or generator.latent_size
        self.step, self.timestep, self.branches = 0, 0, (COND,)
        self.calls = 0
        for method in self.methods:
            method.attach(self)

    # -- lifecycle -------------------------------------------------------------------
    def __enter__(self) -> "AttentionController":
        self.generator.set_attention_processor(self)
        return self

    def __exit__(self, *exc) -> None:
        self.generator.set_attention_processor(None)

    def begin_step(self, index: int, timestep: int, branches: tuple[str, ...]) -> None:
        self.step, self.timestep, self.branches = index, int(timestep), tuple(branches)
        for method in self.methods:
            method.begin_step(index, int(timestep))

    def end_step(self, index: int, timestep: int, latents: torch.Tensor) -> torch.Tensor | None:
        for method in self.methods:
            replaced = method.end_step(index, int(timestep), latents)
            latents = latents if replaced is None else replaced
        return latents

    def prepare_latents(self, index: int, timestep: int, latents: torch.Tensor) -> torch.Tensor:
        self.step, self.timestep = index, int(timestep)
        for method in self.methods:
            replaced = method.prepare_latents(index, int(timestep), latents)
            latents = latents if replaced is None else replaced
        return latents

    def set_branches(self, branches: tuple[str, ...]) -> None:
        """For denoiser calls outside the sampler (energy gradients, vector estimation)."""
        self.branches = tuple(branches)

    # -- the processor ------------------------------------------------------------------
    def _call(self, site: AttentionSite, batch: int) -> AttentionCall:
        if batch % len(self.branches):
            raise RuntimeError(f"batch {batch} does not split into branches {self.branches}")
        return AttentionCall(site, self.step, self.steps, self.timestep, self.branches, batch,
                             site.grid_for(self.latent_hw), self.first_step)

    def progress(self, step: int) -> float:
        return (step - self.first_step) / max(1, self.steps - self.first_step)

    def attend(self, site, query, key, value, *, scale, bias=None):
        self.calls += 1
        call = self._call(site, query.shape[0])
        total = bias
        for method in self.methods:
            extra = method.bias(call, query.shape[2], key.shape[2])
            if extra is not None:
                extra = extra.to(query.device, query.dtype)
                total = extra if total is None else total + extra
        observers = [m for m in self.methods if m.needs_maps and m.maps_wanted(call)]
        if observers:
            probabilities = attention_probabilities(query, key, scale, total)
            for method in observers:
                replaced = method.observe(call, probabilities)
                probabilities = probabilities if replaced is None else replaced
            return torch.einsum("bhqk,bhkd->bhqd", probabilities.to(value.dtype), value)
        if total is not None:
            total = total.expand(query.shape[0], query.shape[1], query.shape[2], key.shape[2])
        return F.scaled_dot_product_attention(query, key, value, attn_mask=total, scale=scale)

    def output(self, site, hidden):
        call = None
        for method in self.methods:
            if type(method).steer is not ControlMethod.steer:
                call = call or self._call(site, hidden.shape[0])
                hidden = method.steer(call, hidden)
        return hidden


def rows_bias(call: AttentionCall, bias: torch.Tensor, branches: Iterable[str]) -> torch.Tensor:
    """Broadcast a ``(queries, keys)`` bias to ``(batch, 1, queries, keys)``, zero on the rows
    of branches it must not touch (e.g. the unconditional half has no pathology words)."""
    rows = call.branch_mask(branches).to(bias.device, bias.dtype)
    return rows[:, None, None, None] * bias[None, None]


__all__ = ["AttentionCall", "AttentionController", "ControlMethod", "rows_bias", "COND", "UNCOND", "CROSS"]
