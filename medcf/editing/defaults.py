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
model) gets the generic defaults (``steer``, depth 0.5, its own guidance). This module holds the
measured data; :mod:`medcf.editing.plan` resolves a request with it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from medcf.io.atomic import write_new_text
from medcf.models.base import Generator
from medcf.models.package import PIECE_FILES, Piece, PieceKind, Role, measured
from medcf.vocab import Action, Finding

DEFAULTS_FILE = PIECE_FILES[PieceKind.EDIT_DEFAULTS][Role.RECORD]  # the package's per-finding settings


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


def auto_choices(generator: Generator) -> dict | None:
    """What ``auto`` is settled from for ``generator`` (its ``edit_defaults.json`` choices as
    JSON holds them), for a run's record: a sweep or suite of ``auto`` then says which
    settings its rows stand for even after the shipped choice has changed."""
    defaults = find_defaults(generator)
    return None if defaults is None else asdict(defaults)["choices"]
