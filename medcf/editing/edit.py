"""Edit a given radiograph (docs/methods.md §4): encode → invert → re-sample under the
attention controller with the chosen methods and latent blending → transfer only the
difference, inside the feathered region, back to the native-resolution original.

Outside the edit region the output *is* the input (the transfer weight is exactly zero
there); the region is built from the segmented anatomy (:mod:`medcf.editing.regions`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from medcf.anatomy.masks import AnatomyMasks
from medcf.devices import precision_hint
from medcf.editing.control import AttentionController, ControlMethod
from medcf.editing.energy import ConcentrationEnergy
from medcf.editing.evidence import EvidenceScore
from medcf.editing.inversion import Trajectory, ddim_inversion, edit_friendly_inversion, refresh_noise_maps
from medcf.editing.regions import EditRegion, resize_image
from medcf.editing.regulation import AnatomyRegulation, PathologyEnhancement, pathology_tokens
from medcf.editing.spec import SIDELESS, EditSpec, Inversion
from medcf.editing.steering import Steering, SteeringVectors
from medcf.errors import InputError, MedCFError, OutputError
from medcf.models.base import Generator
from medcf.models.convention import Intensity, IntensityMap
from medcf.models.sampling import UNCOND, sample
from medcf.text.prompts import prompt
from medcf.vocab import Action, ViewPosition


@dataclass
class LatentBlend(ControlMethod):
    """After every step, latents outside the region return to the reference trajectory."""

    trajectory: Trajectory
    mask: torch.Tensor  # (1, 1, h, w) in [0, 1]

    def end_step(self, step, timestep, latents):
        reference = self.trajectory.latents[step + 1].to(latents.device, latents.dtype)
        mask = self.mask.to(latents.device, latents.dtype)
        return mask * latents + (1 - mask) * reference


@dataclass
class Counterfactual:
    """The edited radiograph at native size (display values in [0, 1]) and how it was made."""

    image: np.ndarray
    source: np.ndarray
    spec: EditSpec
    region: EditRegion
    prompts: dict[str, str]
    working: dict[str, np.ndarray]
    settings: dict = field(default_factory=dict)
    seconds: float = 0.0
    check: "TargetCheck | None" = None  # the model's own verdict, when the edit was checked

    @property
    def difference(self) -> np.ndarray:
        return self.image - self.source


def edit_prompts(spec: EditSpec, view: ViewPosition, style=None) -> dict[str, str]:
    """The factual and counterfactual prompts in the words the model learned (``style``: the
    model's convention, :func:`medcf.text.prompts.prompt`)."""
    side = None if spec.finding in SIDELESS else spec.side
    finding = prompt(view, spec.finding, side=side, zone=spec.zone, severity=spec.severity, style=style)
    normal = prompt(view, style=style)
    if spec.action is Action.ADD:
        return {"source": normal, "target": finding, "finding": finding}
    return {"source": finding, "target": normal, "finding": finding}


def check_image(image: np.ndarray, what: str, error: type[MedCFError] = OutputError, hint: str = "") -> None:
    """Refuse NaN/inf, blank or saturated images (known failure modes of CXR editors).
    ``hint`` ends the message with what to change (:func:`medcf.devices.precision_hint`:
    half precision is the usual cause of a black or NaN film from a model that works)."""
    refuse = ("; refusing to write it" if error is OutputError else "; nothing to edit") + hint
    if not np.isfinite(image).all():
        raise error(f"{what} has NaN/inf pixels{refuse}")
    if float(image.std()) < 1e-3:
        raise error(f"{what} is blank (every pixel ≈ {float(image.mean()):.3f}){refuse}")
    if float((image >= 0.999).mean()) > 0.5 or float((image <= 0.001).mean()) > 0.9:
        raise error(f"{what} is saturated{refuse}")


def control_methods(generator: Generator, spec: EditSpec, region: EditRegion, prompts: dict[str, str],
             vectors: SteeringVectors | None) -> tuple[list[ControlMethod], str, str]:
    """The control methods of ``spec.method``, the prompt to sample with and the negative prompt."""
    constants = spec.constants
    scale = spec.strength * constants.severity_scale(spec.severity)
    gamma, gamma_out = constants.enhancement_gamma * scale, constants.enhancement_gamma_out * scale
    methods: list[ControlMethod] = []
    if spec.method.regulated:
        edit_prompt = prompts["target"]
        negative = "" if spec.action is Action.ADD else prompts["finding"]
        text = generator.encode_text([edit_prompt])
        methods.append(AnatomyRegulation(region, text, beta_self=constants.regulation_beta_self))
        if spec.action is Action.ADD:
            tokens = pathology_tokens(text, spec.finding)
            methods.append(PathologyEnhancement(region, tokens, gamma=gamma, gamma_out=gamma_out))
            if spec.energy:
                methods.append(ConcentrationEnergy(generator, text, region=region, tokens=tokens,
                                                   step_size=constants.energy_step))
        else:  # the finding lives in the negative prompt: make it attend to the region it must leave
            tokens = pathology_tokens(generator.encode_text([negative]), spec.finding)
            methods.append(PathologyEnhancement(region, tokens, gamma=gamma, gamma_out=gamma_out, branches=(UNCOND,)))
    elif spec.method.causal:  # the factors drew the finding; the target prompt finishes it
        edit_prompt, negative = prompts["target"], "" if spec.action is Action.ADD else prompts["finding"]
    else:
        edit_prompt, negative = prompts["source"], ""
    if spec.method.steered:
        if vectors is None:
            raise InputError(f"method {spec.method.value} needs steering vectors (none were given or shipped)")
        methods.append(Steering(vectors.for_finding(spec.finding), vectors.timesteps, spec.action,
                                alpha=constants.steering_alpha * scale, region=region))
    return methods, edit_prompt, negative


@dataclass
class EditInputs:
    """What every editing pipeline starts from: the input at native and working size (``small``
    in the model's intensities: ``mapping.forward`` of the resized display values), its
    latent, the region, the prompts and their encodings."""

    display: np.ndarray
    small: np.ndarray
    z0: torch.Tensor
    region: EditRegion
    prompts: dict[str, str]
    source_text: object
    uncond: object
    started: float
    mapping: IntensityMap = field(default_factory=lambda: Intensity().fit(np.zeros(1)))

    @property
    def latent_hw(self) -> tuple[int, int]:
        return tuple(self.z0.shape[-2:])


def prepare(display: np.ndarray, masks: AnatomyMasks, spec: EditSpec, generator: Generator,
            view: ViewPosition = ViewPosition.PA) -> EditInputs:
    """Validate the input, build the region, resize to the model's size, map into the model's
    intensities (its convention, fitted on the whole native input) and encode."""
    started = time.perf_counter()
    display = np.asarray(display, dtype=np.float32)
    if display.ndim != 2 or display.shape != tuple(masks.shape):
        raise InputError(f"image {display.shape} and anatomy masks {tuple(masks.shape)} differ in size")
    check_image(display, "the input image", InputError)
    working_size = tuple(generator.image_size)
    region = EditRegion.build(masks, spec, working_size)
    convention = generator.convention
    mapping = (convention.intensity if convention is not None else Intensity()).fit(display)
    small = mapping.forward(resize_image(display, working_size))
    prompts = edit_prompts(spec, view, convention)
    with torch.no_grad():
        z0 = generator.encode_images(small)
        source_text = generator.encode_text([prompts["source"]])
        uncond = generator.unconditional(1)
    return EditInputs(display, small, z0, region, prompts, source_text, uncond, started, mapping)


def finish(inputs: EditInputs, spec: EditSpec, generator: Generator, latents: torch.Tensor, settings: dict,
           weight: np.ndarray | None = None) -> Counterfactual:
    """Decode, transfer ``decode(edited) − decode(z0)`` onto the native input with ``weight``
    (default: the region's feathered weight; baselines pass 1 everywhere), guard, record.
    Both films go back through the convention's inverse first, so the change is in display
    values; where ``weight`` is 0 the output is the input."""
    edited_small = generator.decode_images(latents)[0]
    reconstruction = generator.decode_images(inputs.z0)[0]
    hint = precision_hint(generator.dtype)
    check_image(edited_small, "the model's counterfactual", hint=hint)
    mapping = inputs.mapping
    delta = resize_image(mapping.inverse(edited_small) - mapping.inverse(reconstruction), inputs.display.shape)
    weight = inputs.region.native_weight if weight is None else weight
    image = np.clip(inputs.display + weight * delta, 0.0, 1.0).astype(np.float32)
    check_image(image, "the counterfactual", hint=hint)
    convention = generator.convention
    settings = {"working_size": list(generator.image_size), "guidance_scale": generator.guidance_scale,
                "convention": convention.to_dict() if convention is not None else None,
                "region_fraction": round(float(inputs.region.native_region.mean()), 5), **settings}
    working = {"input": inputs.small, "reconstruction": reconstruction, "edited": edited_small,
               "target": inputs.region.target.numpy()}
    return Counterfactual(image, inputs.display, spec, inputs.region, inputs.prompts, working, settings,
                          time.perf_counter() - inputs.started)


def _edit_pass(inputs: EditInputs, spec: EditSpec, generator: Generator, vectors: SteeringVectors | None,
               progress: bool) -> Counterfactual:
    """One pass: invert to ``spec.depth``, re-sample under the controller, transfer. The
    ``causal`` method inverts the factor model's proposal instead of the input itself
    (:mod:`medcf.causal.method`); the transfer is always against the input."""
    guidance = generator.guidance_scale  # the inversion's, and the re-sampling's outside the region
    start = spec.steps - max(1, round(spec.depth * spec.steps))
    z_start = inputs.z0
    if spec.method.causal:
        from medcf.causal.method import causal_proposal

        z_start = causal_proposal(generator, inputs.z0, spec)
    if spec.inversion is Inversion.DDPM:
        trajectory = edit_friendly_inversion(generator, z_start, inputs.source_text, inputs.uncond, spec.steps,
                                             guidance, spec.seed, start)
    else:
        trajectory = ddim_inversion(generator, z_start, inputs.source_text, inputs.uncond, spec.steps, guidance)
    methods, edit_prompt, negative = control_methods(generator, spec, inputs.region, inputs.prompts, vectors)
    mask = inputs.region.latent_mask(inputs.latent_hw)[None, None]
    trajectory = refresh_noise_maps(generator, trajectory, mask, spec.renoise or 0.0, spec.seed)
    methods.append(LatentBlend(trajectory, mask))
    with AttentionController(generator, methods, steps=spec.steps, first_step=start,
                             latent_hw=inputs.latent_hw) as controller:
        result = sample(generator, [edit_prompt], seed=spec.seed, steps=spec.steps,
                        guidance_scale=region_guidance(mask, spec, guidance),
                        negative_prompt=negative, latents=trajectory.latents[start], start_step=start,
                        noise_maps=trajectory.noise_maps, observer=controller, progress=progress, decode=False)
    energy = [m for m in methods if isinstance(m, ConcentrationEnergy)]
    return finish(inputs, spec, generator, result.latents, {
        "start_step": start, "region_guidance": spec.guidance or guidance, "edit_prompt": edit_prompt, "negative_prompt": negative,
        "inversion": spec.inversion.value, "renoise": spec.renoise, "methods": [type(m).__name__ for m in methods],
        "timesteps": result.settings["timesteps"],
        "energy": [[s, round(e, 4)] for s, e in energy[0].history] if energy else None})


def region_guidance(mask: torch.Tensor, spec: EditSpec, base: float) -> float | torch.Tensor:
    """The guidance scale as a latent map: ``spec.guidance`` on the region's latent cells
    (``mask``, the latent blend's), the model's own outside (where the latents are held on
    the input's trajectory anyway), so the prompt is pushed hard only where the finding goes."""
    if spec.guidance is None or spec.guidance == base:
        return base
    return base + (spec.guidance - base) * mask


PASS_STRENGTH, PASS_DEPTH, MAX_DEPTH = 1.5, 0.15, 0.9  # each further pass: strength x1.5, depth +0.15 (at most 0.9)


def pass_spec(spec: EditSpec, index: int) -> EditSpec:
    """The settings of pass ``index`` (0 = as asked): stronger and deeper each time, within
    the spec's bounds (strength ≤ 4, depth ≤ 0.9 so the film's layout is never re-drawn
    from pure noise)."""
    if index == 0:
        return spec
    return replace(spec, strength=min(4.0, spec.strength * PASS_STRENGTH ** index),
                   depth=max(spec.depth, min(MAX_DEPTH, spec.depth + PASS_DEPTH * index)))


def in_target_state(action: Action, score: EvidenceScore) -> bool:
    """The check's verdict on one film: add → the finding prompt explains the film better,
    beyond the check's own noise; remove → it does not."""
    return score.finding_like if action is Action.ADD else not score.finding_like


def target_reached(action: Action, input_score: EvidenceScore, output_score: EvidenceScore) -> bool:
    """An edit reached its target when the output is in the target state *and* moved there
    from the input: on a normal film that already scores above 0 for a finding (the
    check's threshold is not fitted per finding), an added finding must raise the score
    further, not merely keep it."""
    moved = (output_score.value > input_score.value if action is Action.ADD
             else output_score.value < input_score.value)
    return in_target_state(action, output_score) and moved


@dataclass(frozen=True)
class TargetCheck:
    """What the model's own check (:mod:`medcf.editing.evidence`) says of the input and
    the output: > 0 means the finding prompt explains the film better than the normal one.
    ``reliable``: the check separates this finding on rendered tuning patients (AUC ≥
    MIN_RELIABLE_AUC); when it does not, the verdicts are reported but do not drive passes."""

    action: Action
    input_score: EvidenceScore
    output_score: EvidenceScore
    reliable: bool
    passes: int
    strength: float
    depth: float

    @property
    def input_in_target(self) -> bool:
        return in_target_state(self.action, self.input_score)

    @property
    def reached(self) -> bool:
        return target_reached(self.action, self.input_score, self.output_score)

    def remark(self) -> str:
        """One honest line for the panel and the log."""
        words = [f"model check: target {'reached' if self.reached else 'NOT reached'} "
                 f"after {self.passes} pass{'es' if self.passes > 1 else ''} (strength {self.strength:g}, "
                 f"depth {self.depth:g})"]
        if self.input_in_target:
            words.append("the input already shows it" if self.action is Action.ADD
                         else "the input is already without it")
        if not self.reliable:
            words.append("check unreliable for this finding")
        return "; ".join(words)

    def to_dict(self) -> dict:
        return {"input_score": round(self.input_score.value, 5), "input_stderr": round(self.input_score.stderr, 5),
                "output_score": round(self.output_score.value, 5), "output_stderr": round(self.output_score.stderr, 5),
                "input_in_target_state": self.input_in_target, "target_reached": self.reached,
                "reliable": self.reliable, "passes": self.passes, "strength": self.strength, "depth": self.depth,
                "rule": "score = (e_normal - e_finding) / e_normal of the model's noise prediction in the edit "
                        "region, over 16 noise draws; add: reached when above 2 standard errors and above the "
                        "input's, remove: when not above 2 standard errors and below the input's"}


class EvidenceChecker:
    """The evidence check of one edit: prompts encoded and region mask built once."""

    def __init__(self, inputs: EditInputs, spec: EditSpec, generator: Generator):
        from medcf.editing.evidence import evidence_score, find_reliability

        self._score = evidence_score
        self.generator = generator
        self.inputs = inputs
        prompts = inputs.prompts
        normal = prompts["source"] if spec.action is Action.ADD else prompts["target"]
        self.normal, self.finding = generator.encode_text([normal]), generator.encode_text([prompts["finding"]])
        self.mask = inputs.region.latent_mask(inputs.latent_hw)[None, None]
        reliability = find_reliability(generator)
        self.reliable = reliability is not None and reliability.reliable(spec.finding)

    def score(self, latents: torch.Tensor) -> EvidenceScore:
        return self._score(self.generator, latents, self.normal, self.finding, self.mask)

    def score_image(self, image: np.ndarray) -> EvidenceScore:
        """The check on what is written: the native output, at the model's working size."""
        with torch.no_grad():
            latents = self.generator.encode_images(self.inputs.mapping.forward(resize_image(image, self.inputs.small.shape)))
        return self.score(latents)


def edit(display: np.ndarray, masks: AnatomyMasks, spec: EditSpec, generator: Generator,
         vectors: SteeringVectors | None = None, view: ViewPosition = ViewPosition.PA,
         progress: bool = True, check: bool = True) -> Counterfactual:
    """Edit ``display`` (``(rows, cols)`` in [0, 1], bright = dense) as ``spec`` asks.

    With ``check`` the model's own evidence is read from the input first and from each
    pass's output; while the target is not reached and ``spec.passes`` allows, the next
    pass is stronger and deeper (:func:`pass_spec`). The pass kept is the first that
    reaches the target, else the one closest to it; ``Counterfactual.check`` says which
    and whether it got there. Without ``check`` (the benchmark's one-pass rows) one pass
    runs and nothing is claimed."""
    from medcf.editing.defaults import settle

    settled = settle(spec, generator, vectors)  # auto may name another denoiser (and its vectors)
    spec, generator, vectors = settled.spec, settled.generator, settled.vectors
    inputs = prepare(display, masks, spec, generator, view)
    result = _checked_edit(inputs, spec, generator, vectors, progress) if check \
        else _edit_pass(inputs, spec, generator, vectors, progress)
    result.settings["settings_from"] = settled.chosen_by
    result.settings.update(settled.provenance())
    return result


def _checked_edit(inputs: EditInputs, spec: EditSpec, generator: Generator, vectors: SteeringVectors | None,
                  progress: bool) -> Counterfactual:
    """Passes until the model's own check finds the target (at most ``spec.passes``); the
    pass kept carries the check (:func:`edit`)."""
    checker = EvidenceChecker(inputs, spec, generator)
    input_score = checker.score(inputs.z0)
    sign = 1.0 if spec.action is Action.ADD else -1.0
    best, best_score, best_index = None, None, 0
    passes = spec.passes if checker.reliable else 1
    for index in range(passes):
        result = _edit_pass(inputs, pass_spec(spec, index), generator, vectors, progress)
        score = checker.score_image(result.image)
        if best is None or sign * score.value > sign * best_score.value:
            best, best_score, best_index = result, score, index
        if target_reached(spec.action, input_score, score):
            break
    used = pass_spec(spec, best_index)
    best.check = TargetCheck(spec.action, input_score, best_score, checker.reliable, index + 1, used.strength,
                             used.depth)
    best.settings["check"] = best.check.to_dict()
    best.seconds = time.perf_counter() - inputs.started
    return best
