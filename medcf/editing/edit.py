"""The editor core (docs/methods.md §4): plan the request, load what the plan names, prepare
the film, run the method's passes until the model's own check finds the target, and
transfer only the difference, inside the feathered region, back to the native-resolution
original.

The core never names a method: it looks the plan's method up in the registry
(:mod:`medcf.editing.methods`) and asks it for the edited latent of each pass; what
differs between methods lives in the method object. A method that edits the native film
itself (:class:`~medcf.editing.methods.base.FilmEditMethod`, e.g. ``insert``) is run on
the display and the masks directly (:func:`film_edit`): the core asks which protocol the
method implements, never its name. Outside the edit region the output
*is* the input (the transfer weight is exactly zero there); the region is built from the
segmented anatomy (:mod:`medcf.editing.regions`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from medcf.anatomy.masks import AnatomyMasks
from medcf.editing import evidence
from medcf.editing.evidence import EvidenceScore
from medcf.editing.film import (Counterfactual, EditInputs, FilmFacts, check_image, edit_prompts, finish,
                                prepare)
from medcf.editing.methods import EditMethod, FilmEditMethod, film_methods, get_method
from medcf.editing.plan import EditPlan, PlannedModel, load_planned, plan_edit
from medcf.editing.regions import EditRegion, resize_image
from medcf.editing.spec import EditSpec
from medcf.editing.steering import SteeringVectors
from medcf.errors import InputError
from medcf.models.base import Generator
from medcf.vocab import Action, StrEnum, ViewPosition


def edit_pass(inputs: EditInputs, spec: EditSpec, generator: Generator, vectors: SteeringVectors | None,
              progress: bool = False, method: EditMethod | None = None) -> Counterfactual:
    """One pass of ``method`` (default: the one ``spec.method`` names) on prepared ``inputs``
    with ``spec`` as it stands (settled: no ``auto``, a depth): the method's edited latent,
    decoded and transferred onto the input (:func:`medcf.editing.film.finish`). Public for
    the callers that prepare their own inputs: a pair re-sampled by a method that edits the
    factual film (:func:`medcf.editing.pairs.resample_pair`) and the benchmark's baselines."""
    method = method or get_method(spec.method)
    done = method.edit_latents(inputs, spec, generator, vectors, progress)
    return finish(inputs, spec, generator, done.latents, done.settings, done.weight)


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


class Verdict(StrEnum):
    """What the model's own check says of an edit."""

    REACHED = "reached"
    NOT_REACHED = "not reached"
    NOT_CHECKED = "not checked"  # the check cannot be trusted here: its scores are recorded, no verdict is given


