"""Write a synthetic radiograph derived from a source as a new, unmistakably
synthetic DICOM instance (rules: docs/io.md "Writing").

Secondary Capture is built by highdicom's ``SCImage``; DX For Presentation by
highdicom's generic ``SOPClass`` plus the DX modules below. Both then go
through one function, :func:`_mark_synthetic`, that applies every synthetic
marker, so the two SOP classes cannot drift apart.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, UID, generate_uid

import medcf
from medcf.errors import OutputError
from medcf.io.atomic import sha256_of_file, write_new_dataset, write_new_text
from medcf.io.checks import DX_FOR_PRESENTATION
from medcf.io.deidentify import DeidOption, PseudonymTable, deidentify_dataset
from medcf.io.dx import complete_dx_modules
from medcf.io.provenance import Provenance
from medcf.io.reader import Radiograph
from medcf.vocab import OutputSOPClass, SpacingSource, ViewPosition

MANUFACTURER = "MedCF project"
MODEL_NAME = "MedCF"
_LEVELS = 65535  # output is stored as 16-bit MONOCHROME2, full range
_LO_MAX = 64

# Compression the writer can apply (highdicom/pydicom encoders; lossless only by default).
WRITABLE_TRANSFER_SYNTAXES = {
    "explicit": ExplicitVRLittleEndian,
    "rle": UID("1.2.840.10008.1.2.5"),
    "jpeg-ls": UID("1.2.840.10008.1.2.4.80"),
    "jpeg2000": UID("1.2.840.10008.1.2.4.90"),
}


@dataclass(frozen=True)
class WrittenImage:
    """Where a synthetic image went, and the dataset as written."""

    dicom_path: Path
    provenance_path: Path
    dataset: Dataset


def validate_display(pixels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Refuse pixels that must never reach a PACS: wrong size, NaN/inf, blank, saturated."""
    array = np.asarray(pixels)
    if array.shape != shape:
        raise OutputError(f"synthetic image is {array.shape[0:2]} but the source is {shape}; geometry must match")
    if not np.issubdtype(array.dtype, np.floating):
        raise OutputError(f"synthetic image must be float display values in [0, 1], got {array.dtype}")
    if not np.isfinite(array).all():
        raise OutputError("synthetic image contains NaN or infinite values; nothing was written")
    lo, hi = float(array.min()), float(array.max())
    if lo < -0.01 or hi > 1.01:
        raise OutputError(f"synthetic image values span {lo:.3f}..{hi:.3f}; display values must lie in [0, 1]")
    if hi - lo < 1e-4:
        raise OutputError("synthetic image is blank (constant); nothing was written")
    saturated = float(np.mean((array <= 0.0) | (array >= 1.0)))
    if saturated > 0.9:
        raise OutputError(f"synthetic image is {saturated:.0%} saturated; nothing was written")
    return np.clip(array, 0.0, 1.0)


