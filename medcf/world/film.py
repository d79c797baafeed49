"""The world toward real films: what a real CR/DX chest film carries that a render lacks.

A render of the simulated world is a clean projection of one body. A film from a clinic
has been through the detector vendor's processing (multi-scale contrast enhancement,
unsharp masking, dynamic-range compression, a VOI LUT), may show the anti-scatter grid's
lines and the collimator's edges, and shows lungs of another person's shape. Each of these
is a function here on a display image (rows, cols) in [0, 1], MONOCHROME2 sense (bright =
dense), and a seeded MONAI ``MapTransform`` on ``{"image": (1, h, w), "label": (c, h, w)}``
so that any trainer (the segmenter today; the judge and the generator later) can draw
them. The ranges drawn from are configuration, :class:`FilmLook`, recorded with each run.

Library code is used where a library has the operation: unsharp masking is scikit-image's,
the lung-shape registration is SimpleITK's B-spline registration framework (the product's
one mechanism, :mod:`medcf.anatomy.registration`, which lesion insertion uses too), the warp is
MONAI's ``Warp`` (``grid_sample`` on a dense displacement field). Written here, each with
its reason in its docstring: the Laplacian-pyramid enhancement (no Python library
implements MUSICA-type processing), the DICOM VOI LUT functions (two formulas of PS3.3
C.11.2.1.2), grid lines (one sinusoid), collimation (zeroing a border).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from monai import transforms as T

from medcf.anatomy.real_shapes import (FRAME, FRAME_MARGIN, MASK_SIDE, in_frame,  # noqa: F401
                                       installed_lung_shapes, lung_frame, real_lung_masks, thoracic_silhouette,
                                       two_lungs)
# The lung frame and the real outlines are read by the product too (the plausibility check's
# shape model) and so is the shape registration (insert's placement): both live in
# medcf.anatomy, re-exported here.
from medcf.anatomy.registration import register_shape
from medcf.errors import InputError
from medcf.io.atomic import write_new_file
from medcf.metrics import dice
from medcf.vocab import StrEnum

IMAGE, LABEL = "image", "label"


class VoiFunction(StrEnum):
    """VOI LUT Function (0028,1056) as DICOM defines it (PS3.3 C.11.2.1.3)."""

    LINEAR = "LINEAR"
    SIGMOID = "SIGMOID"


class CollimationFill(StrEnum):
    """What lies outside the collimated field on the display: the unexposed detector
    (white on MONOCHROME2: no dose reached it) or a vendor's electronic shutter (black)."""

    UNEXPOSED = "unexposed"
    SHUTTER = "shutter"


class GridOrientation(StrEnum):
    """Direction of the anti-scatter grid's lamellae on the image: lines run along rows
    (a horizontal pattern) or along columns (vertical lines, the usual for a wall bucky)."""

    ROWS = "rows"
    COLUMNS = "columns"


