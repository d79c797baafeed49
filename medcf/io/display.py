"""Stored pixel values -> what a radiologist sees, as float32 in [0, 1].

The DICOM grayscale pipeline is Modality LUT (Rescale or Modality LUT
Sequence) -> VOI LUT (VOI LUT Sequence, or Window Center/Width) -> polarity
(MONOCHROME1 / Presentation LUT Shape). Every later stage of MedCF (anatomy,
editing, metrics) works in this *display space* so that a MONOCHROME1 CR and a
MONOCHROME2 DX of the same chest look the same to the models.

pydicom applies the Modality LUT and VOI LUT Sequence. Windowing is done here:
pydicom's ``apply_windowing`` scales into a range that depends on Bits Stored and
Rescale, works in float64 and rewrites attributes of the dataset it is given;
we need [0, 1] in float32 for 3000x3000 images without touching the source.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi

from medcf.errors import InputError
from medcf.vocab import Photometric, SpacingSource


@dataclass(frozen=True)
class DisplayTransform:
    """How display pixels were derived, for ``inspect`` and provenance."""

    voi: str
    inverted: bool
    notes: tuple[str, ...] = field(default_factory=tuple)


def _window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """VOI windowing into [0, 1] (PS3.3 C.11.2.1.2 and C.11.2.1.3)."""
    x = values.astype(np.float32, copy=False)
    if function == "SIGMOID":
        if width <= 0:
            raise InputError(f"Window Width {width} must be > 0 for a SIGMOID VOI LUT Function")
        out = np.negative(x, dtype=np.float32)
        out += np.float32(center)
        out *= np.float32(4.0 / width)
        np.exp(out, out=out)
        out += 1.0
        np.reciprocal(out, out=out)
        return out
    if function == "LINEAR_EXACT":
        if width <= 0:
            raise InputError(f"Window Width {width} must be > 0 for LINEAR_EXACT windowing")
        lo, span = center - width / 2.0, width
    else:  # LINEAR, the default
        if width < 1:
            raise InputError(f"Window Width {width} must be >= 1 for LINEAR windowing")
        if width == 1:
            return (x > center - 0.5).astype(np.float32)
        lo, span = (center - 0.5) - (width - 1) / 2.0, width - 1.0
    out = x - np.float32(lo)
    out *= np.float32(1.0 / span)
    np.clip(out, 0.0, 1.0, out=out)
    return out


def _first(value: object) -> float:
    """First value of a possibly multi-valued DS element."""
    if isinstance(value, (list, tuple)) or (hasattr(value, "__len__") and not isinstance(value, str)):
        return float(value[0])  # type: ignore[index]
    return float(value)  # type: ignore[arg-type]


def to_display(ds: Dataset, stored: np.ndarray) -> tuple[np.ndarray, DisplayTransform]:
    """Apply Modality LUT, VOI LUT/window and polarity; return float32 in [0, 1].

    Multiple windows: the first is used (the one the modality recommends).
    No VOI attributes at all: the full range of the modality values is shown.
    """
    notes: list[str] = []
    photometric = Photometric.parse(str(ds.PhotometricInterpretation))
    modality_values = apply_modality_lut(stored, ds)

    voi_items = ds.get("VOILUTSequence") or []
    if voi_items and np.issubdtype(modality_values.dtype, np.integer):
        item = voi_items[0]
        n_entries = int(item.LUTDescriptor[0]) or 65536
        first = int(item.LUTDescriptor[1])
        # The LUT's own output range: some devices declare 16-bit entries but fill 12.
        lut = apply_voi(np.arange(first, first + n_entries, dtype=np.int64), ds, 0)
        lo, hi = float(lut.min()), float(lut.max())
        mapped = apply_voi(modality_values, ds, 0).astype(np.float32)
        display = (mapped - lo) / max(hi - lo, 1.0)
        explanation = item.get("LUTExplanation")
        voi = "VOI LUT Sequence item 1" + (f' "{explanation}"' if explanation else "")
        if len(voi_items) > 1:
            notes.append(f"{len(voi_items)} VOI LUTs present; used the first")
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        if voi_items:
            notes.append("VOI LUT Sequence ignored: Modality LUT output is not integer")
        center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
        function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
        display = _window(modality_values, center, width, function)
        voi = f"Window Center/Width {center:g}/{width:g} ({function})"
        n_windows = len(ds.WindowCenter) if ds["WindowCenter"].VM > 1 else 1
        if n_windows > 1:
            explanation = ds.get("WindowCenterWidthExplanation")
            label = f' "{explanation[0] if ds["WindowCenterWidthExplanation"].VM > 1 else explanation}"' \
                if explanation else ""
            notes.append(f"{n_windows} windows present; used the first{label}")
    else:
        values = modality_values.astype(np.float32, copy=False)
        lo, hi = float(values.min()), float(values.max())
        display = (values - lo) / max(hi - lo, 1e-6)
        voi = f"full range of modality values {lo:g}..{hi:g} (no VOI attributes)"
        if hi <= lo:
            notes.append("image is blank: every pixel has the same value")

    shape = str(ds.get("PresentationLUTShape", "") or "").strip().upper()
    if "PresentationLUTSequence" in ds:
        notes.append("Presentation LUT Sequence present; only its polarity is honoured")
    if photometric is Photometric.MONOCHROME1 and shape == "IDENTITY":
        notes.append("Presentation LUT Shape IDENTITY contradicts MONOCHROME1; polarity follows MONOCHROME1")
    # MONOCHROME1 and INVERSE both state the same single inversion (PS3.3 C.8.11.6.1.2).
    inverted = photometric is Photometric.MONOCHROME1 or shape == "INVERSE"
    if inverted:
        np.subtract(1.0, display, out=display)
    return display.astype(np.float32, copy=False), DisplayTransform(voi, inverted, tuple(notes))


def pixel_spacing(ds: Dataset) -> tuple[tuple[float, float] | None, SpacingSource]:
    """Row and column spacing in mm, and the attribute it came from.

    Pixel Spacing (calibrated to the patient) wins over Imager Pixel Spacing
    (at the detector, magnified), which wins over Nominal Scanned Pixel Spacing.
    """
    for source in (
        SpacingSource.PIXEL_SPACING,
        SpacingSource.IMAGER_PIXEL_SPACING,
        SpacingSource.NOMINAL_SCANNED_PIXEL_SPACING,
    ):
        value = ds.get(source.value)
        if value is not None and len(value) == 2:
            row, col = float(value[0]), float(value[1])
            if row > 0 and col > 0:
                return (row, col), source
    return None, SpacingSource.NONE
