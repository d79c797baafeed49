"""Training the factor model (:mod:`medcf.causal.factors`) on the simulated world's exact
pairs: the same patient, pose and anatomy rendered with and without one finding.

Losses (methods.md §5), per batch of ``batch`` pairs (factual ``f``, counterfactual ``c``):

- reconstruction: each film from its own factors, L2 + λ(1 − SSIM) on the latent grid;
- group swap: ``decode(z_id(c), z_path(f)) = f`` and ``decode(z_id(f), z_path(c)) = c``,
  exactly, because the world renders both; plus ``z_id(f) = z_id(c)``;
- prior swap: the same two swaps with ``z_path`` named by the attribute prior instead of
  read from the other film: this is the path an edit takes;
- KL of each posterior to ``N(prior(attributes), I)``;
- finding classification on the posterior mean of ``z_path``;
- swap consistency across patients: patient i's anatomy with patient j's pathology,
  re-encoded, gives back ``z_id(i)`` and ``z_path(j)``;
- independence: HSIC (linear kernels, i.e. the squared Frobenius norm of the
  cross-covariance) between the pooled ``z_id`` and ``z_path``.

Then a second phase fits the pathology encoder alone to the frozen rest
(:func:`posterior_losses`).

The latents are the default model's autoencoder means (scaled), cached per autoencoder.
A run folder keeps checkpoints and ``log.jsonl``; ``--resume`` continues from the newest
checkpoint with the same batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medcf.causal.factors import (NONE, Attributes, FactorConfig, FactorModel, FactorRecord, attribute_tensor,
                                  autoencoder_fingerprint)
from medcf.errors import InputError

SWAP_SEED = 1_700_000  # held-out patients of the swap test (apart from every other range)


@dataclass
class PairLatents:
    """A world set's pairs as latents: ``factual[i]`` and ``counterfactual[i]`` are one
    patient; ``attributes[i]`` is the factual film's main finding."""

    factual: torch.Tensor
    counterfactual: torch.Tensor
    attributes: list[Attributes]
    seeds: list[int]

    def __len__(self) -> int:
        return len(self.attributes)

    def subset(self, indices) -> "PairLatents":
        indices = list(indices)
        return PairLatents(self.factual[indices], self.counterfactual[indices],
                           [self.attributes[i] for i in indices], [self.seeds[i] for i in indices])


def encode_pairs(world, generator, batch: int = 32, progress: bool = True) -> PairLatents:
    """The latents of every factual/counterfactual pair of ``world`` (a :class:`WorldSet`),
    through ``generator.encode_images`` exactly as the editor encodes its input."""
    from tqdm import tqdm

    from medcf.editing.regions import resize_image
    from medcf.models.data import pair_starts

    starts = pair_starts(world)
    working = tuple(generator.image_size)
    latents = []
    order = np.stack([starts, starts + 1], axis=1).reshape(-1)
    for first in tqdm(range(0, len(order), batch), desc="encoding pairs", unit="batch", disable=not progress):
        films = world.float_images(order[first:first + batch])
        if films.shape[1:] != working:
            films = np.stack([resize_image(film, working) for film in films])
        latents.append(generator.encode_images(films).float().cpu())
    latents = torch.cat(latents).view(len(starts), 2, *latents[0].shape[1:])
    records = world.records
    return PairLatents(latents[:, 0].contiguous(), latents[:, 1].contiguous(),
                       [Attributes.from_record(records[i]) for i in starts], [int(records[i]["seed"]) for i in starts])


def cached_pair_latents(paths: list[Path], generator, progress: bool = True) -> PairLatents:
    """:func:`encode_pairs` of the joined world sets ``paths``, cached beside the first one
    (keyed by the sets' names and the autoencoder's fingerprint)."""
    from medcf.models.data import WorldSet, load_world_set

    key = hashlib.sha256(("|".join(p.name for p in paths) + autoencoder_fingerprint(generator)).encode()).hexdigest()[:14]
    cache = paths[0].with_name(f"pair-latents-{key}.pt")
    if cache.is_file():
        data = torch.load(cache, weights_only=False)
        return PairLatents(data["factual"], data["counterfactual"], [Attributes(**a) for a in data["attributes"]],
                           data["seeds"])
    pairs = encode_pairs(WorldSet.join([load_world_set(p) for p in paths]), generator, progress=progress)
    from medcf.io.atomic import write_new_file

    write_new_file(cache, lambda tmp: torch.save({"factual": pairs.factual, "counterfactual": pairs.counterfactual,
                                                  "attributes": [asdict(a) for a in pairs.attributes],
                                                  "seeds": pairs.seeds}, tmp))
    return pairs


