"""What an edit asks for: :class:`EditSpec`, validated before any pixel is touched."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from medcf.editing.schema import OptionSpec, Range, Scope, options_of
from medcf.errors import InputError
from medcf.vocab import Action, Finding, Severity, Side, StrEnum, Zone


class Method(StrEnum):
    """Editing methods (docs/methods.md §1–3); they compose through one attention controller."""

    AUTO = "auto"  # the method (and depth, guidance) measured best for the finding on this model
    REGULATED = "regulated"  # re-prompt with anatomy regulation, pathology enhancement, concentration energy
    STEER = "steer"  # MedSteer activation steering, anatomy-gated
    REGULATED_STEER = "regulated+steer"
    CAUSAL = "causal"  # the factor model's pathology swap, re-drawn by the denoiser under the target prompt (§5)
    INSERT = "insert"  # the world's lesion, registered onto the film's anatomy and added to the film (docs/insertion.md)


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

#: the methods in words (the --method help; Method's members say the same in short)
METHOD_HELP = (
    "auto = the method, depth and region guidance measured best for this finding and action on the model in use "
    "(edit_defaults.json beside its weights; steer when the model has none); steer = MedSteer activation steering "
    "gated to the edit region; regulated = re-prompt with anatomy-gated attention and pathology enhancement "
    "(+ --energy); regulated+steer = both; causal = the factor model's pathology swap (anatomy factor kept, "
    "pathology factor named by finding/side/zone/severity), re-drawn by the denoiser under the target prompt "
    "(needs causal_factors.json beside the weights); insert = the simulated world's lesion (projected from its chest "
    "CT, lesion bank) registered onto this film's lungs and heart and added in the film's own attenuation domain, "
    "no diffusion model involved (add only)")
#: the methods that can remove a finding (insert only adds one), for one-line refusals
REMOVING_METHODS = tuple(m.value for m in Method if m is not Method.INSERT)
#: what a depth, guidance or renoise left out becomes (medcf.editing.defaults.resolve)
_AUTO_OR = "with --method auto, the value measured for the finding and action on the model in use (its " \
           "edit_defaults.json; as steer where it has none)"


@dataclass(frozen=True)
class EditSpec:
    """One requested change: add or remove ``finding`` on ``side`` (and ``zone``) at ``severity``.

    Every field but ``constants`` is an edit option, and its metadata (:class:`OptionSpec`)
    is the one statement of that option: the command lines, the bundle's
    ``configs/edit.json``, the Slicer panel and the MONAI Label app take their choices,
    ranges, defaults and help from it (:mod:`medcf.editing.schema`,
    :mod:`medcf.editing.options`). The help of each field says what it does; in short:
    ``method`` ``auto`` takes the method, depth, guidance and renoise measured best for this
    finding and action on the model (:mod:`medcf.editing.defaults`); ``strength`` scales
    every method's push; ``depth`` how far back the trajectory is re-sampled; ``guidance``
    the classifier-free guidance scale inside the edit region; ``passes`` how many passes
    the editor may make until the model's own check (:mod:`medcf.editing.evidence`) finds
    the target state; ``renoise`` the share of the edit-friendly inversion's noise maps
    drawn afresh inside the region (:func:`medcf.editing.inversion.refresh_noise_maps`);
    ``optimize_noise`` InitNO for pairs sampled from scratch (:mod:`medcf.editing.initno`);
    ``allow_out_of_domain`` writes an edit whose input lies outside the model's domain
    (:mod:`medcf.domain`), marked so, instead of refusing it.
    ``None`` and ``auto`` are settled by :func:`medcf.editing.plan.plan_edit` before an
    edit runs. ``constants``: the methods' constants (:class:`EditConstants`), recorded
    with the spec in ``edit.json``.
    """

    finding: Finding = OptionSpec("the finding to add or remove", Scope.EDIT).field()
    action: Action = OptionSpec("add or remove the finding", Scope.EDIT).field()
    side: Side | None = OptionSpec(
        "patient side: needed except for " + ", ".join(f.value for f in SIDELESS) + " (which has none); edema "
        "defaults to bilateral", Scope.EDIT).field(None)
    zone: Zone | None = OptionSpec(
        "lung zone of the edit", Scope.EDIT,
        unset="where the finding starts: " + ", ".join(f"{f.value} {z.value}" for f, z in DEFAULT_ZONES.items())
              + "; the whole lung otherwise").field(None)
    severity: Severity = OptionSpec("how marked the finding is drawn").field(Severity.MODERATE)
    method: Method = OptionSpec(METHOD_HELP).field(Method.AUTO)
    strength: float = OptionSpec("scales steering and enhancement: 1 = the documented constants",
                                 range=Range(0.0, 4.0, low_open=True)).field(1.0)
    seed: int = OptionSpec("random seed; same seed, same output", Scope.EDIT).field(0)
    steps: int = OptionSpec("sampling steps", range=Range(2, 1000)).field(25)
    depth: float | None = OptionSpec(
        "how much of the trajectory is re-sampled: 1 = from noise, 0.5 = the last half of the steps",
        range=Range(0.1, 1.0),
        unset=f"{_AUTO_OR}; with a method named, {GENERIC_DEPTH:g} (causal: its own, shorter re-draw)").field(None)
    inversion: Inversion = OptionSpec(
        "ddpm = edit-friendly DDPM inversion, exact; ddim = DDIM inversion").field(Inversion.DDPM)
    energy: bool = OptionSpec(
        "add the attention-concentration latent correction to regulated additions (it lowered fidelity on the "
        "default model, docs/editing.md)").field(False)
    passes: int = OptionSpec(
        "passes the editor may make until the model's own check finds the target state, each stronger (x1.5) and "
        "deeper (+0.15) than the last; the check of the input and of the output is reported in edit.json and on "
        "the panel either way", range=Range(1, MAX_PASSES)).field(1)
    guidance: float | None = OptionSpec(
        "classifier-free guidance scale inside the edit region; outside it the model's own always applies",
        range=Range(1.0, MAX_GUIDANCE), unset=f"{_AUTO_OR}; else the model's own").field(None)
    renoise: float | None = OptionSpec(
        "share of the inverted noise drawn afresh inside the edit region: 0 keeps the input's own noise maps (they "
        "pull the region back towards the input), 1 re-draws the region from fresh noise (as SDEdit)",
        range=Range(0.0, 1.0), unset=f"{_AUTO_OR}; else 0").field(None)
    harmonize: float = OptionSpec(
        "--method insert only: depth of a low-depth pass of the diffusion editor inside the inserted lesion's "
        "region after insertion; 0 = off. Harmonisation is not available yet (any depth above 0 is refused)",
        range=Range(0.0, 1.0)).field(0.0)
    optimize_noise: bool = OptionSpec(
        "InitNO: before each pair, optimise the initial noise (at most 5 rounds x 10 differentiable denoiser "
        "calls) so that the finding's words are attended to at the first step; for rare combinations. What it did "
        "and cost goes into pairs.jsonl. On the default model it measured no gain (docs/editing.md)",
        Scope.PAIRS).field(False)
    allow_out_of_domain: bool = OptionSpec(
        "write the edit even when the input lies outside the model's training domain (the model's own "
        "reconstruction and denoising errors beyond those of its held-out training films, medcf.domain): without it "
        "such an edit is refused; with it edit.json, the panel and the DICOM Derivation Description say the edit "
        "lies outside the model's domain and the model's check says 'not checked'", Scope.EDIT).field(False)
    constants: EditConstants = EditConstants()

    def __post_init__(self) -> None:
        for option in EDIT_OPTIONS:  # types, choices and ranges: checked in one place (Option.check)
            object.__setattr__(self, option.name, option.check(getattr(self, option.name)))
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
        if self.method is Method.INSERT and self.action is Action.REMOVE:
            raise InputError("--method insert only adds findings; to remove one use --method "
                             + ", ".join(REMOVING_METHODS))
        if self.method is Method.INSERT and self.harmonize > 0:
            raise InputError(f"--harmonize {self.harmonize:g}: harmonisation not available yet; "
                             "use --harmonize 0 (insertion alone)")
        if isinstance(self.constants, dict):
            object.__setattr__(self, "constants", EditConstants.from_dict(self.constants))

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



#: every edit option, in the order EditSpec states them
EDIT_OPTIONS = options_of(EditSpec)
OPTIONS = {option.name: option for option in EDIT_OPTIONS}
