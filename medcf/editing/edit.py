"""Edit a given radiograph (methods.md §4): encode → invert → re-sample under the
attention controller with the chosen methods and latent blending → transfer only the
difference, inside the feathered region, back to the native-resolution original.

Outside the edit region the output *is* the input (the transfer weight is exactly zero
there); the region is built from the segmented anatomy (:mod:`medcf.editing.regions`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from medcf.anatomy.masks import AnatomyMasks
from medcf.editing.control import AttentionController, ControlMethod
from medcf.editing.energy import ConcentrationEnergy
from medcf.editing.inversion import Trajectory, ddim_inversion, edit_friendly_inversion
from medcf.editing.regions import EditRegion, resize_image
from medcf.editing.regulation import PATHOLOGY_WORDS, AnatomyRegulation, PathologyEnhancement, word_tokens
from medcf.editing.spec import SIDELESS, EditSpec, Inversion
from medcf.editing.steering import Steering, SteeringVectors
from medcf.errors import InputError, MedCFError, OutputError
from medcf.models.base import Generator
from medcf.models.sampling import UNCOND, sample
from medcf.text.prompts import prompt
from medcf.vocab import Action, Severity, ViewPosition

SEVERITY_SCALE = {Severity.MILD: 0.6, Severity.MODERATE: 1.0, Severity.SEVERE: 1.5}
ALPHA = 2.0  # MedSteer's reference steering strength
GAMMA, GAMMA_OUT = 2.0, 1.0  # pathology enhancement inside / outside the target
ENERGY_STEP = 0.08  # normalised latent step of the concentration-energy correction


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

    @property
    def difference(self) -> np.ndarray:
        return self.image - self.source


def edit_prompts(spec: EditSpec, view: ViewPosition) -> dict[str, str]:
    """The factual and counterfactual prompts in the words the model learned."""
    side = None if spec.finding in SIDELESS else spec.side
    finding = prompt(view, spec.finding, side=side, zone=spec.zone, severity=spec.severity)
    normal = prompt(view)
    if spec.action is Action.ADD:
        return {"source": normal, "target": finding, "finding": finding}
    return {"source": finding, "target": normal, "finding": finding}


def check_image(image: np.ndarray, what: str, error: type[MedCFError] = OutputError) -> None:
    """Refuse NaN/inf, blank or saturated images (known failure modes of CXR editors)."""
    refuse = "; refusing to write it" if error is OutputError else "; nothing to edit"
    if not np.isfinite(image).all():
        raise error(f"{what} has NaN/inf pixels{refuse}")
    if float(image.std()) < 1e-3:
        raise error(f"{what} is blank (every pixel ≈ {float(image.mean()):.3f}){refuse}")
    if float((image >= 0.999).mean()) > 0.5 or float((image <= 0.001).mean()) > 0.9:
        raise error(f"{what} is saturated{refuse}")


def control_methods(generator: Generator, spec: EditSpec, region: EditRegion, prompts: dict[str, str],
             vectors: SteeringVectors | None) -> tuple[list[ControlMethod], str, str]:
    """The control methods of ``spec.method``, the prompt to sample with and the negative prompt."""
    scale = spec.strength * SEVERITY_SCALE[spec.severity]
    methods: list[ControlMethod] = []
    words = PATHOLOGY_WORDS[spec.finding]
    if spec.method.regulated:
        edit_prompt = prompts["target"]
        negative = "" if spec.action is Action.ADD else prompts["finding"]
        text = generator.encode_text([edit_prompt])
        methods.append(AnatomyRegulation(region, text))
        if spec.action is Action.ADD:
            tokens = word_tokens(text, words)
            methods.append(PathologyEnhancement(region, tokens, gamma=GAMMA * scale, gamma_out=GAMMA_OUT * scale))
            if spec.energy:
                methods.append(ConcentrationEnergy(generator, region, text, tokens, step_size=ENERGY_STEP))
        else:  # the finding lives in the negative prompt: make it attend to the region it must leave
            tokens = word_tokens(generator.encode_text([negative]), words)
            methods.append(PathologyEnhancement(region, tokens, gamma=GAMMA * scale, gamma_out=GAMMA_OUT * scale,
                                                branches=(UNCOND,)))
    else:
        edit_prompt, negative = prompts["source"], ""
    if spec.method.steered:
        if vectors is None:
            raise InputError(f"method {spec.method.value} needs steering vectors (none were given or shipped)")
        methods.append(Steering(vectors.for_finding(spec.finding), vectors.timesteps, spec.action,
                                alpha=ALPHA * scale, region=region))
    return methods, edit_prompt, negative


@dataclass
class EditInputs:
    """What every editing pipeline starts from: the input at native and working size, its
    latent, the region, the prompts and their encodings."""

    display: np.ndarray
    small: np.ndarray
    z0: torch.Tensor
    region: EditRegion
    prompts: dict[str, str]
    source_text: object
    uncond: object
    started: float

    @property
    def latent_hw(self) -> tuple[int, int]:
        return tuple(self.z0.shape[-2:])


def prepare(display: np.ndarray, masks: AnatomyMasks, spec: EditSpec, generator: Generator,
            view: ViewPosition = ViewPosition.PA) -> EditInputs:
    """Validate the input, build the region, resize to the model's size and encode (fp32)."""
    started = time.perf_counter()
    display = np.asarray(display, dtype=np.float32)
    if display.ndim != 2 or display.shape != tuple(masks.shape):
        raise InputError(f"image {display.shape} and anatomy masks {tuple(masks.shape)} differ in size")
    check_image(display, "the input image", InputError)
    working_size = tuple(generator.image_size)
    region = EditRegion.build(masks, spec, working_size)
    small = resize_image(display, working_size)
    prompts = edit_prompts(spec, view)
    with torch.no_grad():
        z0 = generator.encode_images(small)
        source_text = generator.encode_text([prompts["source"]])
        uncond = generator.unconditional(1)
    return EditInputs(display, small, z0, region, prompts, source_text, uncond, started)