@dataclass
class FactorOptions:
    out: str
    steps: int = 6000
    batch: int = 16  # pairs per step
    lr: float = 1e-3
    warmup: int = 200
    seed: int = 0
    threads: int = 0
    resume: bool = False
    checkpoint_every: int = 500
    posterior_steps: int = 500
    weights: dict = field(default_factory=lambda: dict(ssim=0.1, swap=1.0, identity=0.5, prior=1.0, kl=1e-3,
                                                       classify=0.1, cycle=0.5, hsic=0.1))
    config: FactorConfig = field(default_factory=FactorConfig)

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch < 2 or self.posterior_steps < 0:
            raise InputError("--steps must be ≥ 1 and --batch ≥ 2 (the cross-patient swap needs two patients)")


def _ssim_loss(grid: int = 32):
    """MONAI's SSIM loss on the latent grid (scaled latents lie within about ±4); an 11-cell
    window where the grid allows, else 3 (tiny test models)."""
    from monai.losses import SSIMLoss

    return SSIMLoss(spatial_dims=2, data_range=8.0, win_size=11 if grid >= 11 else 3)


def _kl(mean, log_var, prior):
    return 0.5 * ((mean - prior) ** 2 + log_var.exp() - 1.0 - log_var).sum(1).mean()


def linear_hsic(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """HSIC with linear kernels: ‖cov(a, b)‖²_F of the batch-standardised features."""
    a = (a - a.mean(0)) / (a.std(0) + 1e-5)
    b = (b - b.mean(0)) / (b.std(0) + 1e-5)
    cross = a.T @ b / (len(a) - 1)
    return (cross ** 2).mean()


def factor_losses(model: FactorModel, f: torch.Tensor, c: torch.Tensor, attributes: torch.Tensor,
                  weights: dict, generator: torch.Generator, ssim=None) -> dict[str, torch.Tensor]:
    """Every loss of one batch (module docstring); ``total`` is their weighted sum."""
    ssim = ssim or _ssim_loss(f.shape[-1])
    none = torch.zeros_like(attributes)
    id_f, id_c = model.identity(f), model.identity(c)
    (mf, lf), (mc, lc) = model.pathology(f), model.pathology(c)
    zf = mf + (0.5 * lf).exp() * torch.randn(mf.shape, generator=generator).to(mf.device)
    zc = mc + (0.5 * lc).exp() * torch.randn(mc.shape, generator=generator).to(mc.device)
    prior_f, prior_c = model.prior_mean(attributes), model.prior_mean(none)

    def fit(prediction, target):
        return nn.functional.mse_loss(prediction, target) + weights["ssim"] * ssim(prediction, target)

    losses = {
        "reconstruction": fit(model.decode(id_f, zf), f) + fit(model.decode(id_c, zc), c),
        "swap": fit(model.decode(id_c, zf), f) + fit(model.decode(id_f, zc), c),
        "identity": nn.functional.mse_loss(id_f, id_c),
        "prior": fit(model.decode(id_c, prior_f), f) + fit(model.decode(id_f, prior_c), c),
        "kl": _kl(mf, lf, prior_f) + _kl(mc, lc, prior_c),
        "classify": nn.functional.cross_entropy(model.classifier(torch.cat([mf, mc])),
                                                torch.cat([attributes[:, 0], none[:, 0]])),
    }
    shift = torch.roll(torch.arange(len(f)), 1)  # patient i's anatomy, patient i-1's pathology
    crossed = model.decode(id_c, zf[shift])
    m_crossed, _ = model.pathology(crossed)
    losses["cycle"] = (nn.functional.mse_loss(model.identity(crossed), id_c.detach())
                       + nn.functional.mse_loss(m_crossed, mf[shift].detach()))
    pooled = torch.cat([id_f, id_c]).mean(dim=(2, 3))
    losses["hsic"] = linear_hsic(pooled, torch.cat([mf, mc]))
    losses["total"] = losses["reconstruction"] + sum(weights[k] * losses[k] for k in weights if k in losses)
    return losses


def posterior_losses(model: FactorModel, f: torch.Tensor, c: torch.Tensor, attributes: torch.Tensor,
                     weights: dict, ssim=None) -> dict[str, torch.Tensor]:
    """The second phase's losses (the pathology encoder alone learns; everything else is
    frozen): the posterior mean must do what the attribute prior's code does in the
    frozen decoder (the group swaps, decoded from means), lie near that code, and name
    the finding. Why a second phase: in the joint phase the decoder learns to draw the
    finding from the prior's codes, and the sampled posterior, noisier, is left behind
    (it collapsed to one point in the shipped run: per-dimension spread 0.01 across films,
    classification at chance); fitting the encoder to the trained decoder afterwards is
    amortised inference, as in semi-amortised VAEs."""
    ssim = ssim or _ssim_loss(f.shape[-1])
    none = torch.zeros_like(attributes)
    with torch.no_grad():
        id_f, id_c = model.identity(f), model.identity(c)
        prior_f, prior_c = model.prior_mean(attributes), model.prior_mean(none)
    (mf, _), (mc, _) = model.pathology(f), model.pathology(c)

    def fit(prediction, target):
        return nn.functional.mse_loss(prediction, target) + weights["ssim"] * ssim(prediction, target)

    losses = {
        "swap": fit(model.decode(id_c, mf), f) + fit(model.decode(id_f, mc), c),
        "match": nn.functional.mse_loss(mf, prior_f) + nn.functional.mse_loss(mc, prior_c),
        "classify": nn.functional.cross_entropy(model.classifier(torch.cat([mf, mc])),
                                                torch.cat([attributes[:, 0], none[:, 0]])),
    }
    losses["total"] = losses["swap"] + losses["match"] + weights["classify"] * losses["classify"]
    return losses


def _phase_parameters(model: FactorModel, phase: int) -> list[nn.Parameter]:
    """Phase 1 trains everything; phase 2 the pathology encoder and the classifier only."""
    model.requires_grad_(phase == 1)
    if phase == 2:
        for module in (model.pathology_encoder, model.classifier):
            module.requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]


