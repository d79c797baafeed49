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

Composition: the film-domain mapping and composition of :mod:`medcf.insertion.film_domain`
(``estimate_mapping`` / ``compose``) replace :func:`_estimate_mapping_local` and
:func:`_compose_local` when that module lands (SWAP below); until then a minimal local
linear mapping from line integral to display value is fitted on the film around the lesion.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from medcf.anatomy.masks import AnatomyMasks
from medcf.editing.methods.base import FilmPass, Need, register
from medcf.editing.spec import DEFAULT_ZONES, GENERIC_DEPTH, SIDELESS, EditSpec, Method
from medcf.editing.steering import SteeringVectors
from medcf.insertion.bank import LesionBank
from medcf.insertion.placed import PlacedLesion
from medcf.insertion.placement import LesionRequest, place_lesion
from medcf.models.base import Generator
from medcf.vocab import FINDING_ZONES, Organ, Side, ViewPosition

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
                  centre: tuple[float, float] | None = None, bank: LesionBank | None = None) -> Inserted:
    """Place the bank's lesion for ``spec`` on ``display`` and add it. ``centre``: the oracle
    placement hook (the lesion's centroid at this film pixel, row and column), for an
    evaluation that measures the lesion apart from its placement."""
    display = np.asarray(display, dtype=np.float32)
    placed = place_lesion(bank or lesion_bank(), lesion_request(spec), masks, centre)
    # SWAP: medcf.insertion.film_domain.estimate_mapping(display, masks, placed.background, transform)
    # and medcf.insertion.film_domain.compose(display, placed, mapping, spec.seed) replace these two
    mapping = _estimate_mapping_local(display, masks, placed.background, placed.extent)
    image = _compose_local(display, placed, mapping, spec.seed)
    return Inserted(image, placed, mapping)


def _window(extent: np.ndarray, grow: float = 0.5) -> tuple[slice, slice]:
    """The extent's bounding box widened by ``grow`` of its size on each side, within the film."""
    rows, cols = np.nonzero(extent)
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    dr, dc = int(grow * (r1 - r0)) + 8, int(grow * (c1 - c0)) + 8
    return (slice(max(0, r0 - dr), min(extent.shape[0], r1 + dr)),
            slice(max(0, c0 - dc), min(extent.shape[1], c1 + dc)))


LOGIT_CLIP = 1e-3  # display values are kept this far from 0 and 1 before the logit


def _to_logit(display: np.ndarray) -> np.ndarray:
    """The display value through the inverse of a sigmoid display curve, ``atanh(2 d − 1)``:
    where a CR-type reader's curve flattens (the dense mediastinum, the lucent lungs) a
    density change moves the display value less, as on the film."""
    return np.arctanh(np.clip(2.0 * display - 1.0, 2 * LOGIT_CLIP - 1, 1 - 2 * LOGIT_CLIP))


def _from_logit(value: np.ndarray) -> np.ndarray:
    return (0.5 + 0.5 * np.tanh(value)).astype(np.float32)


def _estimate_mapping_local(display: np.ndarray, masks: AnatomyMasks, background: np.ndarray,
                            extent: np.ndarray) -> dict:
    """Minimal local mapping from line integral to display value: ``atanh(2 d − 1) ≈
    intercept + slope × line integral`` (water mm; a sigmoid display curve, linear inside it),
    fitted by least squares on the film's lungs and heart around the lesion (the whole
    chest when too few pixels lie there). A slope that is not positive (the registration's
    background does not follow the film) falls back to the contrast of the heart against
    the lungs. The fit's residual (in logit units) is recorded."""
    body = masks.lung(Side.BILATERAL) | masks.organs[Organ.HEART]
    window = _window(extent)
    chosen = body[window]
    x, y = background[window][chosen], display[window][chosen]
    where = "lungs and heart around the lesion"
    if x.size < 500:
        x, y, where = background[body], display[body], "lungs and heart of the whole film"
    step = max(1, x.size // 20000)
    x, y = x[::step].astype(np.float64), _to_logit(y[::step].astype(np.float64))
    slope, intercept = np.polyfit(x, y, 1) if x.size >= 2 and np.ptp(x) > 0 else (0.0, float(np.mean(y)))
    how = "least squares"
    if slope <= 1e-5:
        heart, lungs = masks.organs[Organ.HEART], masks.lung(Side.BILATERAL) & ~masks.organs[Organ.HEART]
        span = float(np.median(background[heart]) - np.median(background[lungs])) if heart.any() and lungs.any() else 0
        logit = _to_logit(display)
        slope = float(np.median(logit[heart]) - np.median(logit[lungs])) / span if span > 0 else 0.0
        intercept, how = float(np.median(logit[lungs]) - slope * np.median(background[lungs])), "heart vs lungs"
        if slope <= 1e-5:
            slope, how = 4.0 / max(float(np.ptp(background)), 1.0), "nominal: the film's range over the world's"
    residual = float(np.sqrt(np.mean((y - (intercept + slope * x)) ** 2))) if x.size else float("nan")
    return {"kind": "local: atanh(2 x display - 1) = intercept + slope x line integral (water-equivalent mm)",
            "implementation": "medcf.editing.methods.insert._estimate_mapping_local (minimal; the film-domain "
                              "mapping replaces it)",
            "slope_per_mm": round(float(slope), 7), "intercept": round(float(intercept), 5),
            "fit": how, "fitted_on": where, "pixels": int(x.size), "residual_rms": round(residual, 5)}


def _compose_local(display: np.ndarray, lesion: PlacedLesion, mapping: dict, seed: int) -> np.ndarray:
    """Add the lesion through the local mapping inside its extent only: in the logit domain,
    take away the film's own lung texture (its detail above a low-pass) in the replaced
    share, add the channel times the slope, map back. Outside the extent the output is the
    input, bit for bit. ``seed`` is unused: nothing here is random (the film-domain
    composition matches the film's noise with it)."""
    from scipy.ndimage import gaussian_filter

    out = display.copy()
    rows, cols = np.nonzero(lesion.extent)
    pad = 16
    box = (slice(max(0, rows.min() - pad), min(display.shape[0], rows.max() + 1 + pad)),
           slice(max(0, cols.min() - pad), min(display.shape[1], cols.max() + 1 + pad)))
    part = display[box].astype(np.float32)
    logit = _to_logit(part)
    sigma = max(2.0, 0.008 * max(display.shape))  # lung markings: finer than about 1 % of the film
    texture = logit - gaussian_filter(logit, sigma, mode="nearest")
    edited = logit - lesion.replaced[box] * texture + np.float32(mapping["slope_per_mm"]) * lesion.channel[box]
    out[box] = np.where(lesion.extent[box], _from_logit(edited), part)
    return out.astype(np.float32)


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

    def edit_film(self, display: np.ndarray, masks: AnatomyMasks, spec: EditSpec, view: ViewPosition) -> FilmPass:
        done = insert_lesion(display, masks, spec)
        settings = {"insert": done.lesion.record, "mapping": done.mapping, "harmonised": False,
                    "harmonize_depth": spec.harmonize, "view": view.value, "model_check": MODEL_CHECK}
        return FilmPass(done.image, settings, done.lesion.extent, lesion_outline(done.lesion))


register(Insert())
