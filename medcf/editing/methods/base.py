"""The edit-method protocol and its registry.

A method is a plugin: it is handed the prepared film (:class:`medcf.editing.film.EditInputs`),
the spec of one pass, the generator and the steering vectors, and returns the edited latent
(:class:`MethodPass`) that the editor core decodes and transfers. What differs between
methods — what they need (steering vectors, a factor model), their depth when none is
asked, the proposal they start from, what they contribute to the attention controller —
lives in the method object, never in the core: :mod:`medcf.editing.edit` looks a method
up here by name and asks it.

Every method registers itself under its name when its module is imported
(:func:`register`); :mod:`medcf.editing.methods` imports the built-in ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from medcf.editing.film import EditInputs
from medcf.editing.spec import EditSpec
from medcf.editing.steering import SteeringVectors
from medcf.errors import InputError
from medcf.models.base import Generator


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


_REGISTRY: dict[str, EditMethod] = {}


def register(method: EditMethod) -> EditMethod:
    """Make ``method`` available under ``method.name`` (a second method of the same name is refused)."""
    if not isinstance(method, EditMethod):
        raise TypeError(f"{method!r} does not implement EditMethod")
    if method.name in _REGISTRY:
        raise ValueError(f"an edit method named {method.name!r} is registered already")
    _REGISTRY[method.name] = method
    return method


def unregister(name: str) -> None:
    """Remove the method registered under ``name`` (a plugin unloaded, a test's own method)."""
    _REGISTRY.pop(name, None)


def get_method(name: str) -> EditMethod:
    """The method registered under ``name`` (a :class:`medcf.editing.spec.Method` is a str too)."""
    method = _REGISTRY.get(str(name))
    if method is None:
        raise InputError(f"unknown edit method {str(name)!r}; known: {', '.join(method_names())}")
    return method


def uses_model(name: str) -> bool:
    """Whether the method registered under ``name`` runs the diffusion model on the film."""
    return bool(getattr(get_method(name), "uses_model", True))


def method_names() -> tuple[str, ...]:
    """Every registered method's name, in registration order."""
    return tuple(_REGISTRY)
