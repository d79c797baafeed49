"""MedSteer activation steering (docs/methods.md §3): pathology vectors per (cross-attention
layer, step), estimated once from the frozen model, applied with a spatially selective
gate — and, our extension, a gate restricted to the target region.

Vectors live in one safetensors file per model (``steering_vectors.safetensors``, the
steering-vectors piece of the model's package, :mod:`medcf.models.package`), keyed ``<finding>/<site name>`` with shape ``(steps, channels)``; the file's
metadata names the denoiser weights' SHA-256 they were estimated on, and
:func:`load_vectors` refuses a file made for other weights.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from medcf.editing.control import AttentionCall, AttentionController, ControlMethod
from medcf.editing.regions import EditRegion
from medcf.errors import InputError
from medcf.io.atomic import write_new_file
from medcf.models.base import CROSS, Generator
from medcf.models.sampling import COND, sample
from medcf.text.prompts import prompt
from medcf.vocab import FINDING_SIDES, Action, Finding, Severity, Side, ViewPosition

FORMAT = "medcf-steering-vectors"
VERSION = 1


def nearest_step(timesteps: Sequence[int], timestep: int) -> int:
    """Index of the estimation timestep nearest ``timestep`` (an edit may run other step counts)."""
    return int(np.argmin([abs(t - timestep) for t in timesteps]))


def denoiser_fingerprint(generator: Generator) -> str:
    """SHA-256 of the denoiser's parameters (names, shapes and float32 values): what the
    vectors depend on, whatever file format the weights came from and whatever ``--dtype``
    they run in (:meth:`Generator.weights_fingerprint`)."""
    return generator.weights_fingerprint()


@dataclass
class SteeringVectors:
    """Unit pathology directions ``vectors[finding][site] = (steps, channels)``, estimated at
    ``timesteps`` (the sampler's, high to low) on the denoiser with ``fingerprint``."""

    vectors: dict[str, dict[str, torch.Tensor]]
    timesteps: list[int]
    fingerprint: str
    info: dict = field(default_factory=dict)

    def for_finding(self, finding: Finding) -> dict[str, torch.Tensor]:
        if finding.value not in self.vectors:
            raise InputError(f"no steering vectors for {finding.value} (have: {', '.join(sorted(self.vectors)) or 'none'}); "
                             f"estimate them with `medcf steer-vectors --finding {finding.value}`")
        return self.vectors[finding.value]

    def merged(self, other: "SteeringVectors") -> "SteeringVectors":
        if other.fingerprint != self.fingerprint or other.timesteps != self.timesteps:
            raise InputError("cannot merge steering vectors estimated on different weights or step counts")
        return SteeringVectors({**self.vectors, **other.vectors}, self.timesteps, self.fingerprint,
                               {**self.info, **other.info})

    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file


        tensors = {f"{finding}/{site}": v.contiguous().float() for finding, sites in self.vectors.items()
                   for site, v in sites.items()}
        metadata = {"format": FORMAT, "version": str(VERSION), "timesteps": json.dumps(self.timesteps),
                    "denoiser_sha256": self.fingerprint, "info": json.dumps(self.info)}
        return write_new_file(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def load_vectors(path: str | Path, generator: Generator | None = None,
                 fingerprint: str | None = None) -> SteeringVectors:
    """Read a vectors file; with ``generator`` (or its ``fingerprint``), refuse vectors
    estimated on other weights."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise InputError(f"steering vectors file {path} is missing (estimate it with `medcf steer-vectors`)")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as error:  # safetensors raises its own types
        raise InputError(f"{path} is not a readable steering vectors file ({' '.join(str(error).split())[:160]})") from None
    if metadata.get("format") != FORMAT:
        raise InputError(f"{path} is not a MedCF steering vectors file")
    stored = metadata.get("denoiser_sha256", "")
    wanted = fingerprint or (denoiser_fingerprint(generator) if generator is not None else None)
    if wanted is not None and stored != wanted:
        raise InputError(f"{path} was estimated on other model weights (denoiser {stored[:12]}…, this model "
                         f"{wanted[:12]}…); re-estimate with `medcf steer-vectors`")
    vectors: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        finding, site = key.split("/", 1)
        vectors.setdefault(finding, {})[site] = tensor
    return SteeringVectors(vectors, json.loads(metadata["timesteps"]), stored, json.loads(metadata.get("info", "{}")))


# --- estimation -------------------------------------------------------------------------------


class _MeanOutputs(ControlMethod):
    """Sums the conditional rows' cross-attention outputs, averaged over image tokens,
    per (site, step) — the statistics ``h̄`` of §3."""

    def __init__(self) -> None:
        self.sums: dict[tuple[str, int], torch.Tensor] = {}
        self.count = 0

    def steer(self, call, hidden):
        if call.site.kind == CROSS:
            rows = hidden[call.rows(COND)].float().mean(dim=1).sum(dim=0)
            key = (call.site.name, call.step)
            self.sums[key] = self.sums.get(key, 0) + rows.cpu()
        return hidden


def _mean_outputs(generator: Generator, prompts: Sequence[str], seeds: Sequence[int], steps: int,
                  batch: int, progress: bool) -> tuple[dict[tuple[str, int], torch.Tensor], list[int]]:
    from tqdm import tqdm

    recorder = _MeanOutputs()
    timesteps: list[int] = []
    with AttentionController(generator, [recorder], steps=steps) as controller:
        for start in tqdm(range(0, len(prompts), batch), desc="steering statistics", unit="batch",
                          disable=not progress):
            result = sample(generator, list(prompts[start:start + batch]), seed=list(seeds[start:start + batch]),
                            steps=steps, observer=controller, progress=False, decode=False)
            timesteps = result.settings["timesteps"]
    return {k: v / len(prompts) for k, v in recorder.sums.items()}, timesteps


def finding_prompts(finding: Finding, count: int, side: Side | None = None, severity: Severity | None = None,
                    view: ViewPosition = ViewPosition.PA, style=None) -> list[str]:
    """Positive prompts for ``finding``: the given side/severity, or cycling through every
    side and severity so that the direction is the finding's, not one presentation's."""
    sides = [side] if side else [s for s in (FINDING_SIDES.get(finding) or [None])]
    severities = [severity] if severity else list(Severity)
    combos = [(s, v) for s in sides for v in severities]
    return [prompt(view, finding, side=combos[i % len(combos)][0], severity=combos[i % len(combos)][1], style=style)
            for i in range(count)]


def estimate_vectors(generator: Generator, findings: Sequence[Finding], seeds: Sequence[int], *, steps: int = 25,
                     side: Side | None = None, severity: Severity | None = None, batch: int = 16,
                     progress: bool = True) -> SteeringVectors:
    """``v_{l,t} = normalize(h̄⁺ − h̄⁻)`` for each finding, positive prompts of the finding vs
    the normal prompt, over the same ``seeds`` (docs/methods.md §3)."""
    if len(seeds) < 2:
        raise InputError("--seeds: at least 2 seeds are needed to average activations")
    seeds = [int(s) for s in seeds]
    started = time.perf_counter()
    normal = [prompt(ViewPosition.PA, style=generator.convention)] * len(seeds)  # in the model's own style
    negative, timesteps = _mean_outputs(generator, normal, seeds, steps, batch, progress)
    vectors: dict[str, dict[str, torch.Tensor]] = {}
    for finding in findings:
        positive, _ = _mean_outputs(generator, finding_prompts(finding, len(seeds), side, severity,
                                                               style=generator.convention), seeds, steps,
                                    batch, progress)
        per_site: dict[str, list[torch.Tensor]] = {}
        for (site, step), mean in sorted(positive.items(), key=lambda kv: (kv[0][0], kv[0][1])):
            delta = mean - negative[(site, step)]
            per_site.setdefault(site, []).append(delta / delta.norm().clamp_min(1e-8))
        vectors[finding.value] = {site: torch.stack(v) for site, v in per_site.items()}
    # What the estimate cost (a foreign model's user weighs it before a larger run): one
    # sampling run per seed for the normal prompt and for each finding, shared by the findings.
    cost = {"seconds": round(time.perf_counter() - started, 2), "films_sampled": len(seeds) * (1 + len(findings)),
            "denoiser_passes": (2 if generator.guidance_scale > 1 else 1) * steps * len(seeds) * (1 + len(findings)),
            "findings_in_run": len(findings),
            "device": str(generator.device), "dtype": str(generator.dtype).removeprefix("torch.")}
    info = {f.value: {"seeds": [seeds[0], seeds[-1]], "n": len(seeds), "steps": steps,
                      "side": side.value if side else "all", "severity": severity.value if severity else "all",
                      "cost": cost}
            for f in findings}
    return SteeringVectors(vectors, timesteps, denoiser_fingerprint(generator), info)


# --- application ----------------------------------------------------------------------------------


@dataclass
class Steering(ControlMethod):
    """Spatially selective steering along ``vectors`` (one finding's ``site -> (steps, C)``).

    ``remove``: ``h̃_i = h_i − α s_i v`` with ``s_i = max(0, h_i·v)·g_i``, rescaled to ``‖h_i‖``
    (the reference implementation's form). ``add``: ``h̃_i = h_i + α g_i (1 − max(0, cos(h_i, v))) ‖h_i‖ v``,
    pushing only tokens that do not carry the finding yet. ``g_i`` is the anatomy gate: the target
    region on the site's token grid (``region=None``: every token, as in MedSteer).
    """

    vectors: dict[str, torch.Tensor]
    timesteps: list[int]
    action: Action
    alpha: float = 2.0
    region: EditRegion | None = None
    sites: set[str] | None = None  # layer window; None = every cross-attention site
    window: tuple[float, float] = (0.0, 1.0)  # step window (fraction of the run)
    _cache: dict = field(default_factory=dict, repr=False)

    def _vector(self, call: AttentionCall) -> torch.Tensor | None:
        if call.site.kind != CROSS or call.site.name not in self.vectors:
            return None
        if self.sites is not None and call.site.name not in self.sites:
            return None
        if not call.within(self.window):
            return None
        key = ("v", call.site.name, call.timestep)
        if key not in self._cache:
            self._cache[key] = self.vectors[call.site.name][nearest_step(self.timesteps, call.timestep)].float()
        return self._cache[key]

    def _gate(self, call: AttentionCall, tokens: int) -> torch.Tensor:
        if self.region is None or tokens != call.grid[0] * call.grid[1]:
            return torch.ones(tokens)
        return self.region.target_tokens(call.grid)

    def steer(self, call, hidden):
        v = self._vector(call)
        if v is None:
            return hidden
        key = ("gate", call.grid, hidden.shape[1], hidden.device)
        if key not in self._cache:
            self._cache[key] = self._gate(call, hidden.shape[1]).to(hidden.device, torch.float32)[None, :]
        gate = self._cache[key]
        h = hidden.float()
        v = v.to(h.device)
        projection = h @ v  # (batch, tokens); v is a unit vector
        squared = (h * h).sum(-1)
        if self.action is Action.REMOVE:
            shift = self.alpha * projection.clamp_min(0) * gate  # a_i = α s_i g_i
            # ‖h − a v‖² = ‖h‖² − 2 a (h·v) + a²: rescaling needs no second pass over channels
            rescale = (squared / (squared - 2 * shift * projection + shift * shift).clamp_min(1e-12)).sqrt()
            steered = (h - shift[..., None] * v) * rescale[..., None]
        else:
            norms = squared.sqrt()
            carried = (projection / norms.clamp_min(1e-8)).clamp_min(0)
            steered = h + (self.alpha * gate * (1 - carried) * norms)[..., None] * v
        return steered if steered.dtype == hidden.dtype else steered.to(hidden.dtype)
