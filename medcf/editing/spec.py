"""What an edit asks for: :class:`EditSpec`, validated before any pixel is touched."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from medcf.errors import InputError
from medcf.vocab import Action, Finding, Severity, Side, StrEnum, Zone


class Method(StrEnum):
    """Editing methods (docs/methods.md §1–3); they compose through one attention controller."""

    AUTO = "auto"  # the method (and depth, guidance) measured best for the finding on this model
    REGULATED = "regulated"  # re-prompt with anatomy regulation, pathology enhancement, concentration energy
    STEER = "steer"  # MedSteer activation steering, anatomy-gated
    REGULATED_STEER = "regulated+steer"
    CAUSAL = "causal"  # the factor model's pathology swap, re-drawn by the denoiser under the target prompt (§5)


class Inversion(StrEnum):
    """How a given radiograph's latent is turned back into a sampling trajectory (§4)."""

    DDPM = "ddpm"  # edit-friendly DDPM inversion: exact reconstruction by construction
    DDIM = "ddim"  # deterministic DDIM inversion: approximate


@dataclass(frozen=True)
class EditConstants:
    """The methods' constants (docs/methods.md §1–3), kept as configuration data: the bundle's
    ``configs/edit.json`` holds them under ``constants`` and ``medcf edit`` reads them
    from there (:mod:`medcf.editing.config`); these values are the documented defaults a
    library caller gets without a bundle. ``strength`` and the severity scale multiply
    the steering and enhancement pushes."""

    steering_alpha: float = 2.0  # MedSteer's reference steering strength
    enhancement_gamma: float = 2.0  # pathology-token attention boost inside the target region
    enhancement_gamma_out: float = 1.0  # ... and its damping outside
    energy_step: float = 0.08  # normalised latent step of the concentration-energy correction
    regulation_beta_self: float = 4.0  # self-attention penalty between organ regions
    severity_mild: float = 0.6
    severity_moderate: float = 1.0
    severity_severe: float = 1.5

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) <= 100.0:
                raise InputError(f"edit constant {name}: {value!r} is not a number in (0, 100]")

    @classmethod
    def from_dict(cls, values: dict | None) -> "EditConstants":
        """From the config's ``constants`` (missing keys keep the defaults; unknown ones are refused)."""
        values = dict(values or {})
        unknown = sorted(set(values) - {f for f in cls.__dataclass_fields__})
        if unknown:
            raise InputError(f"unknown edit constant(s) {', '.join(unknown)}; known: "
                             + ", ".join(cls.__dataclass_fields__))
        return cls(**values)

    def severity_scale(self, severity: Severity) -> float:
        return float(getattr(self, f"severity_{severity.value}"))


GENERIC_DEPTH = 0.5  # an explicit method's depth when none is asked (the editor benchmark's best, docs/editing.md)
MAX_PASSES = 5
MAX_GUIDANCE = 30.0  # beyond this a CFG sampler leaves the data manifold (saturated, blotchy films)
# Findings that have no side (the editor takes the region from the organ instead).
SIDELESS = (Finding.CARDIOMEGALY,)
# Findings that are a whole-pleural-space process: a zone narrows only where they start.
DEFAULT_ZONES = {
    Finding.PLEURAL_EFFUSION: Zone.LOWER, Finding.ATELECTASIS: Zone.LOWER, Finding.PNEUMOTHORAX: Zone.UPPER,
}