def finish(inputs: EditInputs, spec: EditSpec, generator: Generator, latents: torch.Tensor, settings: dict,
           weight: np.ndarray | None = None) -> Counterfactual:
    """Decode, transfer ``decode(edited) − decode(z0)`` onto the native input with ``weight``
    (default: the region's feathered weight; baselines pass 1 everywhere), guard, record."""
    edited_small = generator.decode_images(latents)[0]
    reconstruction = generator.decode_images(inputs.z0)[0]
    check_image(edited_small, "the model's counterfactual")
    delta = resize_image(edited_small - reconstruction, inputs.display.shape)
    weight = inputs.region.native_weight if weight is None else weight
    image = np.clip(inputs.display + weight * delta, 0.0, 1.0).astype(np.float32)
    check_image(image, "the counterfactual")
    settings = {"working_size": list(generator.image_size), "guidance_scale": generator.guidance_scale,
                "region_fraction": round(float(inputs.region.native_region.mean()), 5), **settings}
    working = {"input": inputs.small, "reconstruction": reconstruction, "edited": edited_small,
               "target": inputs.region.target.numpy()}
    return Counterfactual(image, inputs.display, spec, inputs.region, inputs.prompts, working, settings,
                          time.perf_counter() - inputs.started)


def edit(display: np.ndarray, masks: AnatomyMasks, spec: EditSpec, generator: Generator,
         vectors: SteeringVectors | None = None, view: ViewPosition = ViewPosition.PA,
         progress: bool = True) -> Counterfactual:
    """Edit ``display`` (``(rows, cols)`` in [0, 1], bright = dense) as ``spec`` asks."""
    inputs = prepare(display, masks, spec, generator, view)
    guidance = generator.guidance_scale
    start = spec.steps - max(1, round(spec.depth * spec.steps))
    if spec.inversion is Inversion.DDPM:
        trajectory = edit_friendly_inversion(generator, inputs.z0, inputs.source_text, inputs.uncond, spec.steps,
                                             guidance, spec.seed, start)
    else:
        trajectory = ddim_inversion(generator, inputs.z0, inputs.source_text, inputs.uncond, spec.steps, guidance)
    methods, edit_prompt, negative = control_methods(generator, spec, inputs.region, inputs.prompts, vectors)
    methods.append(LatentBlend(trajectory, inputs.region.latent_mask(inputs.latent_hw)[None, None]))
    with AttentionController(generator, methods, steps=spec.steps, first_step=start,
                             latent_hw=inputs.latent_hw) as controller:
        result = sample(generator, [edit_prompt], seed=spec.seed, steps=spec.steps, guidance_scale=guidance,
                        negative_prompt=negative, latents=trajectory.latents[start], start_step=start,
                        noise_maps=trajectory.noise_maps, observer=controller, progress=progress, decode=False)
    energy = [m for m in methods if isinstance(m, ConcentrationEnergy)]
    return finish(inputs, spec, generator, result.latents, {
        "start_step": start, "edit_prompt": edit_prompt, "negative_prompt": negative,
        "inversion": spec.inversion.value, "methods": [type(m).__name__ for m in methods],
        "timesteps": result.settings["timesteps"],
        "energy": [[s, round(e, 4)] for s, e in energy[0].history] if energy else None})
