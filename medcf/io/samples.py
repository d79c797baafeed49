"""Sample chest-radiograph DICOM studies for tests and the demo.

These are *test objects*, not the simulated world: a smooth analytic drawing
of a chest (body, lungs, heart, spine, ribs, diaphragm) encoded in every way
MedCF must read (CR/DX/SC, MONOCHROME1/2, 8-16 bits, signed, rescale, windows,
VOI LUT, Presentation LUT Shape, compressed transfer syntaxes). Each sample
comes with the display image a correct reader must produce, computed forward
from the stored values with the textbook formulas, independently of
``medcf.io.display``. The [world] module replaces the drawing with DRRs.
"""

from __future__ import annotations

import datetime as _dt
import io
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    JPEG2000,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    JPEGLSNearLossless,
    PYDICOM_IMPLEMENTATION_UID,
    RLELossless,
    generate_uid,
)

from medcf.io.atomic import write_new_dataset
from medcf.io.checks import CR_IMAGE_STORAGE, DX_FOR_PRESENTATION, DX_FOR_PROCESSING, SECONDARY_CAPTURE
from medcf.io.dx import complete_dx_modules
from medcf.io.reader import read_pixels
from medcf.vocab import Photometric, SpacingSource, ViewPosition

SAMPLE_TRANSFER_SYNTAXES: dict[str, UID] = {
    "explicit": ExplicitVRLittleEndian,
    "rle": RLELossless,
    "jpeg-ls": JPEGLSLossless,
    "jpeg-ls-near": JPEGLSNearLossless,
    "jpeg2000": JPEG2000Lossless,
    "jpeg2000-lossy": JPEG2000,
    "jpeg-baseline": JPEGBaseline8Bit,
}
_LOSSY = {"jpeg-ls-near", "jpeg2000-lossy", "jpeg-baseline"}


