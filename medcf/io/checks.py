"""Header-level checks: can this DICOM instance be edited as a chest radiograph?

Each check returns a one-line reason a person can act on, or nothing. They run
on headers only (pixel data deferred), so ``medcf inspect`` can judge a whole
study folder without decoding every image.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.uid import UID

# SOP classes of single-frame projection radiographs and their captures.
CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
DX_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.1.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"

ACCEPTED_SOP_CLASSES = {
    CR_IMAGE_STORAGE: "CR",
    DX_FOR_PRESENTATION: "DX for presentation",
    DX_FOR_PROCESSING: "DX for processing",
    SECONDARY_CAPTURE: "Secondary Capture",
}
ACCEPTED_MODALITIES = {"CR", "DX", "OT", "SC"}

# Body Part Examined values that mean a chest; anything else, when stated, is refused.
CHEST_BODY_PARTS = {"CHEST", "THORAX", "LUNG", "LUNGS", "HEART", "CHEST_LAT", "CHEST_PA", "TORSO"}

# pip packages that supply a pydicom decoder, by transfer syntax family.
_DECODER_PACKAGES = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.51": "pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.57": "pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.70": "pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.80": "pyjpegls",
    "1.2.840.10008.1.2.4.81": "pyjpegls",
    "1.2.840.10008.1.2.4.90": "pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.91": "pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.201": "pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.202": "pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.203": "pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.5": "pylibjpeg-rle",
}


def transfer_syntax_of(ds: Dataset) -> UID | None:
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    return UID(str(uid)) if uid else None


def transfer_syntax_name(uid: UID | None) -> str:
    if uid is None:
        return "unknown"
    return uid.name if uid.is_valid and uid.name != str(uid) else str(uid)


def check_decoder(ds: Dataset) -> str | None:
    """Return why the pixel data cannot be decoded here, naming what to install."""
    from pydicom.pixels import get_decoder

    uid = transfer_syntax_of(ds)
    if uid is None:
        return None  # a raw dataset is read as implicit little endian; pydicom decides
    name = transfer_syntax_name(uid)
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        return (
            f"no pixel decoder exists for transfer syntax {name} ({uid}); convert the file "
            "to an uncompressed or JPEG/JPEG 2000/JPEG-LS/RLE transfer syntax first "
            "(for example with dcmtk's dcmconv or gdcmconv --raw)"
        )
    if decoder.is_available:
        return None
    package = _DECODER_PACKAGES.get(str(uid), "a pydicom pixel-data plugin")
    return (
        f"pixel data is {name} ({uid}) and no installed plugin decodes it; "
        f"install {package} (pip install {package})"
    )


def optional_int(value: object) -> int | None:
    """An IS/US value as int, or None when absent, empty or malformed."""
    try:
        return int(value) if value not in (None, "") else None  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


def check_instance(ds: Dataset) -> list[str]:
    """Reasons why ``ds`` is not an editable single-frame grayscale chest radiograph."""
    problems: list[str] = []
    sop_class = str(ds.get("SOPClassUID", ""))
    modality = str(ds.get("Modality", "")).upper()
    if sop_class:
        if sop_class not in ACCEPTED_SOP_CLASSES:
            label = UID(sop_class).name if UID(sop_class).is_valid else sop_class
            problems.append(
                f"{modality or 'this'} object ({label}) is not a projection radiograph; "
                "MedCF reads CR, DX and Secondary Capture chest images"
            )
    elif modality not in ACCEPTED_MODALITIES:
        problems.append(
            f"modality {modality or 'unknown'} is not a projection radiograph; "
            "MedCF reads CR, DX and Secondary Capture chest images"
        )

    body_part = str(ds.get("BodyPartExamined", "")).strip().upper()
    if body_part and body_part not in CHEST_BODY_PARTS:
        problems.append(f"Body Part Examined is {body_part}, not a chest")

    n_frames = optional_int(ds.get("NumberOfFrames")) or 1
    if n_frames > 1:
        problems.append(f"multi-frame image ({n_frames} frames); MedCF edits single-frame radiographs")

    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        problems.append(
            f"colour image ({photometric or 'unknown'} photometric interpretation, "
            f"{samples} samples per pixel); MedCF reads grayscale MONOCHROME1/2 radiographs"
        )

    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        problems.append("no Pixel Data (7FE0,0010) in this instance")
    elif "PixelData" not in ds:
        problems.append("float pixel data is not a radiograph encoding MedCF reads")

    bits_alloc = ds.get("BitsAllocated")
    bits_stored = ds.get("BitsStored")
    if bits_alloc is not None and int(bits_alloc) not in (8, 16):
        problems.append(f"Bits Allocated is {bits_alloc}; MedCF reads 8- or 16-bit pixels")
    if bits_stored is not None and not 1 <= int(bits_stored) <= 16:
        problems.append(f"Bits Stored is {bits_stored}; MedCF reads up to 16 bits")
    for keyword in ("Rows", "Columns"):
        if not ds.get(keyword):
            problems.append(f"{keyword} is missing or zero")

    if "PixelData" in ds:
        decoder_problem = check_decoder(ds)
        if decoder_problem:
            problems.append(decoder_problem)
    return problems
