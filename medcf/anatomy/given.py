"""The user's own anatomy (``medcf edit INPUT --masks FILE``): lungs and heart read from a
file instead of drawn by the segmenter.

Accepted files:
- a NIfTI label map as ``medcf segment`` writes it (``anatomy.nii.gz``: 0 background,
  1 lung_right, 2 lung_left, 3 heart; x = column, y = row). A label map holds one label
  per pixel, so its lungs stop at the heart border (the heart is painted over them);
- a 3D Slicer segmentation (``.seg.nrrd``, read with SimpleITK): segments found by name
  (``Segment<N>_Name``: "right lung", "lung_right", "Lung Right", "heart", ...), else by
  label value as in MedCF's legend; layers (overlapping segments) and a cropped extent
  (``Segmentation_ReferenceImageExtentOffset``) are understood;
- a DICOM Segmentation (read with highdicom) with lung and heart segments, found by label
  (as ``medcf segment`` writes them) or by SNOMED CT code (lung + right/left, heart; the
  largest matching segment, as zones share the lung code). It must reference the input
  image when the input is DICOM.

Whatever the format, the masks must have the image's size and contain both lungs and the
heart; every refusal is one line (:class:`~medcf.errors.InputError`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medcf.anatomy.masks import LABEL_LEGEND, AnatomyMasks
from medcf.errors import InputError
from medcf.io.atomic import sha256_of_file
from medcf.io.inputs import read_nifti_2d
from medcf.vocab import Organ

ORGAN_NAMES = {
    Organ.LUNG_RIGHT: {"lung right", "right lung", "rightlung", "lungright", "r lung", "lung r"},
    Organ.LUNG_LEFT: {"lung left", "left lung", "leftlung", "lungleft", "l lung", "lung l"},
    Organ.HEART: {"heart", "cardiac silhouette", "heart silhouette"},
}
# SNOMED CT: lung, heart; laterality modifiers right, left.
SCT_LUNG, SCT_HEART, SCT_RIGHT, SCT_LEFT = "39607008", "80891009", "24028007", "7771000"


@dataclass
class GivenMasks:
    """Masks read from a file, and where they came from (for the provenance)."""

    masks: AnatomyMasks
    path: Path
    format: str
    segments: dict[str, str] = field(default_factory=dict)  # organ -> the file's segment (name or label)

    def record(self) -> dict:
        return {"source": "file", "path": str(self.path), "format": self.format,
                "sha256": sha256_of_file(self.path), "segments": dict(self.segments)}


def organ_of_name(name: str) -> Organ | None:
    """The organ a segment's name means, or None."""
    words = re.sub(r"[\s_\-.]+", " ", str(name).strip().lower())
    for organ, names in ORGAN_NAMES.items():
        if words in names:
            return organ
    return None


def mask_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".seg.nrrd") or name.endswith(".nrrd"):
        return "seg.nrrd"
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    return "dicom-seg"