# --- pure functions on a display image -------------------------------------------------


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian low-pass of ``image`` (float32, reflected borders). Beyond 2 px the blur is
    computed on a copy shrunk by area averaging so that sigma is 2 px there, then enlarged
    bilinearly: a low-pass image is smooth, so the difference is small, and this runs on
    every training sample, where SciPy's full-size blur at sigma 16–26 px costs ten times
    more."""
    import torch.nn.functional as F
    from scipy.ndimage import gaussian_filter

    image = np.asarray(image, dtype=np.float32)
    if sigma <= 2.0:
        return gaussian_filter(image, sigma=sigma, mode="reflect", truncate=3.0)
    rows, cols = image.shape
    factor = sigma / 2.0
    small_shape = (max(4, int(round(rows / factor))), max(4, int(round(cols / factor))))
    small = F.adaptive_avg_pool2d(torch.from_numpy(image)[None, None], small_shape)[0, 0].numpy()
    small = gaussian_filter(small, sigma=sigma * small_shape[0] / rows, mode="reflect", truncate=3.0)
    return F.interpolate(torch.from_numpy(small)[None, None], size=(rows, cols), mode="bilinear",
                         align_corners=False)[0, 0].numpy()


def multiscale_contrast(image: np.ndarray, gains: tuple[float, ...], power: float) -> np.ndarray:
    """Multi-scale contrast enhancement of the MUSICA kind (Agfa; Vuylsteke & Schoeters 1994).

    The image is split into band-pass layers of a Gaussian pyramid kept at full size
    (differences of Gaussian blurs with sigma 1, 2, 4, ... px; the layers sum back to the
    image exactly), each layer is amplified by ``gains[k]`` (finest first) after a
    compressive power law ``sign(b) * M * (|b| / M) ** power`` (``power`` < 1 lifts faint
    detail more than strong edges, the point of such processing), and the layers are
    summed again (blurs by :func:`blur`). Written here because no maintained library offers it; scikit-image's
    ``pyramid_laplacian`` downsamples and has no reconstruction.
    """
    image = np.asarray(image, dtype=np.float32)
    previous, out = image, np.zeros_like(image)
    for k, gain in enumerate(gains):
        blurred = blur(image, 2.0 ** k)
        band = previous - blurred
        scale = float(np.abs(band).max())
        if scale > 0:
            band = np.sign(band) * scale * (np.abs(band) / scale) ** power
        out += gain * band
        previous = blurred
    return (out + previous).astype(np.float32)


def unsharp(image: np.ndarray, radius: float, amount: float) -> np.ndarray:
    """Unsharp masking (edge enhancement every CR/DX reader applies), scikit-image's."""
    from skimage.filters import unsharp_mask

    return unsharp_mask(np.asarray(image, dtype=np.float64), radius=radius, amount=amount,
                        preserve_range=True).astype(np.float32)


def compress_range(image: np.ndarray, sigma: float, strength: float) -> np.ndarray:
    """Dynamic-range compression (equalisation): subtract ``strength`` times the very
    low-pass image (Gaussian, ``sigma`` px) about its mean, so the dense mediastinum and
    the lucent lungs both fit the display window. One line of arithmetic on a SciPy blur;
    no library names this operation."""
    image = np.asarray(image, dtype=np.float32)
    low = blur(image, sigma)
    return image - np.float32(strength) * (low - low.mean())


def voi_lut(image: np.ndarray, function: VoiFunction, center: float, width: float) -> np.ndarray:
    """The DICOM VOI LUT functions (PS3.3 C.11.2.1.2.1 LINEAR, C.11.2.1.3.1 SIGMOID) with
    window centre and width in the image's own units, output in [0, 1]. Written from the
    standard's formulas (two lines); pydicom's ``apply_voi_lut`` wants a dataset. Both are
    monotone non-decreasing in the input, as a display LUT must be."""
    x = np.asarray(image, dtype=np.float64)
    if width <= 0:
        raise InputError(f"VOI window width must be positive, not {width}")
    if function is VoiFunction.SIGMOID:
        out = 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    else:
        # The standard's LINEAR, (x - (c - 0.5)) / (w - 1) + 0.5, is written for integer
        # stored values; on a continuous [0, 1] scale its half-pixel terms vanish.
        out = np.clip((x - center) / width + 0.5, 0.0, 1.0)
    return out.astype(np.float32)


VOI_PERCENTILES = (1.0, 99.0)  # the film's own range a VOI window is drawn relative to


def relative_window(image: np.ndarray, center: float, width: float) -> tuple[float, float]:
    """Window centre and width in the image's own units from ``center`` and ``width`` given
    as fractions of the film's 1st-99th percentile range (centre 0.5, width 1: the window
    spans that range). Why: a reader's window is set on the film in front of it (the
    vendor's VOI or the modality's auto-window looks at the histogram); a window drawn in
    absolute display units can clip a dark film's lungs and part of its mediastinum to
    the same black, which no real reader does (15 of 80 real-like films were then
    refused even with the world's exact masks)."""
    low, high = (float(v) for v in np.percentile(np.asarray(image, np.float32), VOI_PERCENTILES))
    span = max(high - low, 1e-3)
    return low + center * span, width * span


