"""The editor's per-finding choice (``--method auto``): which method, depth, region
guidance and renoise share to use for each (finding, action) on a given model.

One setting does not fit every finding: a pleural effusion or cardiomegaly changes the
film's large structures and needs the finding prompt pushed hard from early steps,
while a nodule changes a few pixels late. The choice is measured, not guessed: the
counterfactual suite runs every candidate setting on the editor's *tuning* patients
(never the benchmark's) and ``benchmarks/choose_edit_defaults.py`` keeps, per finding and
action, among the settings that reach the flip-rate target the one closest to the true
counterfactual (else the highest flip rate). A setting is a method, depth, region guidance,
share of fresh noise in the region (``renoise``) and, where measured better, an alternative
denoiser. The result is stored beside the weights as ``edit_defaults.json``, tied
to the denoiser like the steering vectors; a model without one (a retrained or foreign
model) gets the generic defaults (``steer``, depth 0.5, its own guidance).
"""

from __future__ import annotations

import json
import weakref
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from medcf.editing.spec import GENERIC_DEPTH, EditSpec, Method
from medcf.models.base import Generator
from medcf.models.package import PIECE_FILES, Piece, PieceKind, Role, measured
from medcf.vocab import Action, Finding

DEFAULTS_FILE = PIECE_FILES[PieceKind.EDIT_DEFAULTS][Role.RECORD]  # the package's per-finding settings
GENERIC_METHOD = Method.STEER  # auto's method on a model without a measured choice


@dataclass(frozen=True)
class Choice:
    """One (finding, action)'s setting and what it scored on the tuning patients."""

    method: str
    depth: float
    guidance: float | None
    flip_rate: float
    fidelity_psnr: float
    #: an alternative denoiser shipped beside the weights (``denoisers/<name>/``,
    #: :mod:`medcf.models.variants`) measured best for this cell; None: the model's own
    denoiser: str | None = None
    #: the share of the inversion's noise maps drawn afresh inside the region (EditSpec.renoise)
    renoise: float = 0.0


