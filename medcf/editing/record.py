"""What ``edit.json`` says about one edit, as a typed record (:class:`EditRecord`) that
holds each value once: the spec the kept pass ran, the plan that settled it (and where
each setting came from), what the sampler did, the model's own check, the model, the
anatomy and the input.

``edit.json``'s layout is kept for its readers (the batch manifest, the Slicer module, the
MONAI Label app): the DICOM short form at the top level (:class:`medcf.io.provenance.Provenance`,
derived from the spec in :meth:`EditRecord.provenance`, the only place a spec value is
copied: the synthetic DICOM's Derivation Description needs it), the rest under ``extra``:

- ``spec``: the spec the kept pass ran (a further pass is stronger and deeper than asked);
- ``plan``: where each planned setting came from (``sources``), the measured-choice file
  when one decided, the alternative denoiser when one ran; the planned values themselves
  are the spec's;
- ``settings``: what the sampler did, and ``check``: the model's own verdict;
- ``model``: the weights' folder and the steering vectors; ``placement``: device and dtypes;
- ``domain``: where the input lies for the model (:class:`medcf.domain.assess.DomainVerdict`:
  inside, OUTSIDE (written only with ``--allow-out-of-domain``), not calibrated, not assessed),
  also in the DICOM's Derivation Description;
- ``prompts``, ``seconds``, ``anatomy`` and the caller's context (``batch``, ``report``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medcf.domain.assess import DomainVerdict
from medcf.editing.defaults import DEFAULTS_FILE
from medcf.editing.edit import TargetCheck
from medcf.editing.film import Counterfactual
from medcf.editing.plan import DenoiserFacts, EditPlan
from medcf.editing.spec import EditSpec
from medcf.io.atomic import sha256_of_file
from medcf.io.inputs import InputImage
from medcf.io.provenance import Provenance
from medcf.models.package import Role, package_of


@dataclass(frozen=True)
class ModelInfo:
    """Which model and vectors made an edit."""

    name: str
    source: str
    bundle_version: str | None = None
    weights_sha256: str | None = None
    vectors: str | None = None
    vectors_sha256: str | None = None
    #: device and dtype of the denoiser, dtype of the autoencoder (``Generator.placement``)
    placement: dict | None = None

    @classmethod
    def of(cls, generator, vectors_path: Path | None) -> "ModelInfo":
        """The facts of a loaded model (its weights and vectors hashed: once per editor)."""
        folder = Path(generator.source)
        weights = package_of(generator).weights_file(Role.DENOISER)  # a MedCF default model's; None otherwise
        version = None
        for metadata in (folder.parent / "configs" / "metadata.json", folder / "configs" / "metadata.json"):
            if metadata.is_file():
                version = json.loads(metadata.read_text(encoding="utf-8")).get("version")
                break
        return cls(generator.format, str(folder), version,
                   (weights.sha256 or sha256_of_file(weights.path)) if weights and weights.path.is_file() else None,
                   str(vectors_path) if vectors_path else None,
                   sha256_of_file(vectors_path) if vectors_path and vectors_path.is_file() else None,
                   generator.placement())

    @classmethod
    def without_model(cls) -> "ModelInfo":
        """An edit made without the diffusion model (a film method such as ``insert``)."""
        return cls("none (the film was edited without the diffusion model)", "")

    def details(self) -> dict:
        """What ``extra.model`` says: the facts the top-level summary (name, bundle version,
        weights' SHA-256) and ``extra.placement`` do not."""
        return {"source": self.source, "vectors": self.vectors, "vectors_sha256": self.vectors_sha256}


@dataclass(frozen=True)
class InputFacts:
    """The input film an edit read."""

    path: str
    format: str
    shape: tuple[int, ...]

    @classmethod
    def of(cls, image: InputImage) -> "InputFacts":
        return cls(str(image.path), image.format.value, tuple(image.shape))

    def to_dict(self) -> dict:
        return {"path": self.path, "format": self.format, "shape": list(self.shape)}


@dataclass(frozen=True)
class EditRecord:
    """One edit, each value once (see the module's docstring for how it is laid out in ``edit.json``)."""

    spec: EditSpec
    plan: EditPlan | None
    denoiser: DenoiserFacts | None
    prompts: dict[str, str]
    settings: dict
    check: TargetCheck | None
    seconds: float
    model: ModelInfo
    input: InputFacts
    command: str | None = None
    anatomy: dict | None = None
    #: what the caller adds (a batch item's key, the report sentence a spec came from)
    context: dict[str, Any] = field(default_factory=dict)
    #: where the input lies for the model (None: not asked, e.g. a library caller's own edit)
    domain: DomainVerdict | None = None

    @classmethod
    def of(cls, counterfactual: Counterfactual, model: ModelInfo, image: InputImage, command: str | None = None,
           anatomy: dict | None = None, context: dict | None = None,
           domain: DomainVerdict | None = None) -> "EditRecord":
        cf = counterfactual
        return cls(cf.spec, cf.plan, cf.denoiser, cf.prompts, cf.settings, cf.check, round(cf.seconds, 3), model,
                   InputFacts.of(image), command, anatomy, dict(context or {}), domain)

    def plan_dict(self) -> dict | None:
        """``extra.plan``: where each planned setting came from (the values are the spec's)."""
        if self.plan is None:
            return None
        return {"sources": self.plan.sources_dict(), "measured_in": DEFAULTS_FILE if self.plan.measured else None,
                "denoiser": self.denoiser.to_dict() if self.denoiser is not None else None, "note": self.plan.note}

    def provenance(self) -> Provenance:
        """The record as the synthetic DICOM carries it: the short form from the spec and
        the model, the rest under ``extra``."""
        spec = self.spec
        settings = dict(self.settings)
        if self.check is not None:
            settings["check"] = self.check.to_dict()
        extra = {"spec": spec.to_dict(), "plan": self.plan_dict(), "prompts": self.prompts, "settings": settings,
                 "model": self.model.details(), "placement": self.model.placement, "seconds": self.seconds}
        if self.anatomy is not None:
            extra["anatomy"] = self.anatomy
        if self.domain is not None:
            extra["domain"] = self.domain.to_dict()
        return Provenance(
            method=spec.method.value, finding=spec.finding.value, action=spec.action.value,
            side=spec.side.value if spec.side else None, zone=spec.zone.value if spec.zone else None,
            severity=spec.severity.value, strength=spec.strength, seed=spec.seed, model_name=self.model.name,
            bundle_version=self.model.bundle_version, weights_sha256=self.model.weights_sha256,
            command=self.command, domain=self.domain.short() if self.domain is not None else None,
            extra={**extra, **self.context})

    def to_dict(self, files: dict[str, Path], out: Path, provenance: Provenance | None = None) -> dict:
        """``edit.json``: the provenance (``provenance``: the one written into the DICOM, with
        its source and output filled in), the files relative to ``out`` and the input."""
        record = (provenance or self.provenance()).to_dict()
        record["files"] = {name: str(path.relative_to(out)) for name, path in files.items()}
        record["input"] = self.input.to_dict()
        return record
