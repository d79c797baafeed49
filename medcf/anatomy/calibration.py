"""What a segmenter's confidence means: the chance its masks are right, calibrated.

Why: the raw confidence (:meth:`AnatomyMasks.confidence`, the least sure organ's mean
probability inside its mask) is the network's opinion of itself. A real film once got 0.96
with masks of Dice 0.71; 0.96 said nothing about how often masks are right. Here the raw
value is mapped, by an isotonic (monotone, non-parametric) fit, to the share of films whose
masks were **right** at that confidence: Dice at least :data:`RIGHT_DICE` for each organ
(0.85 each lung, 0.75 the heart, the issue's targets for real films), measured on rendered
films put through the film look (processing, grid lines, collimation; tuning seeds), the
nearest the project has to real ones.

The calibration is a small JSON beside the weights (:data:`CALIBRATION_FILE`), tied to their
SHA-256: other weights get no calibrated value (recorded as such), because the mapping is
the network's, not the anatomy's. Made and checked by ``benchmarks/bench_realfilm.py
--calibrate``, which also writes the reliability table on held-out films.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medcf.bundle import WEIGHTS_DIR, bundle_path
from medcf.errors import InputError
from medcf.io.atomic import replace_own_text
from medcf.vocab import Organ

CALIBRATION_FILE = "anatomy_confidence.json"
RIGHT_DICE: dict[Organ, float] = {Organ.LUNG_RIGHT: 0.85, Organ.LUNG_LEFT: 0.85, Organ.HEART: 0.75}
MEANING = ("the chance the masks are right (Dice >= 0.85 each lung, >= 0.75 heart), calibrated on film-look "
           "renders; not validated on real films")


def is_right(dices: dict[Organ, float]) -> bool:
    """Whether masks with these Dice values count as right (:data:`RIGHT_DICE`)."""
    return all(dices[organ] >= bound for organ, bound in RIGHT_DICE.items())


@dataclass(frozen=True)
class ConfidenceCalibration:
    """A monotone map from raw confidence to the chance of being right: the knots
    (``raw``, ``right``) of a piecewise-linear function, flat beyond its ends, for the
    weights with SHA-256 ``weights_sha256``."""

    weights_sha256: str
    raw: tuple[float, ...]
    right: tuple[float, ...]
    record: dict

    def __post_init__(self) -> None:
        if len(self.raw) != len(self.right) or not self.raw:
            raise InputError("a confidence calibration needs as many right shares as raw knots, at least one")
        if np.any(np.diff(self.raw) < 0) or np.any(np.diff(self.right) < 0):
            raise InputError("a confidence calibration must be non-decreasing")

    def chance_right(self, raw: float) -> float:
        return float(np.interp(raw, self.raw, self.right))

    def to_dict(self) -> dict:
        return {"weights_sha256": self.weights_sha256, "raw": list(self.raw), "right": list(self.right),
                "meaning": MEANING, **self.record}

    def save(self, path: Path) -> Path:
        return replace_own_text(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> "ConfidenceCalibration":
        try:
            data = json.loads(Path(path).read_text())
            record = {k: v for k, v in data.items() if k not in ("weights_sha256", "raw", "right", "meaning")}
            return cls(str(data["weights_sha256"]), tuple(map(float, data["raw"])), tuple(map(float, data["right"])),
                       record)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise InputError(f"confidence calibration {path} cannot be read: {error}") from None


def default_calibration_path() -> Path:
    return bundle_path(WEIGHTS_DIR, CALIBRATION_FILE)


def calibrated_confidence(raw: float | None, weights_sha256: str | None, path: Path | None = None) -> dict:
    """The record of ``raw`` calibrated for the weights ``weights_sha256``: ``{"chance_right",
    "meaning"}``, or ``{"chance_right": None, "why"}`` when there is nothing to calibrate
    (no raw confidence, no calibration for these weights)."""
    path = default_calibration_path() if path is None else Path(path)
    if raw is None:
        return {"chance_right": None, "why": "the segmenter gave no probabilities"}
    if not path.is_file():
        return {"chance_right": None, "why": f"no calibration file ({path.name})"}
    calibration = ConfidenceCalibration.load(path)
    if weights_sha256 != calibration.weights_sha256:
        return {"chance_right": None, "why": "the calibration was made for other weights"}
    return {"chance_right": round(calibration.chance_right(raw), 3), "meaning": MEANING}