def train_factors(options: FactorOptions, pairs: PairLatents, autoencoder_sha256: str, data_names: list[str],
                  progress: bool = True) -> tuple[FactorModel, dict]:
    """Train on ``pairs``: ``options.steps`` joint steps, then ``options.posterior_steps``
    of the pathology encoder alone (:func:`posterior_losses`); checkpoints and
    ``log.jsonl`` go into ``options.out``."""
    from tqdm import tqdm

    from medcf.models.train import RunFolder, _lr, _setup, hardware, load_checkpoint

    run = RunFolder(options.out, options.resume)
    device = _setup(options.seed, options.threads)
    model = FactorModel(options.config)
    total = options.steps + options.posterior_steps
    start, seconds, state = 0, 0.0, None
    if options.resume:
        state = load_checkpoint(run.latest())
        model.load_state_dict(state["model"])
        start, seconds = int(state["step"]), float(state.get("seconds", 0.0))

    def optimizer_for(phase: int):
        optimizer = torch.optim.AdamW(_phase_parameters(model, phase), lr=options.lr, weight_decay=1e-4)
        if state is not None and state.get("phase", 1) == phase:
            optimizer.load_state_dict(state["optimizer"])
        return optimizer

    phase = 1 if start < options.steps else 2
    optimizer = optimizer_for(phase)
    recipe = {"kind": "causal-factors", "steps": options.steps, "posterior_steps": options.posterior_steps,
              "batch_pairs": options.batch, "lr": options.lr,
              "warmup": options.warmup, "seed": options.seed, "weights": options.weights,
              "config": asdict(options.config), "data": data_names, "pairs": len(pairs),
              "autoencoder_sha256": autoencoder_sha256, "hardware": hardware()}
    run.write_recipe(recipe)
    attributes = attribute_tensor(pairs.attributes)
    ssim = _ssim_loss(pairs.factual.shape[-1])
    model.train()
    bar = tqdm(range(start, total), desc="training factors", unit="step", disable=not progress,
               initial=start, total=total)
    for step in bar:
        if step == options.steps and phase == 1:
            phase, optimizer = 2, optimizer_for(2)
        tick = time.perf_counter()
        rng = np.random.default_rng([options.seed, step])
        index = torch.from_numpy(rng.choice(len(pairs), options.batch, replace=False))
        noise = torch.Generator().manual_seed(options.seed * 1_000_003 + step)
        for group in optimizer.param_groups:
            group["lr"] = _lr(step if phase == 1 else step - options.steps, options.lr, options.warmup)
        batch = (pairs.factual[index].to(device), pairs.counterfactual[index].to(device), attributes[index].to(device))
        losses = factor_losses(model, *batch, options.weights, noise, ssim) if phase == 1 \
            else posterior_losses(model, *batch, options.weights, ssim)
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        nn.utils.clip_grad_norm_(optimizer.param_groups[0]["params"], 1.0)
        optimizer.step()
        seconds += time.perf_counter() - tick
        if step % 50 == 0 or step == total - 1:
            run.log(step=step, phase=phase, seconds=round(seconds, 1),
                    **{k: round(float(v.detach()), 5) for k, v in losses.items()})
            bar.set_postfix(phase=phase, total=f"{float(losses['total'].detach()):.4f}")
        if (step + 1) % options.checkpoint_every == 0 or step == total - 1:
            run.save(step + 1, {"kind": "causal-factors", "step": step + 1, "phase": phase, "seconds": seconds,
                                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                "config": asdict(options.config)})
    model.eval().requires_grad_(False)
    recipe["wall_seconds"] = round(seconds, 1)
    return model, recipe


