"""``auto`` and every unset option resolved before an edit: :func:`plan_edit` turns a
request (:class:`EditSpec`) into an :class:`EditPlan` that names the method, depth, region
guidance, renoise share, passes, strength and denoiser, and for each where it came from
(:class:`Source`). The plan goes into the edit's record.

Why before the edit and not inside it: the caller can show, log or refuse the plan before
any pixel is touched, and the loading the plan asks for (an alternative denoiser with its
own steering vectors, :func:`load_planned`) happens in the caller's preparation, not
somewhere inside the sampler.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Mapping

from medcf.editing.defaults import Choice, find_defaults
from medcf.editing.methods import get_method
from medcf.editing.records import alternative_denoiser
from medcf.editing.spec import EditSpec, Method
from medcf.editing.steering import SteeringVectors
from medcf.models.base import Generator
from medcf.vocab import StrEnum

GENERIC_METHOD = Method.STEER  # auto's method on a model without a measured choice
#: auto's method on a model that has neither a measured choice nor steering vectors (a bring-your-own
#: model as it comes): regulated needs nothing beyond the model's weights
NEEDS_NOTHING_METHOD = Method.REGULATED
#: the settings a plan resolves, in the order its record lists them
PLANNED = ("method", "depth", "guidance", "renoise", "denoiser", "strength", "passes")


class Source(StrEnum):
    """Where a planned value came from."""

    ASKED = "asked"  # the request: the user's option, the bundle's configs/edit.json, or EditSpec's default
    MEASURED = "measured"  # the model's per-finding settings (edit_defaults.json), for ``auto``
    GENERIC = "generic"  # the generic default: no measured choice applies (the method's own depth, ...)
    FALLBACK = "fallback"  # auto took a method that needs nothing the model lacks (no steering vectors)


@dataclass(frozen=True)
class EditPlan:
    """What an edit will run with, settled before it runs. ``guidance`` None: the model's
    own; ``denoiser`` None: the model's own. ``request`` is the spec as asked (``auto`` and
    unset values in it); :attr:`spec` is the one the editor runs."""

    request: EditSpec
    method: Method
    depth: float
    guidance: float | None
    renoise: float
    denoiser: str | None
    sources: Mapping[str, Source]
    #: one line on how ``auto`` chose when the model lacks what it would have used (None otherwise)
    note: str | None = None

    def __post_init__(self) -> None:
        missing = [name for name in PLANNED if name not in self.sources]
        if missing:
            raise ValueError(f"an edit plan must say where {', '.join(missing)} came from")
        object.__setattr__(self, "sources", MappingProxyType(dict(self.sources)))

    @property
    def strength(self) -> float:
        return self.request.strength

    @property
    def passes(self) -> int:
        return self.request.passes

    @property
    def spec(self) -> EditSpec:
        """The request with every planned value in place: what the editor runs."""
        return replace(self.request, method=self.method, depth=self.depth, guidance=self.guidance,
                       renoise=self.renoise)

    @property
    def measured(self) -> bool:
        """Whether the model's per-finding settings decided any of it."""
        return Source.MEASURED in self.sources.values()

    def sources_dict(self) -> dict[str, str]:
        """``{setting: source}`` in :data:`PLANNED` order, for the record."""
        return {name: self.sources[name].value for name in PLANNED}


def generic_depth(method: Method | str) -> float:
    """A method's depth when neither the user nor a measured choice sets one (the method's
    own: ``causal`` re-draws a proposal that already carries the finding, so it needs fewer
    steps than a method that starts from the input)."""
    return get_method(method).default_depth


def measured_choice(spec: EditSpec, generator: Generator) -> Choice | None:
    """The model's measured choice for ``spec``'s finding and action when ``spec`` asks for
    ``auto``; None for an explicit method or a model without one."""
    defaults = find_defaults(generator) if spec.method is Method.AUTO else None
    return defaults.choice(spec.finding, spec.action) if defaults is not None else None


def plan_edit(spec: EditSpec, generator: Generator, has_vectors: bool | None = None) -> EditPlan:
    """``spec`` with ``auto``, ``depth``, ``guidance``, ``renoise`` and the denoiser settled.
    What the user set explicitly is kept; ``auto`` fills the rest from the model's measured
    choice (:mod:`medcf.editing.defaults`), an explicit method (or ``auto`` on a model
    without a measured choice) from the generic defaults. ``has_vectors`` False (the caller
    found no steering vectors for the model): ``auto`` without a measured choice takes
    :data:`NEEDS_NOTHING_METHOD` and says so in :attr:`EditPlan.note`, so a bring-your-own
    model edits with the defaults on its first try; None (unknown) keeps :data:`GENERIC_METHOD`."""
    chosen = measured_choice(spec, generator)

    def pick(asked, measured, generic):
        if asked is not None:
            return asked, Source.ASKED
        return (measured, Source.MEASURED) if chosen is not None else (generic, Source.GENERIC)

    if spec.method is not Method.AUTO:
        method, method_from = spec.method, Source.ASKED
    elif chosen is not None:
        method, method_from = Method(chosen.method), Source.MEASURED
    elif has_vectors is False:
        method, method_from = NEEDS_NOTHING_METHOD, Source.FALLBACK
    else:
        method, method_from = GENERIC_METHOD, Source.GENERIC
    note = (f"auto: this model has no steering vectors and no measured per-finding settings, so the edit uses "
            f"{method.value}, which needs neither (docs/models.md: estimate vectors with `medcf steer-vectors`)"
            if method_from is Source.FALLBACK else None)
    depth, depth_from = pick(spec.depth, chosen and chosen.depth, generic_depth(method))
    guidance, guidance_from = pick(spec.guidance, chosen and chosen.guidance, None)
    renoise, renoise_from = pick(spec.renoise, chosen and chosen.renoise, 0.0)
    denoiser = chosen.denoiser if chosen is not None else None
    sources = {"method": method_from, "depth": depth_from, "guidance": guidance_from, "renoise": renoise_from,
               "denoiser": Source.MEASURED if chosen is not None else Source.GENERIC,
               "strength": Source.ASKED, "passes": Source.ASKED}
    return EditPlan(spec, method, depth, guidance, renoise, denoiser, sources, note)


@dataclass(frozen=True)
class DenoiserFacts:
    """An alternative denoiser an edit ran with: its name, folder and weights' SHA-256."""

    name: str
    folder: str
    sha256: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "folder": self.folder, "sha256": self.sha256}


@dataclass(frozen=True)
class PlannedModel:
    """The generator and steering vectors a plan runs with: the model's own, or the
    alternative denoiser the plan names with its own vectors (``denoiser``: its facts)."""

    generator: Generator
    vectors: SteeringVectors | None
    denoiser: DenoiserFacts | None = None


def load_planned(plan: EditPlan, generator: Generator, vectors: SteeringVectors | None = None) -> PlannedModel:
    """What ``plan`` needs loaded beside ``generator`` and ``vectors`` (the model's own): the
    denoiser it names, if any, loaded once per model (:func:`medcf.editing.records.alternative_denoiser`)."""
    if plan.denoiser is None:
        return PlannedModel(generator, vectors)
    variant, own, sha256 = alternative_denoiser(generator, plan.denoiser)
    return PlannedModel(variant, own, DenoiserFacts(plan.denoiser, variant.source, sha256))