def burn_watermark(display: np.ndarray, text: str = "SYNTHETIC", avoid: np.ndarray | None = None) -> np.ndarray:
    """Burn a small white-on-black ``text`` label into the corner that overlaps
    ``avoid`` (for example the lung mask) least; top-left when no mask is given."""
    from PIL import Image, ImageDraw, ImageFont

    rows, cols = display.shape
    size = max(10, rows // 40)
    font = ImageFont.load_default(size=size)
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    left, top, right, bottom = probe.textbbox((0, 0), text, font=font)
    pad = max(2, size // 4)
    box_w, box_h = right - left + 2 * pad, bottom - top + 2 * pad
    margin = max(4, rows // 100)
    corners = {
        "top-left": (margin, margin),
        "top-right": (margin, cols - margin - box_w),
        "bottom-left": (rows - margin - box_h, margin),
        "bottom-right": (rows - margin - box_h, cols - margin - box_w),
    }
    if avoid is not None:
        def overlap(rc: tuple[int, int]) -> float:
            r, c = rc
            return float(np.asarray(avoid)[r:r + box_h, c:c + box_w].sum())
        corner = min(corners.values(), key=overlap)
    else:
        corner = corners["top-left"]
    label = Image.new("L", (box_w, box_h), 0)
    ImageDraw.Draw(label).text((pad - left, pad - top), text, fill=255, font=font)
    out = display.copy()
    r, c = corner
    out[r:r + box_h, c:c + box_w] = np.asarray(label, dtype=np.float32) / 255.0
    return out


def _truncate(text: str, limit: int = _LO_MAX) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "~"


def _patient_fields(source: Dataset, deidentify: bool) -> dict:
    if not deidentify:
        return {
            "patient_id": source.get("PatientID"),
            "patient_name": source.get("PatientName"),
            "patient_birth_date": source.get("PatientBirthDate"),
            "patient_sex": source.get("PatientSex") or None,
        }
    original = str(source.get("PatientID", "")) + "|" + str(source.get("PatientName", ""))
    pseudonym = "MEDCF-" + hashlib.sha256(original.encode()).hexdigest()[:12].upper()
    return {
        "patient_id": pseudonym,
        "patient_name": "ANONYMOUS^SYNTHETIC",
        "patient_birth_date": None,
        "patient_sex": source.get("PatientSex") or None,
    }


def _study_fields(source: Dataset, keep_study: bool) -> dict:
    if keep_study:
        return {
            "study_instance_uid": source.StudyInstanceUID,
            "accession_number": source.get("AccessionNumber"),
            "study_id": source.get("StudyID"),
            "study_date": source.get("StudyDate"),
            "study_time": source.get("StudyTime"),
            "referring_physician_name": source.get("ReferringPhysicianName"),
        }
    now = _dt.datetime.now()
    return {
        "study_instance_uid": generate_uid(),
        "accession_number": None,
        "study_id": "MEDCF",
        "study_date": now.date(),
        "study_time": now.time().replace(microsecond=0),
        "referring_physician_name": None,
    }


def _equipment(source: Dataset, provenance: Provenance) -> list[hd.ContributingEquipment]:
    synthesizer = hd.ContributingEquipment(
        manufacturer=MANUFACTURER,
        purpose_of_reference=codes.DCM.SynthesizingEquipment,
        manufacturer_model_name=MODEL_NAME,
        software_versions=medcf.__version__,
        contribution_datetime=_dt.datetime.now(),
        contribution_description=_truncate(f"{provenance.method}: {provenance.edit_summary()}"),
    )
    if not source.get("Manufacturer"):
        return [synthesizer]
    # Built from the source's General Equipment attributes directly: highdicom's
    # for_image_acquisition() loads its whole IOD table first (~0.2 s, ~110 MB held).
    acquisition = hd.ContributingEquipment(
        manufacturer=str(source.Manufacturer),
        purpose_of_reference=codes.DCM.AcquisitionEquipment,
        manufacturer_model_name=source.get("ManufacturerModelName") or None,
        software_versions=source.get("SoftwareVersions") or None,
        device_serial_number=source.get("DeviceSerialNumber") or None,
        institution_name=source.get("InstitutionName") or None,
        institutional_department_name=source.get("InstitutionalDepartmentName") or None,
        station_name=source.get("StationName") or None,
    )
    return [acquisition, synthesizer]


def _to_stored(display: np.ndarray) -> np.ndarray:
    return np.rint(display * _LEVELS).astype(np.uint16)


def _spacing_attributes(radiograph: Radiograph) -> dict[str, list[float]]:
    """Copy the source's spacing under the same attribute it came from."""
    if radiograph.spacing_mm is None:
        return {}
    return {radiograph.spacing_source.value: [float(v) for v in radiograph.spacing_mm]}


def _orientation(radiograph: Radiograph) -> tuple[str, str]:
    value = radiograph.dataset.get("PatientOrientation")
    if value and len(value) == 2:
        return str(value[0]), str(value[1])
    # Frontal chest images are displayed as if facing the patient: rows run to
    # the patient's left, columns to the feet. MedCF keeps the source geometry.
    return "L", "F"


def _build_sc(radiograph, stored, common, equipment, transfer_syntax) -> Dataset:
    return hd.sc.SCImage(
        pixel_array=stored,
        photometric_interpretation="MONOCHROME2",
        bits_allocated=16,
        coordinate_system="PATIENT",
        patient_orientation=_orientation(radiograph),
        transfer_syntax_uid=transfer_syntax,
        contributing_equipment=equipment,
        **common,
    )


def _build_dx(radiograph, stored, common, equipment, transfer_syntax) -> Dataset:
    """DX For Presentation (PS3.3 A.26): DX Series, Anatomy Imaged, Image, Detector."""
    spacing = _spacing_attributes(radiograph)
    if not spacing:
        raise OutputError("the source has no pixel spacing; DX output requires Imager Pixel Spacing, write SC instead")
    source = radiograph.dataset
    ds = hd.base.SOPClass(
        sop_class_uid=DX_FOR_PRESENTATION,
        modality="DX",
        transfer_syntax_uid=transfer_syntax,
        manufacturer_model_name=MODEL_NAME,
        software_versions=medcf.__version__,
        **common,
    )
    ds.ContributingEquipmentSequence = DicomSequence(equipment)
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ViewPosition = radiograph.view.value if radiograph.view.is_frontal else ""
    ds.PatientOrientation = list(_orientation(radiograph))
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelIntensityRelationshipSign = -1  # bright (high) = less x-ray intensity
    complete_dx_modules(ds, radiograph.view if radiograph.view.is_frontal else ViewPosition.UNKNOWN,
                        laterality=str(source.get("ImageLaterality") or "U"))
    ds.ImagerPixelSpacing = spacing.get(
        SpacingSource.IMAGER_PIXEL_SPACING.value, next(iter(spacing.values()))
    )
    if SpacingSource.PIXEL_SPACING.value in spacing:
        ds.PixelSpacing = spacing[SpacingSource.PIXEL_SPACING.value]
        ds.PixelSpacingCalibrationType = source.get("PixelSpacingCalibrationType") or "GEOMETRY"
        ds.PixelSpacingCalibrationDescription = "copied from the source image"
    ds.set_pixel_data(stored, "MONOCHROME2", 16, generate_instance_uid=False)
    if UID(transfer_syntax) != ExplicitVRLittleEndian:
        ds.compress(transfer_syntax, stored, generate_instance_uid=False)
    return ds


def _source_reference(source: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = source.SOPClassUID
    item.ReferencedSOPInstanceUID = source.SOPInstanceUID
    item.PurposeOfReferenceCodeSequence = [
        hd.sr.CodedConcept.from_code(codes.DCM.SourceImageForImageProcessingOperation)
    ]
    return item


def _mark_synthetic(ds: Dataset, radiograph: Radiograph, provenance: Provenance,
                    series_description: str, watermarked: bool, deidentify: bool) -> None:
    """Every marker dicom.md asks for, applied to either SOP class."""
    source = radiograph.dataset
    ds.SyntheticData = "YES"
    if ds.SOPClassUID == DX_FOR_PRESENTATION:
        # DX enumerates Image Type value 3 (PS3.3 C.8.11.3.1.1); the edit goes in value 4.
        ds.ImageType = ["DERIVED", "SECONDARY", "", provenance.image_type_value]
    else:
        ds.ImageType = ["DERIVED", "SECONDARY", provenance.image_type_value]
        ds.ConversionType = "SYN"
    # Naming the chest tells validators that the body part is unpaired, so
    # Laterality (General Series, Type 2C) is correctly absent.
    ds.BodyPartExamined = "CHEST"
    ds.DerivationDescription = provenance.derivation_description()
    ds.SourceImageSequence = [_source_reference(source)]
    ds.SeriesDescription = _truncate(series_description if series_description.upper().startswith("SYNTHETIC")
                                     else f"SYNTHETIC {series_description}")
    ds.BurnedInAnnotation = "YES" if watermarked else "NO"
    if str(source.get("LossyImageCompression", "00")) == "01":
        # Once lossy, always lossy (PS3.3 C.7.6.1.1.5): the derived image says so too.
        ds.LossyImageCompression = "01"
        for keyword in ("LossyImageCompressionRatio", "LossyImageCompressionMethod"):
            if keyword in source:
                setattr(ds, keyword, source[keyword].value)
    else:
        ds.LossyImageCompression = "00"
    ds.WindowCenter = (_LEVELS + 1) / 2
    ds.WindowWidth = _LEVELS + 1
    ds.WindowCenterWidthExplanation = "MedCF display range"
    if "PatientAge" in source and not deidentify:
        ds.PatientAge = source.PatientAge
    if "StudyDescription" in source:
        ds.StudyDescription = _truncate(f"SYNTHETIC research derived from: {source.StudyDescription}")


def write_synthetic(
    radiograph: Radiograph,
    pixels: np.ndarray,
    provenance: Provenance,
    out_dir: str | Path,
    *,
    sop_class: OutputSOPClass = OutputSOPClass.SECONDARY_CAPTURE,
    keep_study: bool = False,
    deidentify: bool = False,
    watermark: bool = False,
    watermark_avoid: np.ndarray | None = None,
    series_description: str | None = None,
    series_number: int = 900,
    series_instance_uid: str | None = None,
    instance_number: int = 1,
    compression: str = "explicit",
) -> WrittenImage:
    """Write ``pixels`` (display values in [0, 1], same shape as the source) as a
    new synthetic instance in ``out_dir``, plus ``<SOPInstanceUID>.json`` with
    the full provenance. Nothing existing is ever overwritten.

    ``series_instance_uid`` lets several images (a severity ladder) share one
    series; by default each call starts a new series.
    """
    if keep_study and deidentify:
        raise OutputError("--keep-study and --deidentify cannot be combined: the source study UID identifies the patient")
    if compression not in WRITABLE_TRANSFER_SYNTAXES:
        raise OutputError(f"unknown compression {compression!r}; choose one of: {', '.join(WRITABLE_TRANSFER_SYNTAXES)}")
    sop_class = OutputSOPClass(sop_class)
    display = validate_display(pixels, radiograph.shape)
    if watermark:
        display = burn_watermark(display, avoid=watermark_avoid)
    stored = _to_stored(display)
    source = radiograph.dataset
    common = dict(
        series_instance_uid=series_instance_uid or generate_uid(),
        series_number=series_number,
        sop_instance_uid=generate_uid(),
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        **_patient_fields(source, deidentify),
        **_study_fields(source, keep_study),
    )
    transfer_syntax = WRITABLE_TRANSFER_SYNTAXES[compression]
    equipment = _equipment(source, provenance)
    build = _build_sc if sop_class is OutputSOPClass.SECONDARY_CAPTURE else _build_dx
    ds = build(radiograph, stored, common, equipment, transfer_syntax)
    if sop_class is OutputSOPClass.SECONDARY_CAPTURE:
        for keyword, value in _spacing_attributes(radiograph).items():
            # SC carries calibrated spacing as Pixel Spacing, digitiser spacing as Nominal Scanned.
            target = "PixelSpacing" if keyword == SpacingSource.PIXEL_SPACING.value else "NominalScannedPixelSpacing"
            setattr(ds, target, value)
    _mark_synthetic(ds, radiograph, provenance,
                    series_description or f"SYNTHETIC MedCF {provenance.edit_summary()}", watermark, deidentify)
    if deidentify:
        # The same PS3.15 Basic profile (Table E.1-1 actions) as `medcf batch --deidentify`, with
        # Retain Patient Characteristics (sex), not a hand-picked subset of attributes. One
        # object has no batch to keep pseudonyms consistent across, so the table lives in memory:
        # referenced source UIDs get new ones, the patient the pseudonym of _patient_fields.
        deidentify_dataset(ds, PseudonymTable(None), str(ds.PatientID), (DeidOption.RETAIN_PATIENT_CHARACTERISTICS,),
                           name=str(ds.PatientName))

    provenance.source = {
        "sop_instance_uid": str(source.SOPInstanceUID),
        "series_instance_uid": str(source.get("SeriesInstanceUID", "")),
        "study_instance_uid": str(source.get("StudyInstanceUID", "")),
        "path": str(radiograph.path) if radiograph.path else None,
        "sha256": sha256_of_file(radiograph.path) if radiograph.path and radiograph.path.is_file() else None,
        "display_transform": radiograph.transform.voi,
    }
    provenance.output = {
        "sop_class_uid": str(ds.SOPClassUID),
        "sop_instance_uid": str(ds.SOPInstanceUID),
        "series_instance_uid": str(ds.SeriesInstanceUID),
        "study_instance_uid": str(ds.StudyInstanceUID),
        "transfer_syntax_uid": str(ds.file_meta.TransferSyntaxUID),
        "watermark": watermark,
        "deidentified": deidentify,
        "pixels_sha256": hashlib.sha256(stored.tobytes()).hexdigest(),
    }
    out = Path(out_dir)
    if radiograph.path is not None and out.resolve() == radiograph.path.resolve():
        raise OutputError(f"output folder {out} is the input file")
    dicom_path = out / f"{ds.SOPInstanceUID}.dcm"
    write_new_dataset(dicom_path, ds)
    provenance_path = write_new_text(out / f"{ds.SOPInstanceUID}.json", provenance.to_json())
    return WrittenImage(dicom_path, provenance_path, ds)