def read_masks(path: str | Path, image) -> GivenMasks:
    """Lungs and heart for ``image`` (an :class:`~medcf.io.inputs.InputImage`) from ``path``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--masks {path}: no such file")
    kind = mask_format(path)
    reader = {"nifti": _read_nifti, "seg.nrrd": _read_nrrd, "dicom-seg": _read_dicom_seg}[kind]
    organs, segments = reader(path, image)
    for organ in Organ:
        mask = organs.get(organ)
        if mask is None or not mask.any():
            raise InputError(f"--masks {path} has no {organ.value.replace('_', ' ')} "
                             f"(found: {', '.join(segments.values()) or 'nothing'}); "
                             "it needs the right lung, the left lung and the heart")
        if mask.shape != image.shape:
            raise InputError(f"--masks {path}: masks of {mask.shape[0]}x{mask.shape[1]} do not fit the image "
                             f"{image.path} ({image.shape[0]}x{image.shape[1]})")
    masks = AnatomyMasks({organ: organs[organ].astype(bool) for organ in Organ}, f"file:{path.name}")
    return GivenMasks(masks, path, kind, {organ.value: segments[organ] for organ in Organ})


def _read_nifti(path: Path, image) -> tuple[dict, dict]:
    data, _, _ = read_nifti_2d(path)
    labels = np.rint(data).astype(np.int64)
    known = set(LABEL_LEGEND.values())
    unknown = sorted(set(np.unique(labels).tolist()) - known)
    if unknown:
        raise InputError(f"--masks {path} holds label values {unknown[:5]} outside MedCF's legend "
                         f"({', '.join(f'{v} {k}' for k, v in LABEL_LEGEND.items())}): is it the anatomy.nii.gz "
                         "of `medcf segment`?")
    organs = {organ: labels == LABEL_LEGEND[organ.value] for organ in Organ}
    return organs, {organ: f"label {LABEL_LEGEND[organ.value]}" for organ in Organ if organs[organ].any()}


def _read_nrrd(path: Path, image) -> tuple[dict, dict]:
    try:
        import SimpleITK as sitk
    except ImportError:
        raise InputError("reading a .seg.nrrd needs SimpleITK (pip install SimpleITK)") from None
    try:
        itk_image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        first = next((line for line in str(error).splitlines() if line.strip()), "unreadable")
        raise InputError(f"--masks {path} is not a readable NRRD file: {first.strip()[:160]}") from None
    meta = {key: itk_image.GetMetaData(key) for key in itk_image.GetMetaDataKeys()}
    array = sitk.GetArrayFromImage(itk_image)  # (z, y, x[, layer]) or (y, x[, layer])
    layered = itk_image.GetNumberOfComponentsPerPixel() > 1
    if not layered:
        array = array[..., None]
    while array.ndim > 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise InputError(f"--masks {path} holds a segmentation of shape {array.shape[:-1]}; expected one 2D slice")
    offset = meta.get("Segmentation_ReferenceImageExtentOffset")
    if offset:
        # Slicer crops a segmentation to what it holds; put it back into the image's frame.
        try:
            x0, y0 = (int(float(v)) for v in offset.split()[:2])
        except ValueError:
            raise InputError(f"--masks {path}: unreadable Segmentation_ReferenceImageExtentOffset {offset!r}") from None
        rows, cols = image.shape
        if x0 < 0 or y0 < 0 or y0 + array.shape[0] > rows or x0 + array.shape[1] > cols:
            raise InputError(f"--masks {path}: a segmentation of {array.shape[0]}x{array.shape[1]} at offset "
                             f"({y0}, {x0}) does not fit the image {image.path} ({rows}x{cols})")
        canvas = np.zeros((rows, cols, array.shape[2]), array.dtype)
        canvas[y0:y0 + array.shape[0], x0:x0 + array.shape[1]] = array
        array = canvas
    segments = []
    index = 0
    while any(f"Segment{index}_{key}" in meta for key in ("ID", "Name", "LabelValue")):
        segments.append({"name": meta.get(f"Segment{index}_Name", f"Segment{index}"),
                         "label": int(float(meta.get(f"Segment{index}_LabelValue", 1))),
                         "layer": int(float(meta.get(f"Segment{index}_Layer", 0)))})
        index += 1
    if not segments:
        raise InputError(f"--masks {path} has no Segment<N>_Name entries: is it a 3D Slicer segmentation (.seg.nrrd)?")
    chosen: dict = {}
    names: dict = {}
    for segment in segments:
        organ = organ_of_name(segment["name"])
        if organ is not None and organ not in chosen:
            chosen[organ], names[organ] = segment, segment["name"]
    for organ in Organ:  # no recognised name: MedCF's label value
        if organ not in chosen:
            for segment in segments:
                if segment["label"] == LABEL_LEGEND[organ.value] and organ_of_name(segment["name"]) is None \
                        and segment not in chosen.values():
                    chosen[organ], names[organ] = segment, f"{segment['name']} (label {segment['label']})"
                    break
    organs = {}
    for organ, segment in chosen.items():
        if segment["layer"] >= array.shape[2]:
            raise InputError(f"--masks {path}: segment {segment['name']!r} is on layer {segment['layer']}, "
                             f"but the file has {array.shape[2]}")
        organs[organ] = array[..., segment["layer"]] == segment["label"]
    return organs, names


def _code(item, attribute: str) -> str | None:
    sequence = getattr(item, attribute, None)
    return str(sequence[0].CodeValue) if sequence else None


def _read_dicom_seg(path: Path, image) -> tuple[dict, dict]:
    import highdicom as hd
    import pydicom

    try:
        dataset = pydicom.dcmread(path)
    except Exception as error:  # pydicom raises many types for a bad file
        raise InputError(f"--masks {path} is not a readable DICOM file: {str(error)[:160]}") from None
    if getattr(dataset, "Modality", None) != "SEG" or "SegmentSequence" not in dataset:
        raise InputError(f"--masks {path} is a DICOM {getattr(dataset, 'Modality', '?')} object, not a Segmentation "
                         "(SEG): give a .seg.nrrd, a label map (.nii.gz) or a DICOM SEG")
    try:
        seg = hd.seg.Segmentation.from_dataset(dataset, copy=False)
    except Exception as error:
        raise InputError(f"--masks {path}: highdicom cannot read this Segmentation: {str(error)[:160]}") from None
    sources = [sop for _, _, sop in seg.get_source_image_uids()]
    source_uid = None
    radiograph = getattr(image, "radiograph", None)
    if radiograph is not None and getattr(radiograph, "dataset", None) is not None:
        source_uid = str(radiograph.dataset.SOPInstanceUID)
        if source_uid not in sources:
            raise InputError(f"--masks {path} segments another image (it references {', '.join(sources) or 'none'}, "
                             f"the input is {source_uid})")
    if source_uid is None:
        if len(sources) != 1:
            raise InputError(f"--masks {path} references {len(sources)} images; MedCF needs a SEG of one radiograph")
        source_uid = sources[0]
    chosen: dict = {}
    by_code: dict = {organ: [] for organ in Organ}
    for item in seg.SegmentSequence:
        number, label = int(item.SegmentNumber), str(getattr(item, "SegmentLabel", ""))
        organ = organ_of_name(label)
        if organ is not None and organ not in chosen:
            chosen[organ] = (number, label)
        prop = item.SegmentedPropertyTypeCodeSequence[0] if "SegmentedPropertyTypeCodeSequence" in item else None
        if prop is None:
            continue
        modifier = _code(prop, "SegmentedPropertyTypeModifierCodeSequence")
        if str(prop.CodeValue) == SCT_HEART:
            by_code[Organ.HEART].append((number, label))
        elif str(prop.CodeValue) == SCT_LUNG and modifier in (SCT_RIGHT, SCT_LEFT):
            by_code[Organ.LUNG_RIGHT if modifier == SCT_RIGHT else Organ.LUNG_LEFT].append((number, label))
    numbers = sorted({n for candidates in by_code.values() for n, _ in candidates}
                     | {n for n, _ in chosen.values()})
    if not numbers:
        return {}, {}
    pixels = seg.get_pixels_by_source_instance([source_uid], segment_numbers=numbers, skip_overlap_checks=True)[0]
    plane = {n: pixels[..., i] > 0 for i, n in enumerate(numbers)}
    organs, names = {}, {}
    for organ in Organ:
        if organ in chosen:
            number, label = chosen[organ]
        elif by_code[organ]:
            # Zones share the lung's code; the whole lung is the largest of them.
            number, label = max(by_code[organ], key=lambda c: int(plane[c[0]].sum()))
        else:
            continue
        organs[organ], names[organ] = plane[number], f"{label} (segment {number})"
    return organs, names
