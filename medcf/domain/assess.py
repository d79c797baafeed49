"""Is this film inside the loaded model's domain? :func:`assess` measures the film
(:mod:`medcf.domain.features`) and compares it with the model's calibration
(:mod:`medcf.domain.calibration`); :class:`DomainVerdict` is what the editor refuses on,
records in ``edit.json`` and writes into the DICOM's Derivation Description.

Why refuse rather than warn: outside its domain a diffusion model still returns a film,
and its own check still returns a score, so a wrong edit comes back looking confident
(a real film whose right base became *less* dense under "add effusion", checked as
"reached"). The refusal says what to do instead, in one line (:func:`refusal_line`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from medcf.domain.calibration import CALIBRATION_FILE, DomainCalibration, find_calibration
from medcf.domain.features import DomainFeature, measure
from medcf.errors import InputError
from medcf.models.base import Generator
from medcf.vocab import StrEnum

#: the flag that writes an edit outside the model's domain anyway (EditSpec.allow_out_of_domain)
ALLOW_FLAG = "--allow-out-of-domain"
#: a method that needs no diffusion model (a physically simulated finding inserted into the film)
MODEL_FREE_METHOD = "insert"


class DomainStatus(StrEnum):
    """Where a film lies with respect to the loaded model's training films."""

    INSIDE = "inside"
    OUTSIDE = "outside"
    NOT_CALIBRATED = "not calibrated"  # the model ships no calibration made for its weights: nothing to compare
    NOT_ASSESSED = "not assessed"  # the method uses no diffusion model, so the model's domain does not apply


@dataclass(frozen=True)
class DomainVerdict:
    """The verdict on one film: its status, each feature's value and limit, the features
    beyond their limit, and whether the user allowed an edit outside the domain."""

    status: DomainStatus
    values: dict[str, float] = field(default_factory=dict)
    limits: dict[str, float] = field(default_factory=dict)
    allowed: bool = False
    rule: dict | None = None

    @property
    def outside(self) -> bool:
        return self.status is DomainStatus.OUTSIDE

    @property
    def exceeded(self) -> list[str]:
        """The features beyond their limit, farthest first (value / limit)."""
        over = [(self.values[name] / self.limits[name], name) for name in self.limits
                if self.values.get(name, 0.0) > self.limits[name]]
        return [name for _, name in sorted(over, reverse=True)]

    def describe(self) -> str:
        """One phrase for a record's reader: the status and, outside, how far out."""
        if not self.outside:
            return f"domain: {self.status.value}"
        far = ", ".join(f"{name} {self.values[name] / self.limits[name]:.1f}x its limit" for name in self.exceeded)
        return f"domain: OUTSIDE the model's domain ({far})" + ("; written because --allow-out-of-domain" if
                                                                 self.allowed else "")

    def short(self) -> str:
        """The DICOM Derivation Description's value (it is short on space)."""
        return {DomainStatus.OUTSIDE: "OUTSIDE the model's training domain" + (" (allowed)" if self.allowed else ""),
                DomainStatus.INSIDE: "inside", DomainStatus.NOT_CALIBRATED: "not calibrated",
                DomainStatus.NOT_ASSESSED: "not assessed"}[self.status]

    def to_dict(self) -> dict:
        return {"status": self.status.value, "outside": self.outside, "allowed": self.allowed,
                "values": {k: round(v, 6) for k, v in self.values.items()},
                "limits": {k: round(v, 6) for k, v in self.limits.items()},
                "exceeded": self.exceeded, "rule": self.rule, "summary": self.describe()}


def verdict_of(values: dict[DomainFeature, float], calibration: DomainCalibration,
               allowed: bool = False) -> DomainVerdict:
    """The verdict on measured ``values`` under ``calibration``'s rule."""
    limits = {feature.value: calibration.limit(feature) for feature in DomainFeature}
    named = {feature.value: float(value) for feature, value in values.items()}
    outside = any(named[name] > limit for name, limit in limits.items())
    return DomainVerdict(DomainStatus.OUTSIDE if outside else DomainStatus.INSIDE, named, limits, allowed,
                         {**calibration.rule.to_dict(), "n_films": calibration.n_films, "source": calibration.source})


def assess(generator: Generator, display: np.ndarray, lungs: np.ndarray | None,
           allowed: bool = False) -> DomainVerdict:
    """Where ``display`` (native size, [0, 1]) lies for ``generator``: measured inside
    ``lungs`` and over the whole film, against the model's calibration; NOT_CALIBRATED
    (nothing measured) for a model without one."""
    calibration = find_calibration(generator)
    if calibration is None:
        return DomainVerdict(DomainStatus.NOT_CALIBRATED, allowed=allowed)
    return verdict_of(measure(generator, display, lungs, calibration.settings), calibration, allowed)


def refusal_line(verdict: DomainVerdict, what: str = "the input") -> str:
    """The one line a refused edit ends with: why, and the three ways on."""
    far = ", ".join(f"{name.replace('_', ' ')} {verdict.values[name] / verdict.limits[name]:.1f}x"
                    for name in verdict.exceeded)
    return (f"{what} lies outside the model's training domain ({far} the limit from its held-out training films), "
            f"so an edit would not be trustworthy; nothing was written. Ways on: --method {MODEL_FREE_METHOD} "
            f"(inserts a simulated finding, needs no diffusion model), --model DIR with a model trained on real "
            f"radiographs (calibrate it with `medcf model calibrate-domain DIR --films FOLDER`), or "
            f"{ALLOW_FLAG} (written, and marked outside the domain)")


def require_inside(verdict: DomainVerdict, what: str = "the input") -> DomainVerdict:
    """``verdict``, or one :class:`InputError` line when the film is outside and not allowed."""
    if verdict.outside and not verdict.allowed:
        raise InputError(refusal_line(verdict, what))
    return verdict


__all__ = ["ALLOW_FLAG", "CALIBRATION_FILE", "DomainStatus", "DomainVerdict", "assess", "refusal_line",
           "require_inside", "verdict_of"]
