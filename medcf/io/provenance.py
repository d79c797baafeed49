"""The record that makes every synthetic image reproducible and traceable.

The same record goes into the DICOM Derivation Description (short form) and a
provenance JSON beside the output (full form): model and weights hash, the
edit request, the seed, and which source instance it came from.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

import medcf

# Derivation Description (0008,2111) is ST: at most 1024 characters.
_DERIVATION_MAX = 1024


@dataclass
class Provenance:
    """What was done to make a synthetic image, and from what.

    Fields that do not apply stay ``None`` (for example ``zone`` for
    cardiomegaly). ``image_type_value`` becomes the third value of Image Type
    and must be a DICOM CS of at most 16 characters.
    """

    method: str
    finding: str | None = None
    action: str | None = None
    side: str | None = None
    zone: str | None = None
    severity: str | None = None
    strength: float | None = None
    seed: int | None = None
    model_name: str | None = None
    bundle_version: str | None = None
    weights_sha256: str | None = None
    image_type_value: str = "COUNTERFACTUAL"
    command: str | None = None
    #: where the input lay for the model that made the image (medcf.domain): "inside", "OUTSIDE the
    #: model's training domain (allowed)", "not calibrated", ...; None when not assessed by the writer
    domain: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # Filled in by the writer.
    source: dict[str, Any] = field(default_factory=dict)
    output: dict[str, Any] = field(default_factory=dict)
    medcf_version: str = medcf.__version__
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))

    def __post_init__(self) -> None:
        value = self.image_type_value
        if not (0 < len(value) <= 16) or not all(c.isupper() or c.isdigit() or c in "_ " for c in value):
            raise ValueError(
                f"image_type_value {value!r} must be 1-16 characters of A-Z, 0-9, space or underscore"
            )

    def edit_summary(self) -> str:
        """A short phrase such as 'add moderate left lower pleural_effusion'."""
        words = [self.action, self.severity, self.side, self.zone, self.finding]
        return " ".join(w for w in words if w) or self.method

    def derivation_description(self) -> str:
        """The short form for Derivation Description, within its 1024 characters."""
        items = [
            ("MedCF", self.medcf_version),
            ("synthetic", "YES"),
            ("model", self.model_name),
            ("bundle", self.bundle_version),
            ("weights_sha256", self.weights_sha256),
            ("method", self.method),
            ("finding", self.finding),
            ("action", self.action),
            ("side", self.side),
            ("zone", self.zone),
            ("severity", self.severity),
            ("strength", None if self.strength is None else f"{self.strength:g}"),
            ("seed", self.seed),
            ("domain", self.domain),
        ]
        text = "; ".join(f"{k}={v}" for k, v in items if v is not None)
        text += "; research use only, not for diagnosis"
        return text[:_DERIVATION_MAX]

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["notice"] = medcf.RESEARCH_ONLY_NOTICE
        record["runtime"] = {"python": sys.version.split()[0], "platform": platform.platform()}
        return record

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, default=str) + "\n"
