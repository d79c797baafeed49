"""Attention grounding while the denoiser trains: the finding's words should look where the finding is.

Why: the default denoiser's cross-attention is nearly uniform over the prompt (peak share of
a finding's tokens 0.04-0.06 against a uniform 0.032, docs/editing.md), so it conditions a
film globally and there is no place where a finding's words act -- which is exactly where
MedCF's editor pushes (enhancement, concentration energy and region-restricted guidance all
work through those words' attention). Training with the finding's tokens tied to the
finding's place is TokenCompose's token loss (Wang et al., CVPR 2024) with the segmentation
masks replaced by what the simulated world gives for free: the footprint of the lesion,
``|factual − counterfactual|`` of one patient's pair (same anatomy, same acquisition, only the
finding differs).

Written here rather than taken from a library: TokenCompose ships as a training script for
Stable Diffusion, not as a reusable module; the loss is a few lines on top of MedCF's own
attention-site seam (:mod:`medcf.models.base`), which the editor already uses.

- :func:`lesion_masks`: per film and token grid, the cells holding the lesion (half its
  peak footprint; films without a paired lesion get an empty mask and no loss).
- :class:`GroundingProcessor`: installed on the denoiser's cross-attention sites during a
  training step, it keeps, per call, each film's attention to the finding's tokens.
- :func:`grounding_loss`: mean over sites and grounded films of ``(1 − share inside)²``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from medcf.editing.regulation import pathology_tokens
from medcf.models.adapters import diffusers_attention_modules
from medcf.models.base import (CROSS, AttentionProcessor, AttentionSite, DiffusersBackend, attention_probabilities,
                               probe_token_counts)
from medcf.training.world_sets import NONE, pair_starts
from medcf.vocab import Finding

#: a cell is "lesion" where the pair's pooled difference reaches this share of its peak
HALF_PEAK = 0.5


def lesion_footprints(images: np.ndarray, pair_starts: np.ndarray, latent_hw: tuple[int, int]) -> torch.Tensor:
    """``(N, h, w)`` float: for the factual film ``i`` of each pair starting at ``i``, the
    mean ``|film i − film i+1|`` over each latent cell; zero for every other film."""
    n, height, width = images.shape
    if height % latent_hw[0] or width % latent_hw[1]:
        raise ValueError(f"films {height}×{width} do not tile a {latent_hw} latent grid")
    footprints = torch.zeros((n, *latent_hw))
    for chunk in np.array_split(pair_starts, max(1, len(pair_starts) // 256)):
        if not len(chunk):
            continue
        factual = torch.from_numpy(images[chunk].astype(np.float32) / 65535.0)
        counterfactual = torch.from_numpy(images[chunk + 1].astype(np.float32) / 65535.0)
        difference = (factual - counterfactual).abs()[:, None]
        footprints[torch.from_numpy(chunk)] = F.adaptive_avg_pool2d(difference, latent_hw)[:, 0]
    return footprints


def lesion_masks(footprints: torch.Tensor, grids: Sequence[tuple[int, int]]) -> dict[tuple[int, int], torch.Tensor]:
    """Per token grid, ``(N, h·w)`` bool: cells whose pooled footprint is at least
    :data:`HALF_PEAK` of the film's peak at that grid (empty for a film without a footprint)."""
    masks = {}
    for grid in grids:
        pooled = F.adaptive_avg_pool2d(footprints[:, None], grid)[:, 0].flatten(1)
        peak = pooled.amax(dim=1, keepdim=True)
        masks[tuple(grid)] = (pooled >= HALF_PEAK * peak) & (peak > 0)
    return masks


class GroundingProcessor(AttentionProcessor):
    """Runs cross-attention with explicit probabilities and keeps, per call, each film's
    attention over image tokens to the tokens marked in :attr:`weights` ``(batch, keys)``,
    averaged over heads. Gradients flow through what it keeps."""

    def __init__(self) -> None:
        self.weights: torch.Tensor | None = None
        self.maps: list[torch.Tensor] = []

    def attend(self, site, query, key, value, *, scale, bias=None):
        if site.kind != CROSS or self.weights is None:
            return super().attend(site, query, key, value, scale=scale, bias=bias)
        probabilities = attention_probabilities(query, key, scale, bias)
        weights = self.weights.to(probabilities)
        self.maps.append(torch.einsum("bhqk,bk->bq", probabilities, weights) / probabilities.shape[1])
        return torch.einsum("bhqk,bhkd->bhqd", probabilities.to(value.dtype), value)


def cross_sites(denoiser: torch.nn.Module) -> list[AttentionSite]:
    """The cross-attention sites of a diffusers denoiser, ready for a processor."""
    return [AttentionSite(name, kind, module, heads, backend)
            for name, kind, module, heads, backend in diffusers_attention_modules(denoiser, DiffusersBackend())
            if kind == CROSS]