@dataclass(frozen=True)
class EditDefaults:
    """Per finding and action, the chosen setting (``choices[finding][action]``), the rule
    and the tuning run it came from, for one denoiser."""

    choices: dict[str, dict[str, Choice]]
    rule: str
    measured: dict
    denoiser_sha256: str

    def choice(self, finding: Finding, action: Action) -> Choice | None:
        return self.choices.get(finding.value, {}).get(action.value)

    def save(self, path: str | Path) -> Path:
        from medcf.io.atomic import write_new_text

        return write_new_text(Path(path), json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "EditDefaults":
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(parse_choices(data["choices"]), data["rule"], data["measured"], data["denoiser_sha256"])


def parse_choices(data: dict) -> dict[str, dict[str, Choice]]:
    """``choices`` as JSON holds them (``edit_defaults.json``, a benchmark run's
    ``settings.auto_choices``) → :class:`Choice` per finding and action."""
    return {finding: {action: Choice(**choice) for action, choice in actions.items()}
            for finding, actions in data.items()}


def find_defaults(generator: Generator) -> EditDefaults | None:
    """The choice measured for ``generator``'s denoiser, if its package holds one."""
    return measured(generator, PieceKind.EDIT_DEFAULTS, _load_piece)


def _load_piece(piece: Piece) -> EditDefaults:
    return EditDefaults.load(piece.path(Role.RECORD))


@dataclass(frozen=True)
class Settled:
    """What an edit runs with once ``auto`` is settled: the spec, where its settings came
    from, and the generator and steering vectors to use — an alternative denoiser's when
    the measured choice names one (``denoiser``, with its weights' SHA-256), else the ones given."""

    spec: EditSpec
    chosen_by: str
    generator: Generator
    vectors: object  # SteeringVectors | None
    denoiser: str | None = None
    denoiser_sha256: str | None = None

    def provenance(self) -> dict:
        """What an edit's record says about the denoiser beyond the model's own weights."""
        if self.denoiser is None:
            return {}
        return {"denoiser": {"name": self.denoiser, "folder": self.generator.source, "sha256": self.denoiser_sha256}}


def settle(spec: EditSpec, generator: Generator, vectors=None) -> Settled:
    """:func:`resolve`, and for a measured choice that names an alternative denoiser, the
    model with that denoiser and its own steering vectors (vectors belong to one denoiser)."""
    chosen = measured_choice(spec, generator)
    settled, chosen_by = _resolved(spec, chosen)
    if chosen is None or chosen.denoiser is None:
        return Settled(settled, chosen_by, generator, vectors)
    from medcf.models.variants import with_denoiser

    variant = with_denoiser(generator, chosen.denoiser)
    own, sha256 = _alternative(variant)
    return Settled(settled, f"{chosen_by}, denoiser {chosen.denoiser}", variant, own, chosen.denoiser, sha256)


_ALTERNATIVES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _alternative(variant: Generator) -> tuple[object, str]:
    """An alternative denoiser's steering vectors and fingerprint, read and hashed once per
    loaded denoiser (its weights are frozen), not once per edit."""
    if variant not in _ALTERNATIVES:
        from medcf.editing.api import own_vectors
        from medcf.editing.steering import denoiser_fingerprint

        _ALTERNATIVES[variant] = (own_vectors(variant)[0], denoiser_fingerprint(variant))
    return _ALTERNATIVES[variant]


def auto_choices(generator: Generator) -> dict | None:
    """What ``auto`` is settled from for ``generator`` (its ``edit_defaults.json`` choices as
    JSON holds them), for a run's record: a sweep or suite of ``auto`` then says which
    settings its rows stand for even after the shipped choice has changed."""
    defaults = find_defaults(generator)
    return None if defaults is None else asdict(defaults)["choices"]


def measured_choice(spec: EditSpec, generator: Generator) -> Choice | None:
    """The model's measured choice for ``spec``'s finding and action when ``spec`` asks for
    ``auto``; None for an explicit method or a model without one."""
    defaults = find_defaults(generator) if spec.method is Method.AUTO else None
    return defaults.choice(spec.finding, spec.action) if defaults is not None else None


def resolve(spec: EditSpec, generator: Generator) -> tuple[EditSpec, str]:
    """``spec`` with ``auto``, ``depth``, ``guidance`` and ``renoise`` settled, and where they came from.
    What the user set explicitly is kept; ``auto`` fills the rest from the model's
    measured choice, an explicit method from the generic defaults."""
    return _resolved(spec, measured_choice(spec, generator))


def _resolved(spec: EditSpec, chosen: Choice | None) -> tuple[EditSpec, str]:
    """:func:`resolve` given the measured choice (None: there is none, or not asked for)."""
    if spec.method is Method.AUTO and chosen is not None:
        settled = replace(spec, method=Method(chosen.method),
                          depth=chosen.depth if spec.depth is None else spec.depth,
                          guidance=chosen.guidance if spec.guidance is None else spec.guidance,
                          renoise=chosen.renoise if spec.renoise is None else spec.renoise)
        return settled, f"auto: {DEFAULTS_FILE} (measured on tuning patients)"
    method = GENERIC_METHOD if spec.method is Method.AUTO else spec.method
    settled = replace(spec, method=method, depth=generic_depth(method) if spec.depth is None else spec.depth,
                      renoise=0.0 if spec.renoise is None else spec.renoise)
    return settled, "auto: generic defaults (no measured choice for this model)" if spec.method is Method.AUTO \
        else "as asked"


def generic_depth(method: Method) -> float:
    """An explicit method's depth when none is asked: ``causal`` re-draws a proposal that
    already carries the finding, so it needs fewer steps than a method that starts from the input."""
    if method.causal:
        from medcf.causal.method import CAUSAL_DEPTH

        return CAUSAL_DEPTH
    return GENERIC_DEPTH
