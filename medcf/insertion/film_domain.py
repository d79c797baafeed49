"""The film's own attenuation domain: where a projected lesion is added to a real film.

A film's display value is not density. The detector's log signal is (nearly) linear in the
line integral along the ray; the vendor's VOI (a linear window that clips, or a sigmoid)
and the polarity bend it into display values. Adding a line-integral channel to display
values would give a nodule behind the heart the contrast of one in the lung. So:

1. **Undo the VOI** where the display says how it was made (:class:`DisplayTransform`):
   a linear window (clipped pixels noted and left out of the fit) or a DICOM sigmoid is
   inverted back to modality values. Where it is unknown (a VOI LUT Sequence, a PNG, a
   render), a one-parameter family of tone curves from the identity to the logistic is fitted
   to the film itself (:func:`tone_inverse`). Inside a stated linear window the same family
   is fitted too: a film for presentation keeps its processing's S-curve in its stored
   values, and where the anchors cannot tell the tones apart the compressive one is kept
   (:func:`_choose`), so that a dense lesion is not carried on linearly and clipped to white.
2. **Fit the film's mapping** ``u = intercept + slope * P`` between that pre-VOI value
   ``u`` and the log signal ``P`` of the world's lesion-free line integral ``L`` (water mm)
   warped onto the film, on anchor regions the film's masks name (aerated lung, heart,
   mediastinum, the abdomen below the diaphragm). ``P`` is ``L`` itself when the detector
   sees only the primary; with scatter (a ratio fitted from a short list) it flattens where
   the scatter from the lungs around outweighs the primary, behind the heart and at the
   bases, so a lesion there shows less, as on a real film. Quantiles are paired within each
   anchor, not pixels, so a registration that is right about regions but not about single
   pixels still gives the right relation. A fit whose slope has the wrong sign (denser would
   be darker: an inverted film), that has no spread or that explains little is refused in
   one line; the fit's residual is recorded.
3. **Compose** (:func:`compose`): add the channel (blurred to the film's sharpness) to each
   pixel's own line integral, read back from its value, in that domain, and map back. Where the finding replaces aerated lung, the
   film's own texture (its high-pass detail at the scale of lung markings) is taken away in
   proportion to the share, and film-matched noise (the film's noise level and correlation,
   measured on its flat regions) is put back, so the region is neither smoother nor noisier
   than the film around it. Outside the lesion's extent the output is the input, bit for bit.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage
from scipy.optimize import brentq

from medcf.anatomy.masks import AnatomyMasks
from medcf.errors import InputError
from medcf.insertion.placed import PlacedLesion
from medcf.io.display import DisplayTransform
from medcf.vocab import Organ, StrEnum

# A chest film spans a 43 cm cassette (or detector) along its longer side; used for the pixel
# size only when the film states none.
FILM_SIDE_MM = 430.0
# Gaussian sigma of a CR/DX detector's point-spread: 0.25-0.5 mm in the literature and in the
# world's drawn exposures; the channel is blurred to at least this.
DETECTOR_BLUR_MM = 0.35
# Lung markings (vessels, bronchial walls) are 1-6 mm wide; detail finer than a Gaussian of
# this sigma is the "texture" a replacing finding removes.
TEXTURE_SIGMA_MM = 3.0
ANCHOR_QUANTILES = (0.35, 0.5, 0.65)  # inner quantiles: a registration error contaminates the tails first
ANCHOR_EROSION = 0.05  # share of the lungs' height the anchors are eroded by
MIN_ANCHOR_PIXELS = 50
MIN_SPREAD_MM = 5.0  # the anchors' median line integrals must differ by this much
MIN_R2 = 0.3
# Tones tried where the VOI is unknown: 0 is the identity (a linear window), 1 the logistic.
TONES = (0.0, 0.3, 0.5, 0.7, 0.8, 0.85, 0.9, 0.93, 0.96, 0.98, 0.99, 1.0)
# Water's linear attenuation (1/mm) at a chest beam's effective energy (50-56 keV, NIST XCOM):
# it turns water mm into the primary's transmission, against which scatter is weighed.
MU_WATER_PER_MM = 0.0215
# Scatter-to-primary ratios (scatter as a share of the broadly blurred primary) tried in the
# fit: 0 (the log signal is linear in the line integral) to 1 (a chest without a grid);
# behind a grid 0.25-0.7 (scatter fractions 0.2-0.4).
SCATTERS = (0.0, 0.15, 0.3, 0.45, 0.6, 0.8, 1.0)
SCATTER_SIGMA_MM = 40.0  # scatter is the primary blurred by a Gaussian this wide
EPS = 1e-4
FIT_SIDE = 768  # the mapping is fitted on a copy at most this many pixels a side
NOISE_SIDE = 1024  # the noise is measured on the film's central square of this side


class VoiInverse(StrEnum):
    """How the film's display values were taken back to the pre-VOI domain."""

    LINEAR = "linear"  # a stated linear window (or the full range): modality units
    SIGMOID = "sigmoid"  # a stated DICOM sigmoid: modality units
    ESTIMATED = "estimated"  # unknown VOI: a tone curve fitted on the film, arbitrary units