@dataclass(frozen=True)
class TargetCheck:
    """What the model's own check (:mod:`medcf.editing.evidence`) says of the input and
    the output: > 0 means the finding prompt explains the film better than the normal one.
    ``reliable``: the check separates this finding on rendered tuning patients (AUC ≥
    MIN_RELIABLE_AUC); ``outside_domain``: the input lies outside the model's domain
    (:mod:`medcf.domain`). In either case the check's scores mean nothing about the film:
    they are recorded, they drive no further pass, and the verdict is "not checked", never
    "reached" (on a real film a check that could not read it said "reached" for an edit
    that went the wrong way)."""

    action: Action
    input_score: EvidenceScore
    output_score: EvidenceScore
    reliable: bool
    passes: int
    strength: float
    depth: float
    outside_domain: bool = False

    @property
    def input_in_target(self) -> bool:
        return in_target_state(self.action, self.input_score)

    @property
    def reached(self) -> bool:
        """The scores' own answer (:func:`target_reached`), whether or not it can be trusted."""
        return target_reached(self.action, self.input_score, self.output_score)

    @property
    def why_not_checked(self) -> str | None:
        """Why the check gives no verdict (None: it gives one)."""
        reasons = (["the input lies outside the model's domain"] if self.outside_domain else []) + \
            ([] if self.reliable else ["check unreliable for this finding"])
        return " and ".join(reasons) or None

    @property
    def verdict(self) -> Verdict:
        if self.why_not_checked is not None:
            return Verdict.NOT_CHECKED
        return Verdict.REACHED if self.reached else Verdict.NOT_REACHED

    def remark(self) -> str:
        """One honest line for the panel and the log."""
        settings = (f"after {self.passes} pass{'es' if self.passes > 1 else ''} (strength {self.strength:g}, "
                    f"depth {self.depth:g})")
        if self.verdict is Verdict.NOT_CHECKED:
            return f"model check: target not checked {settings}: {self.why_not_checked}"
        words = [f"model check: target {'reached' if self.reached else 'NOT reached'} {settings}"]
        if self.input_in_target:
            words.append("the input already shows it" if self.action is Action.ADD
                         else "the input is already without it")
        return "; ".join(words)

    def to_dict(self) -> dict:
        """The verdict for the record (the strength and depth of the pass are the spec's,
        recorded there). ``target_reached`` and ``input_in_target_state`` are None when not
        checked: a reader of the record never finds "reached" where the check cannot tell."""
        checked = self.verdict is not Verdict.NOT_CHECKED
        return {"verdict": self.verdict.value, "not_checked_because": self.why_not_checked,
                "input_score": round(self.input_score.value, 5), "input_stderr": round(self.input_score.stderr, 5),
                "output_score": round(self.output_score.value, 5), "output_stderr": round(self.output_score.stderr, 5),
                "input_in_target_state": self.input_in_target if checked else None,
                "target_reached": self.reached if checked else None,
                "reliable": self.reliable, "outside_domain": self.outside_domain, "passes": self.passes,
                "rule": "score = (e_normal - e_finding) / e_normal of the model's noise prediction in the edit "
                        "region, over 16 noise draws; add: reached when above 2 standard errors and above the "
                        "input's, remove: when not above 2 standard errors and below the input's; not checked "
                        "when the check is unreliable for the finding or the input lies outside the model's domain"}


class EvidenceChecker:
    """The evidence check of one edit: prompts encoded and region mask built once."""

    def __init__(self, inputs: EditInputs, spec: EditSpec, generator: Generator):
        self.generator = generator
        self.inputs = inputs
        prompts = inputs.prompts
        normal = prompts["source"] if spec.action is Action.ADD else prompts["target"]
        self.normal, self.finding = generator.encode_text([normal]), generator.encode_text([prompts["finding"]])
        self.mask = inputs.region.latent_mask(inputs.latent_hw)[None, None]
        reliability = evidence.find_reliability(generator)
        self.reliable = reliability is not None and reliability.reliable(spec.finding)

    def score(self, latents: torch.Tensor) -> EvidenceScore:
        return evidence.evidence_score(self.generator, latents, self.normal, self.finding, self.mask)

    def score_image(self, image: np.ndarray) -> EvidenceScore:
        """The check on what is written: the native output, at the model's working size."""
        with torch.no_grad():
            latents = self.generator.encode_images(self.inputs.mapping.forward(resize_image(image, self.inputs.small.shape)))
        return self.score(latents)


def edit(display: np.ndarray, masks: AnatomyMasks, spec: EditSpec, generator: Generator,
         vectors: SteeringVectors | None = None, view: ViewPosition = ViewPosition.PA,
         progress: bool = True, check: bool = True) -> Counterfactual:
    """Edit ``display`` (``(rows, cols)`` in [0, 1], bright = dense) as ``spec`` asks, with
    ``generator`` and its steering ``vectors``: :func:`medcf.editing.plan.plan_edit` settles
    ``auto`` and the unset options, :func:`medcf.editing.plan.load_planned` loads what the
    plan names (an alternative denoiser), :func:`run_plan` runs it. Callers that want the
    plan first (to show or log it) call the three themselves."""
    plan = plan_edit(spec, generator, has_vectors=vectors is not None)
    return run_plan(display, masks, plan, load_planned(plan, generator, vectors), view, progress, check)


