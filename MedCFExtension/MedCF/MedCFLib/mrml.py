"""The module's work on the MRML scene: volume and segmentation nodes in and out of ``medcf``.

Needs Slicer's MRML (the application, or Kitware's ``slicer-core`` wheel from PyPI, which the
tests use) and never Qt, so that the whole workflow below runs headless against a real
``vtkMRMLScene``. It never imports ``medcf`` either: the library runs in its own environment,
as ``python -m medcf segment|edit`` in a background process (:mod:`MedCFLib.process`), and the
two sides meet in files ``medcf`` reads and writes:

- the input: the DICOM file a volume came from (node attribute :data:`SOURCE_ATTRIBUTE`), else
  the volume written as NIfTI by Slicer's own storage node (geometry in the file's affine);
- the anatomy: ``anatomy.nii.gz`` and ``zones.nii.gz`` of ``medcf segment`` become one
  segmentation node with named segments (lungs and heart; zones and costophrenic regions);
- the user's correction: the organ segments written as a ``.seg.nrrd``, which
  ``medcf edit --masks`` reads (``medcf/anatomy/given.py``);
- the result: ``counterfactual.nii.gz`` (NIfTI input) or the synthetic DICOM instance (DICOM
  input) read back by Slicer's storage node, on the input's exact geometry, with ``edit.json``'s
  facts as node attributes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .logic import ANATOMICAL_STRUCTURE, ORGAN_LABELS, SEGMENT_TERMINOLOGY, ZONE_LABELS
from .process import BackgroundEdit, edit_arguments

#: node attribute: the file ``medcf`` should read for this volume (a DICOM instance or series folder)
SOURCE_ATTRIBUTE = "MedCF.SourceFile"
#: prefix of the result node's attributes taken from edit.json
EDIT_ATTRIBUTE_PREFIX = "MedCF."
#: the segments ``medcf edit --masks`` needs, in label order (lungs, then the heart painted over them)
MASK_SEGMENTS = tuple(ORGAN_LABELS)
ORGAN_COLORS = {"lung_right": (0.30, 0.60, 1.00), "lung_left": (0.20, 0.85, 0.45), "heart": (0.95, 0.30, 0.30)}


class MRMLError(Exception):
    """A scene or file problem, said in one line (the module shows it as is)."""


class Geometry(NamedTuple):
    """Where a volume's voxels lie: what a result node must share with its input."""

    origin: tuple[float, float, float]
    spacing: tuple[float, float, float]
    ijk_to_ras: np.ndarray  # 4 x 4


def _slicer():
    import slicer  # the application's, or slicer-core's (same API, no Qt)

    return slicer


def _scene(scene):
    return scene if scene is not None else _slicer().mrmlScene


def register_segmentation_converters() -> None:
    """Make binary labelmap <-> closed surface conversion available, as Slicer's Segmentations module
    does when the application starts; a bare slicer-core process has none, and a segmentation node
    then cannot even hold a labelmap. Idempotent."""
    slicer = _slicer()
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    rules = factory.GetConverterRules()
    have = {rules[i].GetClassName() for i in range(len(rules))}
    for rule in (slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule,
                 slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule,
                 slicer.vtkFractionalLabelmapToClosedSurfaceConversionRule,
                 slicer.vtkClosedSurfaceToFractionalLabelmapConversionRule):
        if rule.__name__ not in have:
            factory.RegisterConverterRule(rule())


#: the terminology context Slicer lists anatomy under (its "General Anatomy" list)
TERMINOLOGY_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"


def terminology_entry(segment_name: str) -> str | None:
    """Slicer's serialized terminology entry for an organ segment (SNOMED CT category, type and
    laterality: :data:`MedCFLib.logic.SEGMENT_TERMINOLOGY`), made by Slicer's own serializer so the
    format is the one this Slicer reads; None for a segment with no standard concept (the zones, which
    keep Slicer's generic default)."""
    if segment_name not in SEGMENT_TERMINOLOGY:
        return None
    kind, modifier = SEGMENT_TERMINOLOGY[segment_name]
    modifier = modifier or ("", "", "")
    return _slicer().vtkSlicerTerminologiesModuleLogic.SerializeTerminologyEntry(
        TERMINOLOGY_CONTEXT, *ANATOMICAL_STRUCTURE, *kind, *modifier, ANATOMIC_CONTEXT, "", "", "", "", "", "")