def grid_lines(image: np.ndarray, frequency: float, amplitude: float, orientation: GridOrientation,
               phase: float = 0.0) -> np.ndarray:
    """Add the anti-scatter grid's line pattern: ``amplitude * cos(2 pi frequency x + phase)``
    along the axis across the lamellae, ``frequency`` in cycles per pixel (a 40–80 line/cm
    grid sampled at 0.1–0.2 mm and shrunk to the network's size aliases to any frequency
    below Nyquist). A single sinusoid; there is nothing for a library to do."""
    image = np.asarray(image, dtype=np.float32)
    rows, cols = image.shape
    across = cols if orientation is GridOrientation.COLUMNS else rows
    wave = amplitude * np.cos(2 * np.pi * frequency * np.arange(across) + phase).astype(np.float32)
    return image + (wave[None, :] if orientation is GridOrientation.COLUMNS else wave[:, None])


def collimate(image: np.ndarray, label: np.ndarray | None, margins: tuple[float, float, float, float],
              fill: float) -> tuple[np.ndarray, np.ndarray | None]:
    """Blank the film outside the collimated field: ``margins`` (top, bottom, left, right)
    as fractions of the image's height and width are set to ``fill``, and every label
    channel is zeroed there (no anatomy can be seen where no dose arrived, so the target
    must not ask for it). Slicing; written here because it is one."""
    image = np.array(image, dtype=np.float32, copy=True)
    rows, cols = image.shape[-2:]
    top, bottom = int(round(margins[0] * rows)), int(round(margins[1] * rows))
    left, right = int(round(margins[2] * cols)), int(round(margins[3] * cols))
    field = np.zeros((rows, cols), dtype=bool)
    field[top:rows - bottom, left:cols - right] = True
    image[..., ~field] = fill
    if label is not None:
        label = np.array(label, copy=True)
        label[..., ~field] = 0
    return image, label


# --- lung shapes: registration toward real outlines -----------------------------------


def taper(size: int = FRAME, margin: float = FRAME_MARGIN) -> np.ndarray:
    """(size, size) weights: 1 over the lungs' box inside the frame, falling to 0 at the
    frame's edge (raised cosine), so a field placed on a film leaves everything outside
    the frame where it was and has no seam."""
    axis = (np.arange(size) + 0.5) / size
    edge = margin / (1 + 2 * margin)
    ramp = np.clip(np.minimum(axis, 1 - axis) / edge, 0, 1)
    ramp = 0.5 - 0.5 * np.cos(np.pi * ramp)
    return np.outer(ramp, ramp).astype(np.float32)


def place_field(field: np.ndarray, lungs: np.ndarray, strength: float) -> np.ndarray:
    """The frame field ``field`` (2, FRAME, FRAME; displacements in frame pixels), tapered,
    scaled by ``strength`` and laid over the film whose lungs are ``lungs`` (rows, cols):
    a (2, rows, cols) displacement field in film pixels, zero outside the lungs' frame and
    falling to zero at the image's edge (:func:`edge_taper`), integrated so that it never
    folds the film."""
    import torch.nn.functional as F
    from monai.networks.blocks import DVF2DDF

    size = field.shape[-1]
    rows, cols = lungs.shape
    top, left, height, width = lung_frame(lungs)
    weighted = torch.as_tensor(field * taper(size)[None] * strength)
    weighted = torch.stack([weighted[0] * height / size, weighted[1] * width / size])
    h, w = max(1, int(round(height))), max(1, int(round(width)))
    resized = F.interpolate(weighted[None], size=(h, w), mode="bilinear", align_corners=False)[0].numpy()
    out = np.zeros((2, rows, cols), dtype=np.float32)
    t, l = int(round(top)), int(round(left))
    r0, r1, c0, c1 = max(0, t), min(rows, t + h), max(0, l), min(cols, l + w)
    if r1 > r0 and c1 > c0:
        out[:, r0:r1, c0:c1] = resized[:, r0 - t:r1 - t, c0 - l:c1 - l]
    # Taken as a velocity and integrated (MONAI's DVF2DDF, scaling and squaring): the
    # registered fields, cut to zero over the frame's margin, fold the film onto itself
    # just below the domes (the map's Jacobian fell to -1.5; the swirls of the first
    # figure); the integrated field keeps every Jacobian positive (0.27 at least on 120
    # placements of the check renders) and nearly the same size (27 -> 26 px), and, zero at
    # the image's edge, never carries a point across it.
    velocity = torch.as_tensor(out * edge_taper(rows, cols)[None])
    return DVF2DDF(num_steps=7, mode="bilinear", padding_mode="zeros")(velocity[None])[0].numpy()


