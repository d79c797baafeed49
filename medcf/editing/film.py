"""The film's way into the model and back (docs/methods.md §4), shared by every edit method:
:func:`prepare` validates the input, builds the edit region, resizes and maps the film
into the model's intensities and encodes it; :func:`finish` decodes an edited latent and
transfers only the difference, weighted by the region, onto the native-resolution input.

Why a module of its own: the methods (:mod:`medcf.editing.methods`) and the editor core
(:mod:`medcf.editing.edit`) both stand on it, so it sits below both.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from medcf.anatomy.masks import AnatomyMasks
from medcf.devices import precision_hint
from medcf.editing.regions import EditRegion, resize_image
from medcf.editing.spec import SIDELESS, EditSpec
from medcf.errors import InputError, MedCFError, OutputError
from medcf.io.display import DisplayTransform
from medcf.models.base import Generator
from medcf.models.convention import Intensity, IntensityMap
from medcf.text.prompts import prompt
from medcf.vocab import Action, ViewPosition

if TYPE_CHECKING:  # type hints only: the check and the plan are made above this module
    from medcf.editing.edit import TargetCheck
    from medcf.editing.plan import DenoiserFacts, EditPlan


@dataclass(frozen=True)
class FilmFacts:
    """What the reader knows of a film beyond its display values: how they were derived
    (VOI window, polarity) and the pixel spacing. A method that works in the film's own
    attenuation domain (``insert``) needs both to undo the display curve and to match the
    film's sharpness; a film the model generated has neither (the defaults)."""

    transform: DisplayTransform | None = None
    pixel_mm: float | None = None

    @classmethod
    def of(cls, transform: DisplayTransform | None, spacing_mm: tuple[float, float] | None) -> "FilmFacts":
        """From a read film's display transform and (row, column) spacing, when stated."""
        return cls(transform, float(min(spacing_mm)) if spacing_mm else None)


@dataclass
class Counterfactual:
    """The edited radiograph at native size (display values in [0, 1]) and how it was made:
    ``spec`` as the kept pass ran it, ``settings`` what the sampler did (start step,
    prompts used, timesteps ...), ``plan`` how the request was resolved before the edit
    (None for a benchmark baseline, which has no plan), ``check`` the model's own verdict
    and ``denoiser`` the alternative denoiser it ran with (None: the model's own)."""

    image: np.ndarray
    source: np.ndarray
    spec: EditSpec
    region: EditRegion
    prompts: dict[str, str]
    working: dict[str, np.ndarray]
    settings: dict = field(default_factory=dict)
    seconds: float = 0.0
    check: TargetCheck | None = None  # the model's own verdict, when the edit was checked
    plan: EditPlan | None = None
    denoiser: DenoiserFacts | None = None  # the alternative denoiser the plan named, once loaded
    outline: np.ndarray | None = None  # a film method's lesion outline at native size, drawn on the panel

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
