"""``--method insert``: the simulated world's lesion, placed on this film and added to it.

No diffusion model is involved: the lesion is the world's own (built in its chest CT and
projected, :mod:`medcf.insertion.bank`), registered onto the film's lungs and heart
(:mod:`medcf.insertion.placement`), and added in the film's attenuation domain. So it is a
:class:`~medcf.editing.methods.base.FilmEditMethod`: the core hands it the native display
and the masks, and it hands back the edited film, the lesion's extent (outside it the
output is the input) and the lesion's outline for the panel. It only adds: a removal is
refused when the spec is made (:class:`medcf.editing.spec.EditSpec`).

The model's own check does not run for it: the check reads the diffusion model's
evidence, which says nothing of a film the model has not drawn, and the model does not
know real films. ``edit.json`` says so (``settings.model_check``).

Composition: :mod:`medcf.insertion.film_domain` fits the film's own mapping from line
integral to display value (its VOI undone where stated) and adds the channel there, taking
away the film's own texture where the finding replaces lung and matching the film's noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from medcf.anatomy.masks import AnatomyMasks
from medcf.editing.film import FilmFacts
from medcf.editing.methods.base import FilmPass, Need, register
from medcf.editing.spec import DEFAULT_ZONES, GENERIC_DEPTH, SIDELESS, EditSpec, Method
from medcf.editing.steering import SteeringVectors
from medcf.insertion.bank import LesionBank
from medcf.insertion.film_domain import compose, estimate_mapping
from medcf.insertion.placed import PlacedLesion
from medcf.insertion.placement import LesionRequest, place_lesion
from medcf.models.base import Generator
from medcf.vocab import FINDING_ZONES, ViewPosition

OUTLINE_SHARE = 0.05  # the panel's outline: where the lesion's channel reaches this share of its peak
MODEL_CHECK = ("not run: insert draws nothing with the diffusion model, whose check reads only its own "
               "evidence; the lesion is the simulated world's")


@lru_cache(maxsize=2)
def lesion_bank(path: str | None = None) -> LesionBank:
    """The lesion bank (default: the package's), read once per process."""
    return LesionBank.load(path)


def lesion_request(spec: EditSpec) -> LesionRequest:
    """The bank's terms for ``spec``: no side for cardiomegaly; the zone asked, else where the
    finding starts (effusion and atelectasis low, pneumothorax high), else one of the
    finding's zones chosen by the seed (a nodule or a consolidation anywhere in the lung)."""
    finding = spec.finding
    side = None if finding in SIDELESS else spec.side
    zones = FINDING_ZONES[finding]
    zone = None
    if zones is not None:
        zone = spec.zone or DEFAULT_ZONES.get(finding) or zones[spec.seed % len(zones)]
    elif spec.zone is not None:
        zone = spec.zone  # the bank refuses it in one line, naming what it holds
    return LesionRequest(finding, side, zone, spec.severity, spec.seed)


@dataclass(frozen=True)
class Inserted:
    """One insertion: the edited film, the placed lesion and the mapping it was added with."""

    image: np.ndarray
    lesion: PlacedLesion
    mapping: dict


def insert_lesion(display: np.ndarray, masks: AnatomyMasks, spec: EditSpec,
                  centre: tuple[float, float] | None = None, bank: LesionBank | None = None,
                  facts: FilmFacts = FilmFacts()) -> Inserted:
    """Place the bank's lesion for ``spec`` on ``display`` and add it. ``centre``: the oracle
    placement hook (the lesion's centroid at this film pixel, row and column), for an
    evaluation that measures the lesion apart from its placement."""
    display = np.asarray(display, dtype=np.float32)
    placed = place_lesion(bank or lesion_bank(), lesion_request(spec), masks, centre)
    mapping = estimate_mapping(display, masks, placed.background, facts.transform, pixel_mm=facts.pixel_mm)
    image = compose(display, placed, mapping, spec.seed)
    return Inserted(image, placed, mapping.to_record())


def lesion_outline(lesion: PlacedLesion) -> np.ndarray:
    """Where the lesion's own density is (|channel| above :data:`OUTLINE_SHARE` of its peak):
    the panel draws this outline."""
    magnitude = np.abs(lesion.channel)
    peak = float(magnitude.max())
    return magnitude > OUTLINE_SHARE * peak if peak > 0 else lesion.extent


@dataclass(frozen=True)
class Insert:
    """``insert`` as a film method (:class:`~medcf.editing.methods.base.FilmEditMethod`)."""

    name: str = Method.INSERT.value
    default_depth: float = GENERIC_DEPTH  # unused: insertion re-samples nothing (harmonisation would)
    needs: frozenset[Need] = frozenset()

    def require(self, generator: Generator, vectors: SteeringVectors | None) -> None:
        return None

    def edit_film(self, display: np.ndarray, masks: AnatomyMasks, spec: EditSpec, view: ViewPosition,
                  facts: FilmFacts = FilmFacts()) -> FilmPass:
        done = insert_lesion(display, masks, spec, facts=facts)
        settings = {"insert": done.lesion.record, "mapping": done.mapping, "harmonised": False,
                    "harmonize_depth": spec.harmonize, "view": view.value, "model_check": MODEL_CHECK}
        return FilmPass(done.image, settings, done.lesion.extent, lesion_outline(done.lesion))


register(Insert())