def require_in_scene(node, scene=None, what: str = "the volume") -> None:
    """One line when ``node`` is no longer in the scene (File > Close Scene, or deleted while a job
    ran): a result must never be written into, or placed beside, a node that is gone."""
    scene = _scene(scene)
    if node is None or not scene.IsNodePresent(node):
        raise MRMLError(f"{what} this job was started on is no longer in the scene (closed or deleted); "
                        "its result was not loaded")


def geometry(node) -> Geometry:
    """The origin, spacing and IJK->RAS matrix of a volume node."""
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return Geometry(tuple(node.GetOrigin()), tuple(node.GetSpacing()),
                    np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)]))


def add_volume(array_kji: np.ndarray, like, name: str, scene=None, label: bool = False):
    """A new volume node holding ``array_kji`` on the geometry of the volume node ``like``."""
    slicer = _slicer()
    node = _scene(scene).AddNewNodeByClass("vtkMRMLLabelMapVolumeNode" if label else "vtkMRMLScalarVolumeNode",
                                           name)
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array_kji))
    node.CopyOrientation(like)
    return node


def _read_array(path: Path, scene) -> np.ndarray:
    """Voxels of an image file as (k, j, i), read by Slicer's own volume storage node (ITK: NIfTI,
    NRRD, DICOM), in the file's voxel order (Slicer does not reorder voxels, it sets IJK->RAS)."""
    slicer = _slicer()
    if not Path(path).is_file():
        raise MRMLError(f"{path}: no such file")
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "__medcf_read__")
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    try:
        storage.SetFileName(str(path))
        storage.SetSingleFile(1)
        if not storage.ReadData(node):
            raise MRMLError(f"{path}: Slicer's volume reader cannot read it")
        return np.array(slicer.util.arrayFromVolume(node))
    finally:
        scene.RemoveNode(node)
        scene.RemoveNode(storage)


def write_volume(node, path: str | Path, scene=None) -> Path:
    """Write a volume node with Slicer's storage node (NIfTI for ``.nii.gz``), geometry in the file:
    how a volume that came from no file reaches ``medcf``."""
    scene = _scene(scene)
    path = Path(path)
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    try:
        storage.SetFileName(str(path))
        storage.SetUseCompression(1)
        if not storage.WriteData(node):
            raise MRMLError(f"cannot write volume '{node.GetName()}' to {path}")
    finally:
        scene.RemoveNode(storage)
    return path


def medcf_input(node, work_dir: str | Path, scene=None) -> Path:
    """The file ``medcf`` reads for ``node``: the DICOM it came from (attribute
    :data:`SOURCE_ATTRIBUTE`), so that the synthetic series is written from the patient's own DICOM
    (patient module, Source Image Sequence, its geometry and view); else the volume itself as NIfTI
    in ``work_dir``."""
    source = node.GetAttribute(SOURCE_ATTRIBUTE)
    if source:
        if not Path(source).exists():
            raise MRMLError(f"volume '{node.GetName()}' came from {source}, which no longer exists")
        return Path(source)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    return write_volume(node, work_dir / "input.nii.gz", scene)


def _check_shape(array: np.ndarray, reference, what: str) -> None:
    dims = reference.GetImageData().GetDimensions()
    if array.shape != (dims[2], dims[1], dims[0]):
        raise MRMLError(f"{what} is {array.shape[2]}x{array.shape[1]}x{array.shape[0]} voxels, the volume "
                        f"'{reference.GetName()}' {dims[0]}x{dims[1]}x{dims[2]}: not its anatomy")