EDGE_TAPER = 0.1  # of the image's side: the band over which a placed field falls to zero at the edge


def edge_taper(rows: int, cols: int, share: float = EDGE_TAPER) -> np.ndarray:
    """(rows, cols) weights: 0 on the image's outermost pixels, rising (raised cosine) to 1
    at ``share`` of the side inward. Why: where the lungs' frame runs past the image (lungs
    close to the edge, a tight collimation) the field was cut there, not tapered, and
    ``Warp`` sampling beyond the border repeated the border row: streaks below the domes.
    A field that vanishes at the edge samples inside the image there and leaves no seam."""
    def ramp(n: int) -> np.ndarray:
        distance = np.minimum(np.arange(n), np.arange(n)[::-1]).astype(np.float32)
        band = max(1.0, share * n)
        return (0.5 - 0.5 * np.cos(np.pi * np.clip(distance / band, 0.0, 1.0))).astype(np.float32)
    return np.outer(ramp(rows), ramp(cols))


def warp(image: torch.Tensor, label: torch.Tensor | None, displacement: np.ndarray
         ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Image and label resampled through one displacement field (MONAI ``Warp``,
    bilinear; the image's border is extended, the label's outside is empty)."""
    from monai.networks.blocks import Warp

    ddf = torch.as_tensor(displacement, dtype=torch.float32)[None]
    image = torch.as_tensor(image, dtype=torch.float32)
    warped = Warp(mode="bilinear", padding_mode="border")(image[None], ddf)[0]
    if label is None:
        return warped, None
    label = torch.as_tensor(label, dtype=torch.float32)
    warped_label = Warp(mode="bilinear", padding_mode="zeros")(label[None], ddf)[0]
    return warped, warped_label


@dataclass
class ShapeBank:
    """Displacement fields, each carrying the world's mean lung outline onto one real
    outline, in the lung frame (n, 2, FRAME, FRAME), with how far each moves the outline
    (Dice of the world's outline with the real one before and after)."""

    fields: np.ndarray
    dice_before: np.ndarray
    dice_after: np.ndarray

    def __len__(self) -> int:
        return len(self.fields)

    def save(self, path: Path) -> Path:
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.savez_compressed(handle, fields=self.fields, dice_before=self.dice_before,
                                    dice_after=self.dice_after)
        return write_new_file(path, write)

    @classmethod
    def load(cls, path: Path) -> "ShapeBank":
        with np.load(path) as data:
            return cls(data["fields"], data["dice_before"], data["dice_after"])


def build_shape_bank(world_lungs: list[np.ndarray], real: list[np.ndarray], count: int, seed: int) -> ShapeBank:
    """Register the world's mean lung outline (the mean of ``world_lungs`` in their frame,
    thresholded at one half) to ``count`` real outlines drawn from ``real`` by ``seed``
    (frame masks, :func:`real_lung_masks`)."""
    if not real:
        raise InputError("no two-lung masks to take real lung shapes from")
    mean = np.mean([in_frame(m) for m in world_lungs], axis=0) > 0.5
    moving = thoracic_silhouette(mean)
    chosen = np.random.default_rng(seed).choice(len(real), size=min(count, len(real)), replace=False)
    fields, before, after = [], [], []
    for index in chosen:
        target = thoracic_silhouette(real[int(index)])
        field = register_shape(moving, target)
        moved, _ = warp(torch.as_tensor(moving, dtype=torch.float32)[None], None, field)
        fields.append(field)
        before.append(dice(moving, target))
        after.append(dice(moved[0].numpy() > 0.5, target))
    return ShapeBank(np.stack(fields), np.array(before), np.array(after))


def cached_shape_bank(world_lungs: list[np.ndarray], source: Path, count: int, seed: int, folder: Path) -> ShapeBank:
    """:func:`build_shape_bank` from the masks in ``source``, cached in ``folder`` under a
    name fixed by its inputs (so a resumed run warps with the same fields)."""
    digest = hashlib.sha256()
    digest.update(Path(source).read_bytes())
    for mask in world_lungs:
        digest.update(np.packbits(mask.astype(bool)).tobytes())
    digest.update(f"{count}-{seed}-{FRAME}-{FRAME_MARGIN}".encode())
    path = Path(folder) / f"lung-shapes-{digest.hexdigest()[:16]}.npz"
    if path.exists():
        return ShapeBank.load(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    bank = build_shape_bank(world_lungs, real_lung_masks(source), count, seed)
    bank.save(path)
    return bank


# --- configuration and MONAI transforms ------------------------------------------------


@dataclass(frozen=True)
class FilmLook:
    """The ranges each realism step is drawn from, and how often it happens. Defaults are
    typical of CR/DX chest films: MUSICA-type gains 1–2.5 on the fine bands, unsharp
    masking 1–4 px at amount 0.3–1.5, equalisation of a third to two thirds, window widths
    relative to the film's own 1st–99th percentile range
    that clip a little or not at all, grid lines of 0.5–3 % of the display range, collimation of up to
    12 % of a side, lung outlines moved 30–100 % of the way to a real one."""

    multiscale_prob: float = 0.4
    multiscale_gain: tuple[float, float] = (1.0, 2.5)
    multiscale_power: tuple[float, float] = (0.6, 1.0)
    multiscale_levels: int = 5
    unsharp_prob: float = 0.4
    unsharp_radius: tuple[float, float] = (1.0, 4.0)
    unsharp_amount: tuple[float, float] = (0.3, 1.5)
    compression_prob: float = 0.3
    compression_sigma: float = 0.1  # of the image's side
    compression_strength: tuple[float, float] = (0.3, 0.7)
    voi_prob: float = 0.4
    voi_center: tuple[float, float] = (0.4, 0.6)  # of the film's 1st-99th percentile range
    voi_width: tuple[float, float] = (0.7, 1.4)  # of that range: clips up to 15 % at each end, or none
    grid_prob: float = 0.2
    grid_frequency: tuple[float, float] = (0.05, 0.45)  # cycles per pixel at the training size
    grid_amplitude: tuple[float, float] = (0.005, 0.03)
    collimation_prob: float = 0.3
    collimation_margin: tuple[float, float] = (0.0, 0.12)
    lung_shape_prob: float = 0.5
    lung_shape_strength: tuple[float, float] = (0.3, 1.0)

    def record(self) -> dict:
        return asdict(self)


def _image(data: dict) -> np.ndarray:
    return np.asarray(torch.as_tensor(data[IMAGE])[0], dtype=np.float32)


def _with_image(data: dict, image: np.ndarray) -> dict:
    return {**data, IMAGE: torch.as_tensor(np.clip(image, 0.0, 1.0), dtype=torch.float32)[None]}


class _FilmLookTransform(T.RandomizableTransform, T.MapTransform):
    """What the film-look transforms share: a MONAI random map transform on ``KEYS`` whose
    probability defaults to ``look``'s (:meth:`default_prob`) and whose change is
    :meth:`apply`, drawn from ``self.R`` so that a seeded ``Compose`` reproduces it."""

    KEYS: tuple[str, ...] = (IMAGE,)

    def __init__(self, look: FilmLook = FilmLook(), prob: float | None = None):
        T.RandomizableTransform.__init__(self, self.default_prob(look) if prob is None else prob)
        T.MapTransform.__init__(self, self.KEYS)
        self.look = look

    @staticmethod
    def default_prob(look: FilmLook) -> float:
        return 1.0

    def apply(self, data: dict) -> dict:
        raise NotImplementedError

    def __call__(self, data: dict) -> dict:
        self.randomize(None)
        return self.apply(data) if self._do_transform else data


class RandFilmProcessingd(_FilmLookTransform):
    """With probability ``prob`` (default 1), a vendor's processing chain on ``image``: each
    of multi-scale contrast, unsharp masking, range compression and a VOI LUT happens with
    its own probability in ``look``, in the order a reader applies them."""

    def apply(self, data: dict) -> dict:
        look, R = self.look, self.R
        image = _image(data)
        if R.rand() < look.multiscale_prob:
            gains = tuple(float(g) for g in R.uniform(*look.multiscale_gain, size=look.multiscale_levels))
            image = multiscale_contrast(image, gains, float(R.uniform(*look.multiscale_power)))
        if R.rand() < look.unsharp_prob:
            image = unsharp(image, float(R.uniform(*look.unsharp_radius)), float(R.uniform(*look.unsharp_amount)))
        if R.rand() < look.compression_prob:
            image = compress_range(image, look.compression_sigma * max(image.shape),
                                   float(R.uniform(*look.compression_strength)))
        if R.rand() < look.voi_prob:
            function = list(VoiFunction)[int(R.randint(len(VoiFunction)))]
            center, width = relative_window(image, float(R.uniform(*look.voi_center)),
                                            float(R.uniform(*look.voi_width)))
            image = voi_lut(image, function, center, width)
        return _with_image(data, image)


class RandGridLinesd(_FilmLookTransform):
    """With probability ``prob``, anti-scatter grid lines (:func:`grid_lines`) on ``image``."""

    @staticmethod
    def default_prob(look: FilmLook) -> float:
        return look.grid_prob

    def apply(self, data: dict) -> dict:
        R = self.R
        orientation = list(GridOrientation)[int(R.randint(len(GridOrientation)))]
        image = grid_lines(_image(data), float(R.uniform(*self.look.grid_frequency)),
                           float(R.uniform(*self.look.grid_amplitude)), orientation, float(R.uniform(0, 2 * np.pi)))
        return _with_image(data, image)


class RandCollimationd(_FilmLookTransform):
    """With probability ``prob``, collimation (:func:`collimate`) on ``image`` and ``label``."""

    KEYS = (IMAGE, LABEL)

    @staticmethod
    def default_prob(look: FilmLook) -> float:
        return look.collimation_prob

    def apply(self, data: dict) -> dict:
        R = self.R
        margins = tuple(float(m) for m in R.uniform(*self.look.collimation_margin, size=4))
        fill = 1.0 if list(CollimationFill)[int(R.randint(len(CollimationFill)))] is CollimationFill.UNEXPOSED else 0.0
        image, label = collimate(_image(data), np.asarray(torch.as_tensor(data[LABEL])), margins, fill)
        return {**_with_image(data, image), LABEL: torch.as_tensor(label)}


class RandLungShaped(_FilmLookTransform):
    """With probability ``prob``, image and label warped by one field of ``bank`` (lung
    outline toward a real one), scaled by a strength drawn from ``look``, placed on the
    lungs of the sample's own label (channels ``lung_channels``)."""

    KEYS = (IMAGE, LABEL)

    def __init__(self, bank: ShapeBank, lung_channels: tuple[int, ...], look: FilmLook = FilmLook(),
                 prob: float | None = None):
        super().__init__(look, prob)
        if len(bank) == 0:
            raise InputError("the lung-shape bank is empty")
        self.bank, self.lung_channels = bank, lung_channels

    @staticmethod
    def default_prob(look: FilmLook) -> float:
        return look.lung_shape_prob

    def apply(self, data: dict) -> dict:
        label = torch.as_tensor(data[LABEL])
        lungs = np.asarray(label[list(self.lung_channels)].amax(dim=0)) > 0.5
        index, strength = int(self.R.randint(len(self.bank))), float(self.R.uniform(*self.look.lung_shape_strength))
        if not lungs.any():
            return data
        image, label = warp(data[IMAGE], label, place_field(self.bank.fields[index], lungs, strength))
        return {**data, IMAGE: image, LABEL: label}