@dataclass(frozen=True)
class EditSpec:
    """One requested change: add or remove ``finding`` on ``side`` (and ``zone``) at ``severity``.

    ``method`` (default ``auto``: the method, depth and guidance measured best for this
    finding and action on the model in use, :mod:`medcf.editing.defaults`); ``strength``
    scales every method's push (1 = the documented defaults); ``steps`` is the number of
    sampling steps; ``depth`` how far back the trajectory is re-sampled (1 = from pure
    noise, 0.5 = the last half of the steps; ``None``: ``auto``'s choice, else 0.5);
    ``guidance`` the classifier-free guidance scale inside the edit region (``None``:
    ``auto``'s choice, else the model's own; outside the region the model's own always
    applies); ``energy`` adds the concentration-energy latent correction to ``regulated``
    additions; ``passes`` how many passes the editor may make, each stronger and deeper
    than the last, until the model's own check (:mod:`medcf.editing.evidence`) finds the
    target state. ``renoise``: the share of the edit-friendly inversion's noise maps drawn
    afresh inside the edit region (0 = the input's own maps, which pull the region back
    towards the input; 1 = fresh noise there, as SDEdit;
    :func:`medcf.editing.inversion.refresh_noise_maps`; ``None``: ``auto``'s choice, else 0). ``optimize_noise``: for a pair sampled from scratch, optimise the initial
    noise first so that the finding's tokens are attended to (InitNO,
    :mod:`medcf.editing.initno`; rare combinations). ``None`` and ``auto`` are settled by
    :func:`medcf.editing.plan.plan_edit` before an edit runs. ``constants``: the
    methods' constants (:class:`EditConstants`), recorded with the spec in ``edit.json``.
    """

    finding: Finding
    action: Action
    side: Side | None = None
    zone: Zone | None = None
    severity: Severity = Severity.MODERATE
    method: Method = Method.AUTO
    strength: float = 1.0
    seed: int = 0
    steps: int = 25
    depth: float | None = None
    inversion: Inversion = Inversion.DDPM
    energy: bool = False
    passes: int = 1
    guidance: float | None = None
    renoise: float | None = None
    optimize_noise: bool = False
    constants: EditConstants = EditConstants()

    def __post_init__(self) -> None:
        for name, cls in (("finding", Finding), ("action", Action), ("severity", Severity), ("method", Method),
                          ("inversion", Inversion)):
            object.__setattr__(self, name, _parse(cls, getattr(self, name), name))
        for name, cls in (("side", Side), ("zone", Zone)):
            value = getattr(self, name)
            object.__setattr__(self, name, None if value is None else _parse(cls, value, name))
        if self.finding in SIDELESS:
            if self.side not in (None, Side.BILATERAL):
                raise InputError(f"--side {self.side.value}: {self.finding.value} has no side (leave --side out)")
            if self.zone is not None:
                raise InputError(f"--zone {self.zone.value}: {self.finding.value} has no zone (leave --zone out)")
        elif self.side is None:
            if self.finding is Finding.EDEMA:
                object.__setattr__(self, "side", Side.BILATERAL)
            else:
                raise InputError(f"--side is needed for {self.finding.value} (left, right or bilateral)")
        if not 0.0 < self.strength <= 4.0:
            raise InputError(f"--strength {self.strength:g} is outside (0, 4]")
        if not 2 <= self.steps <= 1000:
            raise InputError(f"--steps {self.steps} is outside 2..1000")
        if self.depth is not None and not 0.1 <= self.depth <= 1.0:
            raise InputError(f"--depth {self.depth:g} is outside 0.1..1")
        if self.renoise is not None and not 0.0 <= self.renoise <= 1.0:
            raise InputError(f"--renoise {self.renoise:g} is outside 0..1")
        if self.guidance is not None and not 1.0 <= self.guidance <= MAX_GUIDANCE:
            raise InputError(f"--guidance {self.guidance:g} is outside 1..{MAX_GUIDANCE:g}")
        if isinstance(self.constants, dict):
            object.__setattr__(self, "constants", EditConstants.from_dict(self.constants))
        if not 1 <= self.passes <= MAX_PASSES:
            raise InputError(f"--passes {self.passes} is outside 1..{MAX_PASSES}")

    @property
    def region_zone(self) -> Zone | None:
        """The zone the edit region is built from (the finding's usual start when none is given)."""
        return self.zone or DEFAULT_ZONES.get(self.finding)

    def describe(self) -> str:
        words = [self.action.value, self.severity.value, self.side.value if self.side else None,
                 f"{self.zone.value} zone" if self.zone else None, self.finding.value.replace("_", " ")]
        return " ".join(w for w in words if w)

    def to_dict(self) -> dict:
        return {k: (str(v) if isinstance(v, StrEnum) else v) for k, v in asdict(self).items()}


def _parse(cls, value, name: str):
    if isinstance(value, cls):
        return value
    try:
        return cls.parse(str(value))
    except ValueError as error:
        raise InputError(f"--{name}: {error}") from None