def record_for(model: FactorModel, recipe: dict, figures: dict) -> FactorRecord:
    return FactorRecord(model.config, recipe["autoencoder_sha256"], recipe, figures)


def factors_from_run(folder: str | Path) -> FactorModel:
    """The model of the newest checkpoint of a factor run."""
    from medcf.models.train import RunFolder, load_checkpoint

    latest = RunFolder(folder, resume=True).latest()
    state = load_checkpoint(latest)
    if state.get("kind") != "causal-factors":
        raise InputError(f"{latest} is not a factor-model checkpoint")
    model = FactorModel(FactorConfig(**state["config"]))
    model.load_state_dict(state["model"])
    return model.eval().requires_grad_(False)


def latent_errors(model: FactorModel, pairs: PairLatents, batch: int = 64) -> dict[str, float]:
    """Mean squared latent error of the swaps on ``pairs`` (held out), against the true
    other film, and of doing nothing (the input itself): the factor model must beat that."""
    totals = {"posterior_swap": 0.0, "prior_swap": 0.0, "unchanged": 0.0}
    with torch.no_grad():
        for first in range(0, len(pairs), batch):
            f, c = pairs.factual[first:first + batch], pairs.counterfactual[first:first + batch]
            attributes = attribute_tensor(pairs.attributes[first:first + batch])
            id_f, id_c = model.identity(f), model.identity(c)
            mf, _ = model.pathology(f)
            mc, _ = model.pathology(c)
            totals["posterior_swap"] += float(((model.decode(id_c, mf) - f) ** 2).mean(dim=(1, 2, 3)).sum()
                                              + ((model.decode(id_f, mc) - c) ** 2).mean(dim=(1, 2, 3)).sum())
            named, none = pairs.attributes[first:first + batch], [Attributes()] * len(f)
            add = c + model.counterfactual_delta(c, none, named)
            remove = f + model.counterfactual_delta(f, named, none)
            totals["prior_swap"] += float(((add - f) ** 2).mean(dim=(1, 2, 3)).sum()
                                          + ((remove - c) ** 2).mean(dim=(1, 2, 3)).sum())
            totals["unchanged"] += float(2 * ((f - c) ** 2).mean(dim=(1, 2, 3)).sum())
    return {k: v / (2 * len(pairs)) for k, v in totals.items()}