def segmentation_from_anatomy(anatomy_dir: str | Path, reference, name: str | None = None, scene=None):
    """A segmentation node of the anatomy ``medcf segment`` wrote into ``anatomy_dir``, on the
    geometry of the volume node ``reference``: segments ``lung_right``, ``lung_left``, ``heart``
    (anatomy.nii.gz, one label per pixel, heart over the lungs) and the six zones and two
    costophrenic regions (zones.nii.gz, named as ``medcf`` names them), which overlap the lungs and
    so live on a layer of their own."""
    slicer = _slicer()
    scene = _scene(scene)
    require_in_scene(reference, scene)
    register_segmentation_converters()
    anatomy_dir = Path(anatomy_dir)
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode",
                                           name or f"{reference.GetName()} anatomy")
    segmentation.CreateDefaultDisplayNodes()
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(reference)
    for file, legend in (("anatomy.nii.gz", ORGAN_LABELS), ("zones.nii.gz", ZONE_LABELS)):
        labels = np.rint(_read_array(anatomy_dir / file, scene)).astype(np.uint8)
        _check_shape(labels, reference, f"{anatomy_dir / file}")
        unknown = sorted(set(np.unique(labels).tolist()) - set(legend.values()) - {0})
        if unknown:
            raise MRMLError(f"{anatomy_dir / file} holds labels {unknown} outside medcf's legend")
        labelmap = add_volume(labels, reference, "__medcf_labels__", scene, label=True)
        try:
            before = segmentation.GetSegmentation().GetNumberOfSegments()
            if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentation):
                raise MRMLError(f"{anatomy_dir / file}: Slicer could not import it as segments")
        finally:
            scene.RemoveNode(labelmap)
        seg = segmentation.GetSegmentation()
        by_value = {value: key for key, value in legend.items()}
        for index in range(before, seg.GetNumberOfSegments()):
            segment = seg.GetNthSegment(index)
            segment_name = by_value[segment.GetLabelValue()]
            segment.SetName(segment_name)
            if segment_name in ORGAN_COLORS:
                segment.SetColor(*ORGAN_COLORS[segment_name])
            entry = terminology_entry(segment_name)
            if entry:
                segment.SetTag(segment.GetTerminologyEntryTagName(), entry)
    return segmentation


def segment_id(segmentation, segment_name: str) -> str:
    """The ID of the segment named ``segment_name``; one line if there is none."""
    found = segmentation.GetSegmentation().GetSegmentIdBySegmentName(segment_name)
    if not found:
        raise MRMLError(f"segmentation '{segmentation.GetName()}' has no segment named {segment_name!r} "
                        f"(medcf edit needs {', '.join(MASK_SEGMENTS)})")
    return found


def segment_mask(segmentation, segment_name: str, reference, scene=None) -> np.ndarray:
    """A segment as a (k, j, i) uint8 mask on the reference volume's grid."""
    import vtk

    slicer = _slicer()
    scene = _scene(scene)
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(segment_id(segmentation, segment_name))
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__medcf_segment__")
    try:
        slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(segmentation, ids, labelmap, reference)
        return (np.array(slicer.util.arrayFromVolume(labelmap)) > 0).astype(np.uint8)
    finally:
        scene.RemoveNode(labelmap)


def set_segment_mask(segmentation, segment_name: str, mask_kji: np.ndarray, reference, scene=None) -> None:
    """Replace a segment's voxels with ``mask_kji`` (on the reference volume's grid), as a Segment
    Editor stroke would: the way a script or a test corrects the anatomy."""
    slicer = _slicer()
    scene = _scene(scene)
    mask = np.asarray(mask_kji).astype(np.uint8)
    _check_shape(mask, reference, "the mask")
    labelmap = add_volume(mask, reference, "__medcf_mask__", scene, label=True)
    try:
        image = slicer.vtkSlicerSegmentationsModuleLogic.CreateOrientedImageDataFromVolumeNode(labelmap)
        if not slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
                image, segmentation, segment_id(segmentation, segment_name),
                slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE):
            raise MRMLError(f"could not set segment {segment_name!r}")
    finally:
        scene.RemoveNode(labelmap)