def run_plan(display: np.ndarray, masks: AnatomyMasks, plan: EditPlan, model: PlannedModel,
             view: ViewPosition = ViewPosition.PA, progress: bool = True, check: bool = True,
             facts: FilmFacts = FilmFacts(), outside_domain: bool = False) -> Counterfactual:
    """Run ``plan`` on ``display`` with ``model`` (what :func:`medcf.editing.plan.load_planned`
    loaded for it). With ``check`` the model's own evidence is read from the input first and
    from each pass's output; while the target is not reached and ``plan.passes`` allows, the
    next pass is stronger and deeper (:func:`pass_spec`). The pass kept is the first that
    reaches the target, else the one closest to it; ``Counterfactual.check`` says which
    and whether it got there. Without ``check`` (the benchmark's one-pass rows) one pass
    runs and nothing is claimed. ``facts``: how the display was derived (a film method
    works in the film's own attenuation domain with them). ``outside_domain`` (the input
    lies outside the model's domain, :mod:`medcf.domain`): one pass, and the check says
    "not checked"."""
    method = get_method(plan.method)
    method.require(model.generator, model.vectors)  # a missing need fails before the film is encoded
    spec = plan.spec
    if isinstance(method, FilmEditMethod):
        result = film_edit(display, masks, spec, method, view, facts)
        result.plan, result.denoiser = plan, None
        return result
    if spec.harmonize > 0:
        raise InputError(f"--harmonize applies to --method {', '.join(film_methods())} only, not {method.name}")
    inputs = prepare(display, masks, spec, model.generator, view)
    result = checked_edit(inputs, spec, model.generator, model.vectors, progress, method, outside_domain) if check \
        else edit_pass(inputs, spec, model.generator, model.vectors, progress, method)
    result.plan, result.denoiser = plan, model.denoiser
    return result


FILM_REGION_SIZE = (256, 256)  # the anatomy grid of a film method's region record (no model grid to follow)


def film_edit(display: np.ndarray, masks: AnatomyMasks, spec: EditSpec, method: FilmEditMethod,
              view: ViewPosition = ViewPosition.PA, facts: FilmFacts = FilmFacts()) -> Counterfactual:
    """One edit by a method that edits the native film (:class:`FilmEditMethod`): the input
    checked as for every method, the method's film, its extent as the edit region (the
    output equals the input outside it, which is checked here), the output guarded. The
    model's own check does not run: it reads the diffusion model's evidence of its own
    samples (the method's ``settings`` say so)."""
    started = time.perf_counter()
    display = np.asarray(display, dtype=np.float32)
    if display.ndim != 2 or display.shape != tuple(masks.shape):
        raise InputError(f"image {display.shape} and anatomy masks {tuple(masks.shape)} differ in size")
    check_image(display, "the input image", InputError)
    done = method.edit_film(display, masks, spec, view, facts)
    check_image(done.image, "the counterfactual")
    if not np.array_equal(done.image[~done.extent], display[~done.extent]):
        raise RuntimeError(f"method {method.name} changed the film outside its extent")  # a bug, not an input
    region = EditRegion.of_extent(masks, done.extent, FILM_REGION_SIZE)
    return Counterfactual(done.image, display, spec, region, edit_prompts(spec, view), {}, done.settings,
                          time.perf_counter() - started, outline=done.outline)


def checked_edit(inputs: EditInputs, spec: EditSpec, generator: Generator, vectors: SteeringVectors | None,
                 progress: bool, method: EditMethod, outside_domain: bool = False) -> Counterfactual:
    """Passes until the model's own check finds the target (at most ``spec.passes``); the
    pass kept carries the check (:func:`run_plan`)."""
    checker = EvidenceChecker(inputs, spec, generator)
    input_score = checker.score(inputs.z0)
    sign = 1.0 if spec.action is Action.ADD else -1.0
    best, best_score, best_index = None, None, 0
    passes = spec.passes if checker.reliable and not outside_domain else 1
    for index in range(passes):
        result = edit_pass(inputs, pass_spec(spec, index), generator, vectors, progress, method)
        score = checker.score_image(result.image)
        if best is None or sign * score.value > sign * best_score.value:
            best, best_score, best_index = result, score, index
        if target_reached(spec.action, input_score, score):
            break
    used = pass_spec(spec, best_index)
    best.check = TargetCheck(spec.action, input_score, best_score, checker.reliable, index + 1, used.strength,
                             used.depth, outside_domain)
    best.seconds = time.perf_counter() - inputs.started
    return best