class Anchor(StrEnum):
    """Regions of the film whose density the world's anatomy predicts."""

    LUNG = "lung"
    HEART = "heart"
    MEDIASTINUM = "mediastinum"
    BELOW_DIAPHRAGM = "below_diaphragm"


@dataclass(frozen=True)
class AttenuationMapping:
    """The film's mapping from water-equivalent line integral (mm) to display value, and the
    film's noise and sharpness, all estimated from the film itself.

    ``u = intercept + slope * P`` in the pre-VOI domain, with ``P`` the log signal (in water
    mm) of a detector that sees the primary ``exp(-mu L)`` plus scatter, ``scatter`` times
    the primary blurred over ``SCATTER_SIGMA_MM`` (:meth:`log_signal`): ``P = L`` without
    scatter, and ``P`` flattens where the scatter from the lungs around outweighs the
    primary (behind the heart, at the bases), where a lesion shows less. Display = VOI(u)
    (inverted if ``inverted``). ``residual`` is the RMS, in display units, of the anchors' quantiles about
    the fit; ``r2`` its share of explained variance.
    """

    inverse: VoiInverse
    slope: float
    intercept: float
    residual: float
    r2: float
    anchors: tuple[str, ...]
    tone: float = 0.0  # ESTIMATED and LINEAR: 0 identity ... 1 logistic (LINEAR: inside the stated window)
    scatter: float = 0.0  # scatter-to-primary ratio (0: u is linear in L)
    center: float | None = None  # stated window, modality units
    width: float | None = None
    linear_exact: bool = False
    inverted: bool = False
    clipped_share: float = 0.0  # anchor pixels at 0 or 1 (clipped by the window; not fitted)
    pixel_mm: float = 0.0
    pixel_mm_stated: bool = False
    noise_std: float = 0.0  # pre-VOI units, white-equivalent std of the film's noise
    noise_sigma_px: float = 0.0  # Gaussian sigma of the noise's spatial correlation
    sharpness_px: float = 0.0  # Gaussian sigma the channel is blurred by
    texture_sigma_px: float = 0.0  # the lung markings' scale; detail against twice this is removed
    notes: tuple[str, ...] = ()

    # --- the domain ------------------------------------------------------------------

    def _window(self) -> tuple[float, float]:
        """(lo, span) of a linear window in modality units."""
        assert self.center is not None and self.width is not None
        if self.linear_exact:
            return self.center - self.width / 2.0, self.width
        return (self.center - 0.5) - (self.width - 1.0) / 2.0, max(self.width - 1.0, 1e-6)

    def from_display(self, display: np.ndarray) -> np.ndarray:
        """Display values -> pre-VOI values (float64)."""
        d = np.asarray(display, dtype=np.float64)
        if self.inverted:
            d = 1.0 - d
        if self.inverse is VoiInverse.LINEAR:
            lo, span = self._window()
            return lo + span * tone_inverse(d, self.tone)
        if self.inverse is VoiInverse.SIGMOID:
            assert self.center is not None and self.width is not None
            return self.center + self.width / 4.0 * _logit(d)
        return tone_inverse(d, self.tone)

    def to_display(self, values: np.ndarray) -> np.ndarray:
        """Pre-VOI values -> display values in [0, 1] (float64)."""
        u = np.asarray(values, dtype=np.float64)
        if self.inverse is VoiInverse.LINEAR:
            lo, span = self._window()
            d = tone_forward((u - lo) / span, self.tone)
        elif self.inverse is VoiInverse.SIGMOID:
            assert self.center is not None and self.width is not None
            d = _expit(4.0 * (u - self.center) / self.width)
        else:
            d = tone_forward(u, self.tone)
        d = np.clip(d, 0.0, 1.0)
        return 1.0 - d if self.inverted else d

    def scatter_of(self, line: np.ndarray, box: tuple[slice, slice] | None = None) -> np.ndarray:
        """Scatter reaching each pixel (of ``box`` if given) of a whole film whose line
        integrals are ``line``."""
        line = np.asarray(line, dtype=np.float64)
        if self.scatter <= 0:
            return np.zeros_like(line if box is None else line[box])
        primary = np.exp(-MU_WATER_PER_MM * line)
        return self.scatter * wide_blur(primary, SCATTER_SIGMA_MM / self.pixel_mm, box=box)

    def log_signal(self, line: np.ndarray, scatter: np.ndarray | None = None) -> np.ndarray:
        """``P``: water mm -> the detector's log signal in water mm (normalised so that it
        equals ``L`` in the open beam). ``line`` is a whole film unless ``scatter`` is given."""
        line = np.asarray(line, dtype=np.float64)
        if self.scatter <= 0:
            return line
        if scatter is None:
            scatter = self.scatter_of(line)
        return -np.log((np.exp(-MU_WATER_PER_MM * line) + scatter) / (1.0 + self.scatter)) / MU_WATER_PER_MM

    def value_of(self, line: np.ndarray, scatter: np.ndarray | None = None) -> np.ndarray:
        """Pre-VOI value the fit predicts for line integrals ``line`` (water mm)."""
        return self.intercept + self.slope * self.log_signal(line, scatter)

    def add(self, values: np.ndarray, channel: np.ndarray, scatter: np.ndarray) -> np.ndarray:
        """Pre-VOI ``values`` with ``channel`` (water mm) added, where ``scatter`` is the
        scatter the registered background predicts; the channel's own change of the scatter
        is counted (an effusion removes primary, and so scatter, around it)."""
        if self.scatter <= 0:
            return values + self.slope * channel
        # The primary under each pixel is read from the film's own value; the registered
        # background gives only the smooth scatter.
        total = np.exp(-MU_WATER_PER_MM * (values - self.intercept) / self.slope) * (1.0 + self.scatter)
        primary = np.maximum(total - scatter, 0.05 * total)
        line = -np.log(primary) / MU_WATER_PER_MM
        change = np.exp(-MU_WATER_PER_MM * (line + channel)) - primary
        # Scatter is never negative: where the registered background predicts less scatter than
        # the film's own primary says the lesion removes (a poor fit), the sum would go below
        # zero and its log be undefined (NaN pixels, seen on a held-out world render).
        after = np.maximum(scatter + self.scatter * wide_blur(change, SCATTER_SIGMA_MM / self.pixel_mm, mode="constant"),
                           0.0)
        return values + self.slope * (self.log_signal(line + channel, after) - self.log_signal(line, scatter))

    def to_record(self) -> dict:
        """What ``edit.json`` keeps (plain JSON types)."""
        record = asdict(self)
        record["inverse"] = self.inverse.value
        record["anchors"] = list(self.anchors)
        record["notes"] = list(self.notes)
        return {key: (round(value, 6) if isinstance(value, float) else value) for key, value in record.items()}