def share_inside(attention: torch.Tensor, masks: dict[tuple[int, int], torch.Tensor],
                 films: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(share, mask)`` for one kept map ``(batch, h·w)`` of a square grid: each film's share
    of that attention inside its lesion's cells (``films`` index the masks), and the masks."""
    side = int(round(attention.shape[1] ** 0.5))
    mask = masks[(side, side)][films].to(attention.device)
    share = (attention * mask.to(attention.dtype)).sum(dim=1) / attention.sum(dim=1).clamp_min(1e-8)
    return share, mask


def grounding_loss(maps: Sequence[torch.Tensor], masks: dict[tuple[int, int], torch.Tensor],
                   index: torch.Tensor, grounded: torch.Tensor) -> tuple[torch.Tensor, float]:
    """``(loss, mean share inside)`` over the kept maps: for each grounded film (``grounded``
    bool ``(batch,)``) the share of its finding-token attention that falls in its lesion's
    cells, pushed towards 1 as ``(1 − share)²``. Zero (with grad) when nothing is grounded."""
    losses, shares = [], []
    for attention in maps:
        share, mask = share_inside(attention, masks, index)
        keep = grounded.to(attention.device) & mask.any(dim=1)
        if not bool(keep.any()):
            continue
        share = share[keep]
        losses.append(((1.0 - share) ** 2).mean())
        shares.append(share.detach().mean())
    if not losses:
        zero = maps[0].sum() * 0.0 if maps else torch.zeros(())
        return zero, float("nan")
    return torch.stack(losses).mean(), float(torch.stack(shares).mean())


def token_grids(sites: Sequence[AttentionSite], denoiser: torch.nn.Module, latent_hw: tuple[int, int]) -> list[tuple[int, int]]:
    """The square token grids the cross-attention sites work at, probed with one forward pass."""
    config = denoiser.config
    tokens = probe_token_counts(sites, lambda: denoiser(
        torch.zeros(1, config.in_channels, *latent_hw), torch.zeros(1, dtype=torch.long),
        encoder_hidden_states=torch.zeros(1, 1, config.cross_attention_dim)))
    return sorted({(int(round(q ** 0.5)),) * 2 for q in tokens.values()}, reverse=True)


def measure_grounding(generator, world, timesteps: Sequence[int] = (200, 500, 800), seed: int = 0,
                      batch: int = 16, film: str = "factual") -> list[dict]:
    """Where a model's finding words look, on paired world films it did not train on.

    For every factual film of ``world``: noise its latent at each of ``timesteps`` (one fixed
    noise per film), run the denoiser once under the film's own prompt, and read the share of
    the finding tokens' cross-attention inside the lesion's cells, beside the share those
    cells hold of the grid (what uniform attention would give). One row per film and site
    grid, averaged over the timesteps and the sites of that grid.

    ``film="counterfactual"`` asks the question of an *add* edit instead: the same patient's
    film without the finding, under the prompt that names it -- do the words go where the
    finding would be (from the prompt's side and zone), not merely to a lesion they can see?"""
    if film not in ("factual", "counterfactual"):
        raise ValueError(f"film {film!r}: factual or counterfactual")
    from diffusers import DDPMScheduler


    starts = pair_starts(world, needed_by="measuring grounding")
    starts = starts[[world.records[i].get("finding") not in (None, NONE) for i in starts]]
    schedule = DDPMScheduler.from_config(generator.scheduler_config)
    latent_hw = tuple(generator.latent_size)
    sites = [s for s in generator.attention_sites() if s.kind == CROSS]
    grids = sorted({s.grid_for(latent_hw) for s in sites}, reverse=True)
    masks = lesion_masks(lesion_footprints(world.images, starts, latent_hw), grids)
    processor = GroundingProcessor()
    rows: list[dict] = []
    generator.set_attention_processor(processor)
    try:
        for begin in range(0, len(starts), batch):
            films = starts[begin:begin + batch]
            prompts = [world.records[i]["prompt"] for i in films]
            shown = films if film == "factual" else films + 1
            text = generator.encode_text(prompts)
            weights = torch.zeros((len(films), text.embeddings.shape[1]))
            for row, number in enumerate(films):
                weights[row, pathology_tokens(text, Finding(world.records[number]["finding"]), row)] = 1.0
            with torch.no_grad():
                latents = generator.encode_images(world.float_images(shown)[:, None])
                noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(seed + begin))
                shares = {grid: [] for grid in grids}
                for t in timesteps:
                    step = torch.full((len(films),), int(t), dtype=torch.long)
                    noisy = schedule.add_noise(latents, noise.to(latents), step)
                    processor.weights, processor.maps = weights, []
                    generator.denoise(noisy, step.to(generator.device), text)
                    for attention in processor.maps:
                        attention = attention.float().cpu()
                        side = int(round(attention.shape[1] ** 0.5))
                        shares[(side, side)].append(share_inside(attention, masks, torch.from_numpy(films))[0])
            for row, number in enumerate(films):
                record = world.records[number]
                for grid in grids:
                    mask = masks[grid][int(number)]
                    if not bool(mask.any()):
                        continue
                    rows.append({"film": int(number), "finding": record["finding"], "severity": record.get("severity"),
                                 "grid": f"{grid[0]}x{grid[1]}",
                                 "share_inside": float(torch.stack([s[row] for s in shares[grid]]).mean()),
                                 "area_share": float(mask.float().mean())})
    finally:
        generator.set_attention_processor(None)
    return rows