def write_masks(segmentation, path: str | Path, reference, scene=None) -> Path:
    """Write the lungs and heart of ``segmentation`` (as the user left them) as a 3D Slicer
    ``.seg.nrrd`` that ``medcf edit --masks`` reads by segment name. Only the organ segments go in:
    zones are derived by ``medcf`` from the lungs, so a corrected lung moves its zones too."""
    scene = _scene(scene)
    register_segmentation_converters()
    path = Path(path)
    if not path.name.endswith(".seg.nrrd"):
        raise MRMLError(f"{path}: the masks file must end in .seg.nrrd")
    organs = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "__medcf_masks__")
    storage = None
    try:
        organs.SetReferenceImageGeometryParameterFromVolumeNode(reference)
        source = segmentation.GetSegmentation()
        for name in MASK_SEGMENTS:
            if not organs.GetSegmentation().CopySegmentFromSegmentation(source, segment_id(segmentation, name)):
                raise MRMLError(f"could not copy segment {name!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
        storage.SetFileName(str(path))
        storage.SetCropToMinimumExtent(False)  # the image's whole grid: what --masks compares with the film
        if not storage.WriteData(organs):
            raise MRMLError(f"cannot write the segmentation to {path}")
    finally:
        scene.RemoveNode(organs)
        if storage is not None:
            scene.RemoveNode(storage)
    return path


def edit_attributes(record: dict[str, Any]) -> dict[str, str]:
    """The facts of ``edit.json`` a user needs beside the image, as node attributes (``MedCF.*``):
    what was edited, how, with which model and seed, where the anatomy came from, whether the model's
    own check saw the target reached, and that the image is synthetic."""
    extra = record.get("extra") or {}
    check = (extra.get("settings") or {}).get("check") or {}
    anatomy = extra.get("anatomy") or {}
    facts = {
        "Synthetic": "YES",
        "Notice": record.get("notice"),
        "Finding": record.get("finding"), "Action": record.get("action"), "Side": record.get("side"),
        "Zone": record.get("zone"), "Severity": record.get("severity"), "Method": record.get("method"),
        "Strength": record.get("strength"), "Seed": record.get("seed"),
        "Model": record.get("model_name"), "WeightsSHA256": record.get("weights_sha256"),
        "TargetReached": check.get("target_reached"), "CheckReliable": check.get("reliable"),
        "ModelCheck": check.get("verdict"), "Domain": (extra.get("domain") or {}).get("summary"),
        "AnatomySource": anatomy.get("source"), "AnatomyPath": anatomy.get("path"),
        "AnatomySHA256": anatomy.get("sha256"),
        "Command": record.get("command"), "Created": record.get("created"),
        "MedCFVersion": record.get("medcf_version"),
    }
    return {EDIT_ATTRIBUTE_PREFIX + key: str(value) for key, value in facts.items() if value is not None}


def in_input_units(values: np.ndarray, reference: np.ndarray, region: np.ndarray) -> tuple[np.ndarray, dict]:
    """``values`` (the counterfactual as ``medcf`` wrote it) mapped linearly into the units of
    ``reference`` (the input node's voxels), by the least-squares line fitted outside the edit
    ``region``, where ``medcf`` guarantees the output equals its reading of the input.

    Why a fit: the file ``medcf`` writes is in its own intensity space (a NIfTI input is read scaled
    to [0, 1] by its minimum and maximum; a DICOM result is stored at 16 bits when the source may have
    12), while the input node holds whatever Slicer loaded. Fitted where both must agree, the map is
    exact whenever Slicer's and MedCF's readings differ by scale and offset, and its residual says
    when they do not (a non-linear VOI, clipping). Returns the mapped values and the fit."""
    outside = ~np.asarray(region, dtype=bool)
    x = np.asarray(values, dtype=np.float64)[outside]
    y = np.asarray(reference, dtype=np.float64)[outside]
    if x.size < 100 or float(x.std()) == 0.0:
        raise MRMLError("too few varying pixels outside the edit region to put the result in the input's units")
    slope, offset = np.polyfit(x, y, 1)
    residual = float(np.abs(slope * x + offset - y).max())
    mapped = (slope * np.asarray(values, dtype=np.float64) + offset).astype(np.float32)
    return mapped, {"slope": float(slope), "offset": float(offset), "max_residual": residual}


def result_volume(out_dir: str | Path, input_node, name: str | None = None, scene=None):
    """The counterfactual ``medcf edit`` wrote into ``out_dir`` (the NIfTI/PNG image, or the synthetic
    DICOM instance read by Slicer's DICOM-capable reader) as a new volume node beside ``input_node``:
    the same origin, spacing and IJK->RAS (the output has the input's grid), voxels in the input's
    units (:func:`in_input_units`, so the difference is zero outside the edit region), and
    ``edit.json``'s facts as attributes (:func:`edit_attributes`). The synthetic file itself is
    untouched; the node names it (:data:`SOURCE_ATTRIBUTE`) when it is DICOM."""
    scene = _scene(scene)
    require_in_scene(input_node, scene)
    out_dir = Path(out_dir)
    # one edit writes into out_dir; several (a report's findings) into out_dir/<n>-<finding>: the first
    record_path = next(iter([out_dir / "edit.json"] if (out_dir / "edit.json").is_file()
                            else sorted(out_dir.glob("*/edit.json"))), out_dir / "edit.json")
    if not record_path.is_file():
        raise MRMLError(f"{out_dir} holds no edit.json: not a finished medcf edit")
    out_dir = record_path.parent
    record = json.loads(record_path.read_text(encoding="utf-8"))
    files = record.get("files") or {}
    written = files.get("image") or files.get("dicom")
    if not written or not files.get("region"):
        raise MRMLError(f"{record_path} names no image or no edit region (files: {sorted(files)})")
    values = _read_array(out_dir / written, scene)
    _check_shape(values, input_node, f"the counterfactual in {out_dir}")
    region = _read_array(out_dir / files["region"], scene) > 0
    _check_shape(region, input_node, f"the edit region in {out_dir}")
    reference = np.asarray(_slicer().util.arrayFromVolume(input_node))
    values, fit = in_input_units(values, reference, region)
    node = add_volume(values, input_node, name or f"{input_node.GetName()} counterfactual (synthetic)", scene)
    for key, value in edit_attributes(record).items():
        node.SetAttribute(key, value)
    node.SetAttribute(EDIT_ATTRIBUTE_PREFIX + "OutputFolder", str(out_dir))
    node.SetAttribute(EDIT_ATTRIBUTE_PREFIX + "ValueMap", json.dumps(fit))
    if files.get("dicom"):
        node.SetAttribute(SOURCE_ATTRIBUTE, str(out_dir / files["dicom"]))
    node.CreateDefaultDisplayNodes()
    display, source_display = node.GetDisplayNode(), input_node.GetDisplayNode()
    if display is not None and source_display is not None:  # shown as the input is
        display.AutoWindowLevelOff()
        display.SetWindowLevel(source_display.GetWindow(), source_display.GetLevel())
    return node


def difference_volume(result, input_node, name: str | None = None, scene=None):
    """result - input as a volume on the input's grid: the difference view (zero outside the edit
    region, where ``medcf`` keeps the input pixel for pixel)."""
    slicer = _slicer()
    a = np.asarray(slicer.util.arrayFromVolume(result), dtype=np.float32)
    b = np.asarray(slicer.util.arrayFromVolume(input_node), dtype=np.float32)
    if a.shape != b.shape:
        raise MRMLError(f"'{result.GetName()}' and '{input_node.GetName()}' differ in size")
    return add_volume(a - b, input_node, name or f"{result.GetName()} - input", scene)


def dicom_tags(path: str | Path, tags: list[str]) -> dict[str, str]:
    """DICOM attributes of one file as Slicer's (ITK/GDCM) reader sees them, by "gggg|eeee" tag:
    what a synthetic series carries into Slicer, checked without pydicom."""
    slicer = _slicer()
    reader = slicer.vtkITKArchetypeImageSeriesScalarReader()
    reader.SetArchetype(str(path))
    reader.SetSingleFile(1)
    reader.SetOutputScalarTypeToNative()
    reader.Update()
    return {tag: reader.GetTagValue(tag).strip() for tag in tags if reader.HasKey(tag)}


def start_segment(input_node, out_dir: str | Path, work_dir: str | Path, interpreter: str | None = None,
                  env: dict[str, str] | None = None, scene=None, device: str | None = None) -> BackgroundEdit:
    """``medcf segment`` on ``input_node`` in a background process writing into ``out_dir``; when it
    has finished, :func:`segmentation_from_anatomy` turns ``out_dir`` into the segmentation node.
    ``device`` is medcf's ``--device`` (``cpu`` when the user forces the CPU; None: medcf's auto)."""
    source = medcf_input(input_node, work_dir, scene)
    args = edit_arguments(source, {"device": device})
    return BackgroundEdit(args, out_dir, interpreter, env=env, subcommand="segment").start()


def start_edit(input_node, options: dict[str, str | None], out_dir: str | Path, work_dir: str | Path,
               segmentation=None, interpreter: str | None = None, env: dict[str, str] | None = None,
               scene=None) -> BackgroundEdit:
    """``medcf edit`` on ``input_node`` in a background process writing into ``out_dir`` (new or empty).
    With ``segmentation`` (the user's, possibly corrected) its lungs and heart are the edit's anatomy,
    handed over as ``--masks work_dir/anatomy.seg.nrrd``; without it ``medcf`` segments the film itself.
    When the run has finished, :func:`result_volume` loads the counterfactual."""
    source = medcf_input(input_node, work_dir, scene)
    args = edit_arguments(source, options)
    if segmentation is not None:
        masks = write_masks(segmentation, Path(work_dir) / "anatomy.seg.nrrd", input_node, scene)
        args += ["--masks", str(masks)]
    return BackgroundEdit(args, out_dir, interpreter, env=env).start()
