"""The ``causal`` editing method (docs/methods.md §5, findings-guided generation): the factor
model swaps the input's pathology factor for the one the edit names while its identity
factor pins the anatomy; the denoiser then re-draws that proposal from ``depth`` under the
target prompt, so the text condition finishes what the factors started and the result
lies on the model's image manifold.

Why here and not in :mod:`medcf.causal`: the factor model is a model component
(:mod:`medcf.causal.factors`, trained by :mod:`medcf.training.factors`), while this module is
an editing method that uses it. Editing depends on the model component, never the reverse,
so ``medcf.causal`` imports nothing of ``medcf.editing``.

The factor model is the ``factors`` piece of the model's package (:mod:`medcf.models.package`),
used only if it was trained in that model's latent space (its autoencoder fingerprint).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from medcf.causal.factors import (CONFIG_FILE, Attributes, FactorModel, FactorRecord, autoencoder_fingerprint,
                                  load_factor_piece, load_factors)
from medcf.editing.methods.base import Need, register
from medcf.editing.methods.guided import Controls, GuidedMethod
from medcf.editing.spec import EditSpec
from medcf.errors import InputError
from medcf.models.base import Generator
from medcf.models.package import Piece, PieceKind, Role, measured, package_of, use_record
from medcf.vocab import Action

CAUSAL_DEPTH = 0.3  # the denoiser's share of the steps after the factor swap (chosen on tuning patients)


@dataclass
class LoadedFactors:
    model: FactorModel
    record: FactorRecord
    path: Path

    @property
    def fingerprint(self) -> str:
        return self.record.autoencoder_sha256


def _load_piece(piece: Piece) -> LoadedFactors:
    model, record = load_factor_piece(piece)
    return LoadedFactors(model, record, piece.path(Role.RECORD).parent)


def find_factors(generator: Generator) -> LoadedFactors | None:
    """The factor model in ``generator``'s package, if it was trained on its autoencoder."""

    return measured(generator, PieceKind.FACTORS, _load_piece, fingerprint=autoencoder_fingerprint)


def require_factors(generator: Generator) -> LoadedFactors:
    factors = find_factors(generator)
    if factors is None:
        raise InputError(f"method causal needs a factor model ({CONFIG_FILE}) trained on this model's autoencoder "
                         f"in its package ({package_of(generator).folder}); make one with `medcf train factors "
                         "--export`, then `medcf model package`")
    return factors


def edit_attributes(spec: EditSpec) -> tuple[list[Attributes], list[Attributes]]:
    """The pathology the edit switches from and to: none → the asked finding (add), the
    named finding → none (remove)."""
    finding = [Attributes.from_spec(spec.finding, spec.side, spec.zone, spec.severity)]
    return ([Attributes()], finding) if spec.action is Action.ADD else (finding, [Attributes()])


def causal_proposal(generator: Generator, latents: torch.Tensor, spec: EditSpec) -> torch.Tensor:
    """``latents`` plus ``spec.strength`` times the factor model's counterfactual change."""
    factors = require_factors(generator)
    model = factors.model.to(latents.device)
    with torch.no_grad():
        delta = model.counterfactual_delta(latents.float(), *edit_attributes(spec))
    return latents + spec.strength * delta.to(latents.dtype)


def use_factors(generator: Generator, folder: str | Path) -> LoadedFactors:
    """Make ``generator``'s ``causal`` method use the factor model in ``folder`` instead of
    the one in its package (refused if it was trained on another autoencoder)."""

    model, record = load_factors(folder)
    factors = LoadedFactors(model, record, Path(folder))
    if factors.fingerprint != autoencoder_fingerprint(generator):
        raise InputError(f"{folder}: this factor model was trained on another autoencoder than {generator.source}'s")
    use_record(generator, PieceKind.FACTORS, factors)
    return factors


class Causal(GuidedMethod):
    """The factors draw the finding; the target prompt finishes it (no attention controls of its own)."""

    name = "causal"
    default_depth = CAUSAL_DEPTH  # re-draws a proposal that already carries the finding: fewer steps
    needs = frozenset({Need.FACTOR_MODEL})
    proposes = True

    def require(self, generator, vectors) -> None:
        require_factors(generator)

    def proposal(self, generator, latents, spec) -> torch.Tensor:
        return causal_proposal(generator, latents, spec)

    def controls(self, generator, spec, region, prompts, vectors) -> Controls:
        return Controls([], prompts["target"], "" if spec.action is Action.ADD else prompts["finding"])


register(Causal())
