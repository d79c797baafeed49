"""A model's film domain, as data: the quantiles of each :class:`DomainFeature` on the
model's own held-out training films (:class:`DomainCalibration`), tied to the model's
fingerprints and shipped beside its weights as the package's ``domain`` piece
(``domain_calibration.json``), and the rule that calls a film outside (:class:`DomainRule`).

Why quantiles and a margin: the features have no natural unit (an autoencoder's error on
a 256² float film, a denoiser's on its latent), but each model's own training films give
their spread. A film is outside when any feature lies above the quantile its training
films rarely exceed, times a margin chosen on tuning renders so that films like the
training ones are almost never refused (``benchmarks/calibrate_domain.py``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medcf.domain.features import DomainFeature, FeatureSettings, measure
from medcf.errors import InputError
from medcf.io.atomic import replace_own_text
from medcf.models.base import Generator, module_fingerprint
from medcf.models.package import PIECE_FILES, Identity, Piece, PieceKind, Role, joint_fingerprint, measured

CALIBRATION_FILE = PIECE_FILES[PieceKind.DOMAIN][Role.RECORD]
FORMAT = "medcf-domain-calibration"
QUANTILES = (0.5, 0.9, 0.99, 0.995, 1.0)  # what a calibration keeps per feature (1.0: the largest seen)
MIN_FILMS = 20  # fewer films cannot place a 99.5th percentile anywhere useful


@dataclass(frozen=True)
class DomainRule:
    """Outside when any feature's value exceeds ``quantile``'s value on the training films
    times ``margin``."""

    quantile: float = 0.995
    margin: float = 1.25

    def __post_init__(self) -> None:
        if self.quantile not in QUANTILES or not 1.0 <= self.margin <= 10.0:
            raise InputError(f"domain rule: quantile {self.quantile} must be one of {QUANTILES} and margin "
                             f"{self.margin} in 1..10")

    def to_dict(self) -> dict:
        return {"quantile": self.quantile, "margin": self.margin}


def autoencoder_fingerprint(generator: Generator) -> str:
    """The fingerprint of ``generator``'s autoencoder (what the reconstruction error measures)."""
    return module_fingerprint(getattr(generator, "vae", None) or getattr(generator, "autoencoder"))


def model_fingerprints(generator: Generator) -> dict[str, str]:
    """``{"denoiser": ..., "autoencoder": ...}``: what a calibration was made for."""
    return {Identity.DENOISER.value: generator.weights_fingerprint(),
            Identity.AUTOENCODER.value: autoencoder_fingerprint(generator)}


@dataclass(frozen=True)
class DomainCalibration:
    """Quantiles of every feature on ``n_films`` films of the model's own domain, for the
    model whose fingerprints are ``made_for``; ``source`` says which films (a seed range of
    held-out renders, or the folders given to ``medcf model calibrate-domain``)."""

    quantiles: dict[str, dict[str, float]]
    made_for: dict[str, str]
    n_films: int
    source: dict
    settings: FeatureSettings = FeatureSettings()
    rule: DomainRule = DomainRule()
    notes: dict = field(default_factory=dict)

    def limit(self, feature: DomainFeature) -> float:
        """The value above which ``feature`` calls a film outside."""
        return self.quantiles[feature.value][f"{self.rule.quantile:g}"] * self.rule.margin

    def with_rule(self, rule: DomainRule, notes: dict | None = None) -> "DomainCalibration":
        return DomainCalibration(self.quantiles, self.made_for, self.n_films, self.source, self.settings, rule,
                                 {**self.notes, **(notes or {})})

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": 1, "quantiles": self.quantiles,
                "denoiser_sha256": self.made_for[Identity.DENOISER.value],
                "autoencoder_sha256": self.made_for[Identity.AUTOENCODER.value],
                "n_films": self.n_films, "source": self.source, "settings": self.settings.to_dict(),
                "rule": self.rule.to_dict(), "notes": self.notes}

    def save(self, path: str | Path) -> Path:
        """Write (or replace) the calibration file: a model has one domain."""
        return replace_own_text(Path(path), json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "DomainCalibration":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise InputError(f"cannot read the domain calibration {path}: {error}") from None
        if data.get("format") != FORMAT:
            raise InputError(f"{path} is not a MedCF domain calibration (format {data.get('format')!r})")
        return cls(data["quantiles"], {Identity.DENOISER.value: data["denoiser_sha256"],
                                       Identity.AUTOENCODER.value: data["autoencoder_sha256"]},
                   int(data["n_films"]), data.get("source", {}), FeatureSettings.from_dict(data["settings"]),
                   DomainRule(**data["rule"]), data.get("notes", {}))


def summarise(values: list[dict[DomainFeature, float]]) -> dict[str, dict[str, float]]:
    """Per feature, the :data:`QUANTILES` of ``values``."""
    return {feature.value: {f"{q:g}": float(np.quantile([v[feature] for v in values], q)) for q in QUANTILES}
            for feature in DomainFeature}


def calibrate(generator: Generator, films: Iterable[tuple[np.ndarray, np.ndarray | None]], source: dict,
              rule: DomainRule = DomainRule(), settings: FeatureSettings = FeatureSettings()) -> DomainCalibration:
    """The calibration of ``generator`` on ``films`` (display, lungs or None), which must be
    films of its own domain (held-out training films); at least :data:`MIN_FILMS`."""
    values = [measure(generator, display, lungs, settings) for display, lungs in films]
    if len(values) < MIN_FILMS:
        raise InputError(f"a domain calibration needs at least {MIN_FILMS} films of the model's own domain, "
                         f"got {len(values)}")
    return DomainCalibration(summarise(values), model_fingerprints(generator), len(values), source, settings, rule)


def _joint(generator: Generator) -> str:
    return joint_fingerprint(model_fingerprints(generator), PieceKind.DOMAIN)


def find_calibration(generator: Generator) -> DomainCalibration | None:
    """The calibration in ``generator``'s package, if it was made for these weights (both
    the denoiser and the autoencoder); None otherwise (the domain is then not calibrated)."""
    return measured(generator, PieceKind.DOMAIN, _load_piece, fingerprint=_joint)


def _load_piece(piece: Piece) -> DomainCalibration:
    return DomainCalibration.load(piece.path(Role.RECORD))