def wide_blur(image: np.ndarray, sigma_px: float, mode: str = "nearest",
              box: tuple[slice, slice] | None = None) -> np.ndarray:
    """Gaussian blur wide enough that it is done on a copy shrunk to ~sigma/4 pixels and
    read back bilinearly (a 40 mm scatter kernel on a 0.15 mm film is 270 px); only in
    ``box`` if given (the region composition works on)."""
    image = np.asarray(image, dtype=np.float64)
    factor = max(1, int(sigma_px // 4))
    if factor == 1:
        blurred = ndimage.gaussian_filter(image, sigma_px, mode=mode)
        return blurred if box is None else blurred[box]
    rows, cols = image.shape
    pad = ((0, -rows % factor), (0, -cols % factor))
    padded = np.pad(image, pad, mode="constant" if mode == "constant" else "edge")
    small = padded.reshape(padded.shape[0] // factor, factor, padded.shape[1] // factor, factor).mean(axis=(1, 3))
    small = ndimage.gaussian_filter(small, sigma_px / factor, mode=mode)
    box = box or (slice(0, rows), slice(0, cols))
    # Pixel i's centre lies at (i + 0.5) / factor - 0.5 in the shrunk copy's pixels.
    r = (np.arange(box[0].start or 0, box[0].stop) + 0.5) / factor - 0.5
    c = (np.arange(box[1].start or 0, box[1].stop) + 0.5) / factor - 0.5
    grid = np.meshgrid(r, c, indexing="ij")
    return ndimage.map_coordinates(small, grid, order=1, mode="nearest")


# --- tone curves -----------------------------------------------------------------------


def _logit(d: np.ndarray) -> np.ndarray:
    d = np.clip(d, EPS, 1.0 - EPS)
    return np.log(d) - np.log1p(-d)


def _expit(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def tone_inverse(d: np.ndarray, tone: float) -> np.ndarray:
    """Undo a tone curve of strength ``tone`` (0 identity, 1 the logistic).

    The family is ``d = 0.5 + (expit(z) - 0.5) / tone`` (the logistic scaled so that it
    still spans [0, 1] over a finite range, as a workstation's S-curve does), written with
    ``z`` rescaled by ``tone`` so that it tends to the identity ``d`` as ``tone`` -> 0. One
    parameter, fitted on the film, is all that anchor regions can pin down.
    """
    d = np.asarray(d, dtype=np.float64)
    if tone <= 0.0:
        return d
    s = np.clip(0.5 + (d - 0.5) * tone, EPS, 1.0 - EPS)
    return 0.5 + (np.log(s) - np.log1p(-s)) / (4.0 * tone)


def tone_forward(u: np.ndarray, tone: float) -> np.ndarray:
    """Inverse of :func:`tone_inverse`."""
    u = np.asarray(u, dtype=np.float64)
    if tone <= 0.0:
        return u
    return 0.5 + (_expit(4.0 * tone * (u - 0.5)) - 0.5) / tone


# --- the display transform -------------------------------------------------------------

_WINDOW = re.compile(r"Window Center/Width (\S+)/(\S+) \((\w+)\)")
_FULL_RANGE = re.compile(r"full range of modality values (\S+)\.\.(\S+) ")


def _stated_voi(transform: DisplayTransform | None) -> tuple[VoiInverse, float | None, float | None, bool, str]:
    """(inverse, center, width, linear_exact, note) from how the display was derived."""
    if transform is None:
        return VoiInverse.ESTIMATED, None, None, False, "VOI not stated: tone curve fitted on the film"
    window = _WINDOW.match(transform.voi)
    if window:
        center, width, function = float(window.group(1)), float(window.group(2)), window.group(3).upper()
        if function == "SIGMOID":
            return VoiInverse.SIGMOID, center, width, False, f"VOI {transform.voi} inverted"
        return VoiInverse.LINEAR, center, width, function == "LINEAR_EXACT", f"VOI {transform.voi} inverted"
    full = _FULL_RANGE.match(transform.voi)
    if full:
        lo, hi = float(full.group(1)), float(full.group(2))
        # The full range is a LINEAR_EXACT window from lo to hi.
        return VoiInverse.LINEAR, (lo + hi) / 2.0, max(hi - lo, 1e-6), True, f"VOI {transform.voi} inverted"
    return (VoiInverse.ESTIMATED, None, None, False,
            f"VOI {transform.voi} is not invertible from its description: tone curve fitted on the film")


# --- anchors ---------------------------------------------------------------------------


def anchor_regions(masks: AnatomyMasks) -> dict[Anchor, np.ndarray]:
    """The film's anchor regions, from its lung and heart masks alone.

    Aerated lung and heart are eroded (a registration error at their borders would pair lung
    with soft tissue); the mediastinum is the band between the lungs above the heart; below
    the diaphragm is the band under each lung's lowest row, as deep as a tenth of the lungs'
    height (liver and spleen: soft tissue).
    """
    right, left, heart = (masks.organs[o] for o in (Organ.LUNG_RIGHT, Organ.LUNG_LEFT, Organ.HEART))
    lungs = right | left
    rows_any = np.flatnonzero(lungs.any(axis=1))
    if rows_any.size == 0:
        return {}
    top, bottom = int(rows_any[0]), int(rows_any[-1])
    height = bottom - top + 1
    erode = max(1, int(round(ANCHOR_EROSION * height)))
    regions = {
        Anchor.LUNG: ndimage.binary_erosion(lungs & ~heart, iterations=erode),
        Anchor.HEART: ndimage.binary_erosion(heart, iterations=erode),
    }
    shape = lungs.shape
    mediastinum = np.zeros(shape, bool)
    heart_rows = np.flatnonzero(heart.any(axis=1))
    if right.any() and left.any():
        c_right, c_left = (float(np.nonzero(m)[1].mean()) for m in (right, left))
        c0, c1 = int(round(min(c_right, c_left))), int(round(max(c_right, c_left)))
        r1 = int(heart_rows[0]) if heart_rows.size else top + height // 2
        mediastinum[top + height // 10:r1, c0:c1] = True
        mediastinum &= ~ndimage.binary_dilation(lungs | heart, iterations=erode)
    regions[Anchor.MEDIASTINUM] = mediastinum
    below = np.zeros(shape, bool)
    for lung in (right, left):
        cols = np.flatnonzero(lung.any(axis=0))
        if cols.size == 0:
            continue
        for c in cols[cols.size // 5: cols.size - cols.size // 5]:
            last = int(np.flatnonzero(lung[:, c])[-1])
            below[last + erode: last + erode + height // 10, c] = True
    below &= ~ndimage.binary_dilation(lungs | heart, iterations=erode)
    regions[Anchor.BELOW_DIAPHRAGM] = below
    return regions


def _shrink(image: np.ndarray, factor: int, reduce=np.mean) -> np.ndarray:
    """Blocks of ``factor`` x ``factor`` pixels reduced to one; the last rows and columns
    that fill no whole block are left out (fewer than ``factor``: nothing a fit needs)."""
    if factor == 1:
        return np.asarray(image, dtype=np.float64)
    rows, cols = (n - n % factor for n in image.shape)
    blocks = np.asarray(image[:rows, :cols], dtype=np.float32).reshape(rows // factor, factor, cols // factor, factor)
    return reduce(blocks, axis=(1, 3)).astype(np.float64)


def _huber_line(x: np.ndarray, y: np.ndarray, iterations: int = 20) -> tuple[float, float]:
    """Robust (Huber, IRLS) straight line y = a + b x: one anchor that registration put
    partly on the wrong tissue must not tilt the fit."""
    w = np.ones_like(x)
    a = b = 0.0
    for _ in range(iterations):
        design = np.stack([np.ones_like(x), x], axis=1) * np.sqrt(w)[:, None]
        (a, b), *_ = np.linalg.lstsq(design, y * np.sqrt(w), rcond=None)
        r = y - (a + b * x)
        scale = 1.4826 * np.median(np.abs(r - np.median(r))) + 1e-12
        k = 1.345 * scale
        previous, w = w, np.where(np.abs(r) <= k, 1.0, k / np.maximum(np.abs(r), 1e-12))
        if np.allclose(w, previous, atol=1e-6):
            break
    return float(a), float(b)


# --- noise and sharpness ---------------------------------------------------------------


def film_noise(values: np.ndarray, valid: np.ndarray) -> tuple[float, float]:
    """(std, correlation sigma in px) of the film's noise, from its flat regions.

    Neighbour differences at lags 1 and 2 of the detail left after a smooth fit, on the
    third of pixels where the smooth image is flattest: for noise with a Gaussian
    autocorrelation ``rho_k = q ** (k * k)``, ``D2 / D1 = 1 + q + q**2 + q**3`` gives q (and
    so the correlation sigma), and ``D1 = 2 std**2 (1 - q)`` the level. Variances are robust
    (MAD), so lung markings that survive the selection do not count as noise.
    """
    values = np.asarray(values, dtype=np.float64)
    detail = values - ndimage.gaussian_filter(values, 3.0)
    gradient = np.hypot(*np.gradient(ndimage.gaussian_filter(values, 2.0)))
    if valid.sum() < 100:
        return 0.0, 0.0
    flat = valid & (gradient <= np.percentile(gradient[valid], 33))

    def diff_var(lag: int) -> float:
        parts = []
        for axis in (0, 1):
            a = np.swapaxes(detail, 0, axis)
            m = np.swapaxes(flat, 0, axis)
            both = m[lag:] & m[:-lag]
            parts.append((a[lag:] - a[:-lag])[both])
        diffs = np.concatenate(parts)
        if diffs.size < 50:
            return 0.0
        return float((1.4826 * np.median(np.abs(diffs - np.median(diffs)))) ** 2)

    d1, d2 = diff_var(1), diff_var(2)
    if d1 <= 0:
        return 0.0, 0.0
    ratio = float(np.clip(d2 / d1, 1.0, 3.99))
    # 1 + q + q^2 + q^3 rises from 1 to 4 on [0, 1): one root.
    q = 0.0 if ratio <= 1.0 + 1e-9 else float(brentq(lambda x: 1 + x + x * x + x ** 3 - ratio, 0.0, 0.9999))
    std = float(np.sqrt(d1 / (2.0 * (1.0 - q))))
    sigma = float(np.sqrt(-1.0 / (4.0 * np.log(q)))) if q > 1e-6 else 0.0
    return std, sigma


def film_noise_field(shape: tuple[int, int], sigma_px: float, seed: int) -> np.ndarray:
    """Unit-std Gaussian noise with the film's spatial correlation (white noise blurred by
    ``sigma_px``), drawn from ``seed``."""
    field = np.random.default_rng(seed).standard_normal(shape)
    if sigma_px > 0.3:
        field = ndimage.gaussian_filter(field, sigma_px, mode="reflect")
    std = float(field.std())
    return field / std if std > 0 else field


# --- the two entry points --------------------------------------------------------------


def _choose(candidates: list[AttenuationMapping]) -> AttenuationMapping:
    """Among the curves within 2% of the best residual (a few anchors cannot tell a little
    scatter from a little tone, nor one tone from the next), the least scatter, then the
    strongest tone.

    The anchors pin the curve only between the lungs and the densest anchor; a dense lesion
    (an effusion over the abdomen) is added beyond them, where the tone alone decides. A film
    for presentation is processed with an S-curve that compresses toward white, so where the
    anchors cannot choose, the compressive curve is the film's; the identity would carry the
    lesion on linearly and clip it to white. Measured on world renders through the product
    path (``benchmarks/bench_insert_fidelity.py``, tuning seeds): the identity's ties left up
    to 9% of an effusion's extent saturated and a mean change up to 1.7x the truth's.
    """
    best = min(m.residual for m in candidates)
    return min((m for m in candidates if m.residual <= 1.02 * best + 1e-6), key=lambda m: (m.scatter, -m.tone))


def estimate_mapping(display: np.ndarray, masks: AnatomyMasks, background: np.ndarray,
                     transform: DisplayTransform | None, *, pixel_mm: float | None = None,
                     scatters: tuple[float, ...] = SCATTERS) -> AttenuationMapping:
    """The film's mapping from line integral (water mm) to display value, estimated from the
    film itself (module docstring). ``background`` is the world's lesion-free line integral
    warped onto the film; ``pixel_mm`` the film's pixel spacing where it states one;
    ``scatters`` the scatter-to-primary ratios tried (``(0.0,)``: a log signal linear in L)."""
    display = np.asarray(display, dtype=np.float32)
    background = np.asarray(background, dtype=np.float64)
    if display.shape != background.shape or display.shape != masks.shape:
        raise InputError(f"film {display.shape}, background {background.shape} and masks {masks.shape} "
                         "must share one shape")
    inverse, center, width, exact, note = _stated_voi(transform)
    inverted = bool(transform.inverted) if transform is not None and inverse is not VoiInverse.ESTIMATED else False
    notes = [note]
    stated = pixel_mm is not None and pixel_mm > 0
    pixel = float(pixel_mm) if stated else FILM_SIDE_MM / max(display.shape)
    if not stated:
        notes.append(f"no pixel spacing: assumed {FILM_SIDE_MM:g} mm across the film's longer side")
    # Regions' quantiles do not need 0.15 mm pixels: fit on a copy of at most FIT_SIDE pixels
    # a side (block means; a block with a clipped pixel counts as clipped).
    factor = max(1, int(np.ceil(max(display.shape) / FIT_SIDE)))
    film_full = display
    unclipped = _shrink((display > 0.0) & (display < 1.0), factor, np.min) > 0.5
    display, background = _shrink(display, factor), _shrink(background, factor)
    if factor > 1:
        masks = AnatomyMasks({organ: _shrink(mask, factor) > 0.5 for organ, mask in masks.organs.items()},
                             masks.segmenter)
    regions = anchor_regions(masks)
    used: dict[Anchor, np.ndarray] = {}
    clipped = total = 0
    for anchor, region in regions.items():
        region = region & np.isfinite(background)
        total += int(region.sum())
        clipped += int((region & ~unclipped).sum())
        region = region & unclipped
        if region.sum() >= MIN_ANCHOR_PIXELS:
            used[anchor] = region
        elif anchor in (Anchor.LUNG, Anchor.HEART):
            notes.append(f"anchor {anchor.value} has {int(region.sum())} usable pixels; left out")
    if len(used) < 2:
        raise InputError(f"cannot fit the film's attenuation mapping: {len(used)} anchor region(s) "
                         f"({', '.join(a.value for a in used) or 'none'}); the lungs and heart masks are needed")
    shown = np.concatenate([np.quantile(display[r].astype(np.float64), ANCHOR_QUANTILES) for r in used.values()])
    medians = [float(np.median(background[r])) for r in used.values()]
    if max(medians) - min(medians) < MIN_SPREAD_MM:
        raise InputError(f"cannot fit the film's attenuation mapping: the anchors' line integrals differ by "
                         f"{max(medians) - min(medians):.1f} water mm (< {MIN_SPREAD_MM:g}); the background is degenerate")

    signals: dict[float, np.ndarray] = {}

    def fit(mapping: AttenuationMapping) -> AttenuationMapping:
        u = mapping.from_display(shown)
        if mapping.scatter not in signals:
            whole = mapping.log_signal(background)
            signals[mapping.scatter] = np.concatenate([np.quantile(whole[r], ANCHOR_QUANTILES) for r in used.values()])
        signal = signals[mapping.scatter]
        a, b = _huber_line(signal, u)
        predicted = mapping.to_display(a + b * signal)
        residual = float(np.sqrt(np.mean((predicted - shown) ** 2)))
        r2 = 1.0 - float(np.sum((u - (a + b * signal)) ** 2) / max(np.sum((u - u.mean()) ** 2), 1e-18))
        return AttenuationMapping(**{**asdict(mapping), "intercept": a, "slope": b, "residual": residual, "r2": r2})

    base = AttenuationMapping(inverse=inverse, slope=0.0, intercept=0.0, residual=0.0, r2=0.0,
                              anchors=tuple(a.value for a in used), center=center, width=width,
                              linear_exact=exact, inverted=inverted, pixel_mm=pixel * factor,
                              pixel_mm_stated=stated)
    # A stated linear window says how the stored values were shown, not how they were made: a
    # film "for presentation" carries its vendor's processing (an S-curve that compresses
    # toward white and black) inside the stored values, so the tone is fitted inside the
    # window too. Without it a lesion over dense tissue is extrapolated linearly and clips
    # to white (the sample study's effusion over the abdomen). A DICOM sigmoid is already one.
    tones = (0.0,) if inverse is VoiInverse.SIGMOID else TONES
    candidates = [fit(AttenuationMapping(**{**asdict(base), "tone": tone, "scatter": scatter}))
                  for tone in tones for scatter in scatters]
    mapping = _choose(candidates)
    # Denser must be brighter on the display: the slope in display sense is positive.
    display_slope = -mapping.slope if inverted else mapping.slope
    if not np.isfinite(display_slope) or display_slope <= 0:
        raise InputError(f"the film gets darker where the body is denser (fitted slope {display_slope:.3g} per water mm): "
                         "an inverted film (MONOCHROME1 shown as MONOCHROME2?); fix its Photometric Interpretation")
    if mapping.r2 < MIN_R2:
        raise InputError(f"the film's attenuation mapping does not fit its anatomy (R^2 {mapping.r2:.2f} < {MIN_R2}); "
                         "check the film's masks")
    if clipped:
        notes.append(f"{clipped / max(total, 1):.1%} of anchor pixels clipped by the window; left out of the fit")
    # Noise lives at the film's own pixels: measured on its central NOISE_SIDE square.
    rows, cols = film_full.shape
    r0, c0 = max(0, (rows - NOISE_SIDE) // 2), max(0, (cols - NOISE_SIDE) // 2)
    centre = film_full[r0:r0 + NOISE_SIDE, c0:c0 + NOISE_SIDE]
    noise_std, noise_sigma = film_noise(mapping.from_display(centre), (centre > 0.02) & (centre < 0.98))
    sharpness = max(noise_sigma, DETECTOR_BLUR_MM / pixel)
    return AttenuationMapping(**{
        **asdict(mapping), "clipped_share": clipped / max(total, 1), "pixel_mm": pixel,
        "noise_std": noise_std, "noise_sigma_px": noise_sigma, "sharpness_px": sharpness,
        "texture_sigma_px": max(1.0, TEXTURE_SIGMA_MM / pixel), "notes": tuple(notes)})


def compose(display: np.ndarray, lesion: PlacedLesion, mapping: AttenuationMapping, seed: int) -> np.ndarray:
    """``display`` with ``lesion`` added in the film's attenuation domain (module docstring).

    Equal to ``display`` outside ``lesion.extent``; float32 in [0, 1]; the same for the same
    seed.
    """
    display = np.asarray(display, dtype=np.float32)
    if display.shape != lesion.channel.shape:
        raise InputError(f"film {display.shape} and placed lesion {lesion.channel.shape} differ in shape")
    out = display.copy()
    if not lesion.extent.any():
        return out
    # Work on the extent's bounding box plus the filters' reach: a 2800 x 2300 film is not
    # filtered whole for a 2 cm nodule.
    reach = int(np.ceil(4.0 * max(2.0 * mapping.texture_sigma_px, mapping.sharpness_px, mapping.noise_sigma_px, 1.0))) + 2
    rows, cols = np.nonzero(lesion.extent)
    r0, r1 = max(0, rows.min() - reach), min(display.shape[0], rows.max() + 1 + reach)
    c0, c1 = max(0, cols.min() - reach), min(display.shape[1], cols.max() + 1 + reach)
    box = (slice(r0, r1), slice(c0, c1))
    film = display[box]
    extent = lesion.extent[box]
    u = mapping.from_display(film)
    channel = np.asarray(lesion.channel[box], dtype=np.float64)
    if mapping.sharpness_px > 0.3:
        channel = ndimage.gaussian_filter(channel, mapping.sharpness_px, mode="nearest")
    share = np.clip(np.asarray(lesion.replaced[box], dtype=np.float64), 0.0, 1.0) * extent
    if share.any():
        # Detail against a background twice as smooth as the markings' scale: against a
        # background of the markings' own scale, the markings' broader half would stay.
        texture = u - wide_blur(u, 2.0 * mapping.texture_sigma_px, mode="reflect")
        # Removing share s of the detail leaves (1 - s) of the film's noise too; put back the
        # rest with the film's own level and correlation.
        kept = np.sqrt(np.clip(1.0 - (1.0 - share) ** 2, 0.0, 1.0))
        # The film's noise, measured on its flattest third. Not around the lesion: in a lung
        # neighbourhood the markings would pass for noise.
        noise = film_noise_field(u.shape, mapping.noise_sigma_px, seed)
        u = u - share * texture + kept * mapping.noise_std * noise
    background = np.asarray(lesion.background, dtype=np.float64)
    scatter = mapping.scatter_of(background, box)
    u = mapping.add(u, channel, scatter)
    composed = np.clip(mapping.to_display(u), 0.0, 1.0).astype(np.float32)
    region = out[box]
    region[extent] = composed[extent]
    return out
