"""The edit-method protocol and its registry.

A method is a plugin: it is handed the prepared film (:class:`medcf.editing.film.EditInputs`),
the spec of one pass, the generator and the steering vectors, and returns the edited latent
(:class:`MethodPass`) that the editor core decodes and transfers. What differs between
methods — what they need (steering vectors, a factor model), their depth when none is
asked, the proposal they start from, what they contribute to the attention controller —
lives in the method object, never in the core: :mod:`medcf.editing.edit` looks a method
up here by name and asks it.

A method that edits the native film itself, without the generator (``insert``: a
physically simulated finding added in the film's own attenuation domain), implements
:class:`FilmEditMethod` instead: the core asks which protocol a method implements (a
capability), never its name, and runs such a method on the display and the masks directly
(:func:`medcf.editing.edit.run_plan`).

Every method registers itself under its name when its module is imported
(:func:`register`); :mod:`medcf.editing.methods` imports the built-in ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from medcf.anatomy.masks import AnatomyMasks
from medcf.editing.film import EditInputs, FilmFacts
from medcf.editing.spec import EditSpec
from medcf.editing.steering import SteeringVectors
from medcf.errors import InputError
from medcf.models.base import Generator
from medcf.vocab import ViewPosition


class Need(Enum):
    """What a method needs beyond the model's weights, so that a missing one fails in one
    line before the film is encoded."""

    STEERING_VECTORS = "steering vectors"
    FACTOR_MODEL = "a factor model"


@dataclass(frozen=True)
class MethodPass:
    """One pass of a method: the edited latent, what the method did (recorded as the
    counterfactual's ``settings``), and the transfer weight at native size (None: the edit
    region's feathered weight, the editor's own; a baseline as published passes ones)."""

    latents: torch.Tensor
    settings: dict
    weight: np.ndarray | None = None


@runtime_checkable
class EditMethod(Protocol):
    """What the editor core asks of every method."""

    #: the name a spec, a plan and a record use
    name: str
    #: the share of the steps re-sampled when neither the user nor the model's measured choice sets it
    default_depth: float
    needs: frozenset[Need]
    # ``uses_model: bool`` (optional, read by :func:`uses_model`; True when absent, as for every
    # method MedCF shipped before it): whether the method runs the diffusion model on the film. One
    # that does not (a physically simulated finding inserted into the film) sets it False and is
    # not refused outside the model's domain (:mod:`medcf.domain`), since that domain does not
    # apply. Not a required member: a plugin written before it still registers.

    def require(self, generator: Generator, vectors: SteeringVectors | None) -> None:
        """Raise one :class:`InputError` line when something in :attr:`needs` is missing."""

    def edit_latents(self, inputs: EditInputs, spec: EditSpec, generator: Generator,
                     vectors: SteeringVectors | None, progress: bool) -> MethodPass:
        """One pass of the method on the prepared film."""


@dataclass(frozen=True)
class FilmPass:
    """What a film method made: the edited film at native size (display values in [0, 1]),
    what it did (recorded as the counterfactual's ``settings``), where the output may differ
    from the input (``extent``; outside it the output is the input) and the outline the
    panel draws (None: none)."""

    image: np.ndarray
    settings: dict
    extent: np.ndarray
    outline: np.ndarray | None = None


@runtime_checkable
class FilmEditMethod(Protocol):
    """What the editor core asks of a method that edits the native film directly (no
    latent, no generator): :meth:`edit_film` on the display and its anatomy masks."""

    name: str
    #: unused by a film method's own edit; stated so that a plan can settle a depth as for every method
    default_depth: float
    needs: frozenset[Need]

    def require(self, generator: Generator, vectors: SteeringVectors | None) -> None:
        """Raise one :class:`InputError` line when something in :attr:`needs` is missing."""

    def edit_film(self, display: np.ndarray, masks: AnatomyMasks, spec: EditSpec,
                  view: ViewPosition, facts: FilmFacts = FilmFacts()) -> FilmPass:
        """The edit of ``display`` (``(rows, cols)`` in [0, 1]) whose anatomy is ``masks``;
        ``facts``: what the reader knows of how the display was derived."""


AnyMethod = EditMethod | FilmEditMethod
_REGISTRY: dict[str, AnyMethod] = {}


def register(method: AnyMethod) -> AnyMethod:
    """Make ``method`` available under ``method.name`` (a second method of the same name is refused)."""
    if not isinstance(method, (EditMethod, FilmEditMethod)):
        raise TypeError(f"{method!r} implements neither EditMethod nor FilmEditMethod")
    if method.name in _REGISTRY:
        raise ValueError(f"an edit method named {method.name!r} is registered already")
    _REGISTRY[method.name] = method
    return method


def unregister(name: str) -> None:
    """Remove the method registered under ``name`` (a plugin unloaded, a test's own method)."""
    _REGISTRY.pop(name, None)


def get_method(name: str) -> AnyMethod:
    """The method registered under ``name`` (a :class:`medcf.editing.spec.Method` is a str too)."""
    method = _REGISTRY.get(str(name))
    if method is None:
        raise InputError(f"unknown edit method {str(name)!r}; known: {', '.join(method_names())}")
    return method


def film_methods() -> tuple[str, ...]:
    """The registered methods that edit the native film directly (:class:`FilmEditMethod`)."""
    return tuple(name for name, method in _REGISTRY.items() if isinstance(method, FilmEditMethod))


def uses_model(name: str) -> bool:
    """Whether the method registered under ``name`` runs the diffusion model on the film (a
    film method never does; a latent method may say ``uses_model = False``)."""
    method = get_method(name)
    return not isinstance(method, FilmEditMethod) and bool(getattr(method, "uses_model", True))


def method_names() -> tuple[str, ...]:
    """Every registered method's name, in registration order."""
    return tuple(_REGISTRY)