def chest_pattern(rows: int, cols: int, view: ViewPosition = ViewPosition.PA, seed: int = 0) -> np.ndarray:
    """A smooth chest-like drawing in display space (float32, bright = dense).

    PA/AP: patient's right on image left, heart bulging to image right.
    Lateral: one lung field, spine posterior (image right), heart anterior.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float32)
    y /= rows
    x /= cols
    jitter = rng.normal(0, 0.01, size=8).astype(np.float32)

    def ellipse(cy, cx, ry, rx, softness=0.04):
        r = np.sqrt(((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2)
        return np.clip((1.0 - r) / softness + 0.5, 0.0, 1.0)

    image = np.full((rows, cols), 0.05, np.float32)  # air outside the patient
    body = ellipse(0.55, 0.5, 0.52, 0.46 if view.is_frontal else 0.38, 0.08)
    image += 0.45 * body
    if view.is_frontal:
        right_lung = ellipse(0.45 + jitter[0], 0.32, 0.30, 0.13)
        left_lung = ellipse(0.45 + jitter[1], 0.68, 0.29, 0.12)
        lungs = np.maximum(right_lung, left_lung)
        image -= 0.35 * lungs
        heart = ellipse(0.62 + jitter[2], 0.56, 0.13, 0.15, 0.06)
        image += 0.30 * heart * lungs + 0.15 * heart
        spine = np.clip(1.0 - np.abs(x - 0.5) / 0.035, 0.0, 1.0) * body
        image += 0.25 * spine
        ribs = (0.5 + 0.5 * np.cos(2 * np.pi * (y * 9.0 + 2.5 * (x - 0.5) ** 2))) ** 6
        image += 0.12 * ribs * lungs
        clavicles = np.exp(-(((y - 0.17 - 0.25 * (x - 0.5) ** 2) / 0.012) ** 2)) * (np.abs(x - 0.5) < 0.3)
        image += 0.2 * clavicles
        diaphragm = np.clip((y - (0.78 + 0.05 * np.cos(2 * np.pi * (x - 0.5) * 2.5))) / 0.02, 0, 1) * body
        image += 0.1 * diaphragm
    else:
        lung = ellipse(0.45 + jitter[0], 0.5, 0.30, 0.22)
        image -= 0.35 * lung
        heart = ellipse(0.60, 0.38, 0.14, 0.12, 0.06)
        image += 0.3 * heart * lung
        spine = np.clip(1.0 - np.abs(x - 0.78) / 0.05, 0.0, 1.0) * body
        image += 0.3 * spine
    image += rng.normal(0, 0.004, size=image.shape).astype(np.float32)
    return np.clip(image, 0.02, 0.98).astype(np.float32)


@dataclass(frozen=True)
class SampleSpec:
    """How a sample radiograph is encoded."""

    modality: str = "CR"  # CR, DX (for presentation), DXP (for processing), SC
    photometric: Photometric = Photometric.MONOCHROME2
    bits_stored: int = 12
    signed: bool = False
    rescale: tuple[float, float] | None = None  # (slope, intercept)
    voi: str = "window"  # window, windows, narrow-window, sigmoid, lut, none
    presentation_lut_shape: str | None = None  # IDENTITY, INVERSE or None
    view: ViewPosition = ViewPosition.PA
    transfer_syntax: str = "explicit"
    spacing: SpacingSource = SpacingSource.IMAGER_PIXEL_SPACING
    spacing_mm: float = 0.15
    rows: int = 256
    columns: int = 224
    seed: int = 0
    body_part: str = "CHEST"

    @property
    def inverted(self) -> bool:
        return self.photometric is Photometric.MONOCHROME1 or self.presentation_lut_shape == "INVERSE"


def _voi_forward(q: np.ndarray, levels: int, spec: SampleSpec) -> np.ndarray:
    """Presentation values p in [0,1] from quantised levels q (before polarity)."""
    t = q.astype(np.float64) / levels
    if spec.voi in ("window", "windows", "lut-linear"):
        return t
    if spec.voi == "narrow-window":  # window covering levels 10%..90%, LINEAR_EXACT
        return np.clip((t - 0.1) / 0.8, 0.0, 1.0)
    if spec.voi == "sigmoid":
        return 1.0 / (1.0 + np.exp(-4.0 * (t - 0.5)))
    if spec.voi == "lut":  # 12-bit square-root LUT
        return np.rint(np.sqrt(t) * 4095) / 4095
    if spec.voi == "none":
        return (t - t.min()) / max(t.max() - t.min(), 1e-12)
    raise ValueError(f"unknown voi {spec.voi!r}")


def make_sample(spec: SampleSpec, image: np.ndarray | None = None) -> tuple[Dataset, np.ndarray]:
    """Build a sample dataset and the display image a correct reader yields from it."""
    view = spec.view
    display = chest_pattern(spec.rows, spec.columns, view, spec.seed) if image is None else image
    levels = 2 ** spec.bits_stored - 1
    v = 1.0 - display if spec.inverted else display
    if spec.voi == "lut":
        q = np.rint(np.square(v) * levels)
    else:
        q = np.rint(v * levels)
    q = q.astype(np.int64)
    offset = -(2 ** (spec.bits_stored - 1)) if spec.signed else 0
    stored = q + offset
    expected_p = _voi_forward(q, levels, spec)
    expected = (1.0 - expected_p) if spec.inverted else expected_p

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    sop_class = {"CR": CR_IMAGE_STORAGE, "DX": DX_FOR_PRESENTATION, "DXP": DX_FOR_PROCESSING,
                 "SC": SECONDARY_CAPTURE}[spec.modality]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.Modality = {"DXP": "DX", "SC": "OT"}.get(spec.modality, spec.modality)
    ds.PatientName = "PHANTOM^CHEST"
    ds.PatientID = f"MEDCF-SAMPLE-{spec.seed:04d}"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.PatientAge = "056Y"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    today = _dt.date(2026, 1, 1).strftime("%Y%m%d")
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = today
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.StudyID = "1"
    ds.AccessionNumber = f"ACC{spec.seed:06d}"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "XR CHEST (MedCF sample, not a patient)"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Manufacturer = "MedCF sample generator"
    ds.BodyPartExamined = spec.body_part
    ds.ViewPosition = "" if view is ViewPosition.UNKNOWN else view.value
    ds.SeriesDescription = f"CHEST {view.value}"
    ds.PatientOrientation = ["L", "F"] if view.is_frontal else ["A", "F"]
    ds.ImageType = ["ORIGINAL", "PRIMARY"] if spec.modality != "SC" else ["DERIVED", "SECONDARY"]
    if spec.modality in ("DX", "DXP"):
        ds.PresentationIntentType = "FOR PROCESSING" if spec.modality == "DXP" else "FOR PRESENTATION"
        ds.ImageLaterality = "U"
        ds.PixelIntensityRelationship = "LOG"
        ds.PixelIntensityRelationshipSign = 1 if spec.inverted else -1
    if spec.modality == "SC":
        ds.ConversionType = "WSD"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = spec.photometric.value
    ds.Rows, ds.Columns = spec.rows, spec.columns
    ds.BitsAllocated = 8 if spec.bits_stored <= 8 else 16
    ds.BitsStored = spec.bits_stored
    ds.HighBit = spec.bits_stored - 1
    ds.PixelRepresentation = 1 if spec.signed else 0
    if spec.presentation_lut_shape:
        ds.PresentationLUTShape = spec.presentation_lut_shape
    slope, intercept = spec.rescale or (1.0, 0.0)
    if spec.rescale:
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
        ds.RescaleType = "US"
    m0 = offset * slope + intercept
    span = levels * slope
    if spec.voi in ("window", "windows"):
        center, width = m0 + span / 2 + 0.5, span + 1
        if spec.voi == "windows":
            ds.WindowCenter = [center, m0 + span / 4]
            ds.WindowWidth = [width, span / 8]
            ds.WindowCenterWidthExplanation = ["FULL", "NARROW"]
        else:
            ds.WindowCenter, ds.WindowWidth = center, width
    elif spec.voi == "narrow-window":
        ds.WindowCenter, ds.WindowWidth = m0 + 0.5 * span, 0.8 * span
        ds.VOILUTFunction = "LINEAR_EXACT"
    elif spec.voi == "sigmoid":
        ds.WindowCenter, ds.WindowWidth = m0 + 0.5 * span, span
        ds.VOILUTFunction = "SIGMOID"
    elif spec.voi == "lut":
        if spec.rescale:
            raise ValueError("a VOI LUT sample takes integer modality values: no rescale")
        item = Dataset()
        item.LUTDescriptor = [levels + 1 if levels + 1 < 65536 else 0, offset, 12]
        item.LUTExplanation = "SQRT"
        lut = np.rint(np.sqrt(np.arange(levels + 1) / levels) * 4095).astype("<u2")
        item.add_new("LUTData", "OW", lut.tobytes())  # OW: a 65536-entry LUT overflows US's length field
        ds.VOILUTSequence = [item]
    if spec.spacing is not SpacingSource.NONE:
        setattr(ds, spec.spacing.value, [spec.spacing_mm, spec.spacing_mm])

    if spec.modality in ("DX", "DXP"):
        complete_dx_modules(ds, view)
    dtype = (np.int8 if spec.signed else np.uint8) if ds.BitsAllocated == 8 else (np.int16 if spec.signed else np.uint16)
    pixels = stored.astype(dtype)
    _encode(ds, pixels, spec.transfer_syntax)
    if spec.transfer_syntax in _LOSSY:
        ds.LossyImageCompression = "01"
        # Lossy codecs change the pixels: recompute the truth from what was stored.
        q = read_pixels(ds).astype(np.int64) - offset
        expected_p = _voi_forward(q, levels, spec)
        expected = (1.0 - expected_p) if spec.inverted else expected_p
    return ds, expected.astype(np.float32)


def _encode(ds: Dataset, pixels: np.ndarray, transfer_syntax: str) -> None:
    uid = SAMPLE_TRANSFER_SYNTAXES[transfer_syntax]
    if transfer_syntax == "jpeg-baseline":
        if pixels.dtype != np.uint8:
            raise ValueError("JPEG baseline samples must be 8-bit unsigned")
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=92)
        ds.PixelData = encapsulate([buffer.getvalue()])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = uid
        ds.LossyImageCompressionMethod = "ISO_10918_1"
        return
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OW" if pixels.itemsize == 2 else "OB"
    if uid == ExplicitVRLittleEndian:
        return
    kwargs: dict = {}
    if transfer_syntax == "jpeg-ls-near":
        kwargs["jls_error"] = 2
    elif transfer_syntax == "jpeg2000-lossy":
        kwargs["j2k_cr"] = [15]
    ds.compress(uid, pixels, generate_instance_uid=False, **kwargs)


def save_sample(ds: Dataset, path: Path) -> Path:
    return write_new_dataset(path, ds)


def write_sample_study(out_dir: str | Path, seed: int = 0, rows: int = 1024, columns: int = 896) -> list[Path]:
    """A study folder like a research PACS export: a PA CR, a lateral CR and an
    8-bit screen capture of the PA, each in its own series folder."""
    out = Path(out_dir)
    base = SampleSpec(modality="CR", photometric=Photometric.MONOCHROME1, bits_stored=12,
                      transfer_syntax="jpeg-ls", rows=rows, columns=columns, seed=seed,
                      spacing_mm=0.15 * 2048 / max(rows, columns))
    plan = [
        ("series-001-pa", replace(base, view=ViewPosition.PA), 1, "CHEST PA"),
        ("series-002-lateral", replace(base, view=ViewPosition.LL), 2, "CHEST LATERAL"),
        ("series-003-capture", replace(base, modality="SC", photometric=Photometric.MONOCHROME2, bits_stored=8,
                                       transfer_syntax="jpeg-baseline", view=ViewPosition.PA,
                                       spacing=SpacingSource.NOMINAL_SCANNED_PIXEL_SPACING), 3, "SCREEN CAPTURE PA"),
    ]
    study_uid = generate_uid()
    written = []
    for folder, spec, number, description in plan:
        ds, _ = make_sample(spec)
        ds.StudyInstanceUID = study_uid
        ds.SeriesNumber = number
        ds.SeriesDescription = description
        written.append(save_sample(ds, out / folder / "IM0001.dcm"))
    return written
