"""The Slicer module's workflow on a real MRML scene, run in the slicer-core environment.

Run by tests/test_slicer_mrml.py with ``.venv-slicer``'s Python (Kitware's ``slicer-core`` wheel:
``vtkMRMLScene``, volume and segmentation nodes, ``slicer.util``; no Qt, and no MedCF: the module's
logic runs ``python -m medcf`` in MedCF's environment, ``$MEDCF_PYTHON``). One scenario per call;
arrays go to ``.npy`` files in OUT, facts to one JSON document on the last line of stdout, so the
test asserts with MedCF's own readers on the other side.

    python slicer_scenarios.py nifti FILM.nii.gz MODEL_DIR OUT
    python slicer_scenarios.py dicom FILM.dcm MODEL_DIR OUT
    python slicer_scenarios.py result FILM.nii.gz EDIT_DIR OUT
    python slicer_scenarios.py errors FILM.nii.gz ANATOMY_DIR OUT
    python slicer_scenarios.py closed FILM.nii.gz - OUT
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

MODULE_DIR = Path(__file__).resolve().parents[1] / "MedCFExtension" / "MedCF"
sys.path.insert(0, str(MODULE_DIR))

import slicer  # noqa: E402  (slicer-core)

from MedCFLib import mrml  # noqa: E402
from MedCFLib.process import FINISHED, parse_progress  # noqa: E402

#: fast settings: the tests' tiny model, one pass of the regulated method
EDIT = {"finding": "pleural_effusion", "action": "add", "side": "left", "method": "regulated", "seed": "3"}
TIMEOUT_S = 600


def _scene():
    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene  # what slicer.util's helpers use, as in the application
    return scene


def _load(scene, path: Path, name: str):
    """A volume node read from ``path`` by Slicer's storage node, as Add Data (or, for DICOM, the
    DICOM module's scalar volume loader) gives one."""
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(path))
    storage.SetSingleFile(1)
    assert storage.ReadData(node), path
    node.CreateDefaultDisplayNodes()
    return node


def _finish(run) -> dict:
    state, percent, message = run.wait(TIMEOUT_S)
    assert state == FINISHED, (state, message, run.stderr_lines[-5:])
    return {"state": state, "percent": percent}


def _geometry(node) -> dict:
    origin, spacing, matrix = mrml.geometry(node)
    return {"origin": list(origin), "spacing": list(spacing), "ijk_to_ras": matrix.tolist()}


def _attributes(node) -> dict:
    return {key: node.GetAttribute(key) for key in node.GetAttributeNames()}


def nifti(film: Path, model: Path, out: Path) -> dict:
    """Volume node -> medcf segment -> segmentation node -> the user erases the lower half of the left
    lung -> medcf edit --masks -> result node."""
    scene = _scene()
    volume = _load(scene, film, "film")
    # a geometry no default would give: any origin, anisotropic spacing
    volume.SetOrigin(12.5, -3.0, 40.0)
    volume.SetSpacing(0.7, 0.9, 1.0)
    work, outputs = out / "work", out / "runs"

    segment_run = mrml.start_segment(volume, outputs / "anatomy", work)
    facts = {"segment": _finish(segment_run)}
    segmentation = mrml.segmentation_from_anatomy(outputs / "anatomy", volume)
    seg = segmentation.GetSegmentation()
    facts["segments"] = [seg.GetNthSegment(i).GetName() for i in range(seg.GetNumberOfSegments())]
    for name in mrml.MASK_SEGMENTS:
        np.save(out / f"{name}.npy", mrml.segment_mask(segmentation, name, volume))

    lung = mrml.segment_mask(segmentation, "lung_left", volume)
    rows = np.nonzero(lung.any(axis=(0, 2)))[0]
    cut = int(rows[len(rows) // 2])
    corrected = lung.copy()
    corrected[:, cut:, :] = 0
    mrml.set_segment_mask(segmentation, "lung_left", corrected, volume)
    np.save(out / "lung_left_corrected.npy", mrml.segment_mask(segmentation, "lung_left", volume))
    facts["cut_row"] = cut

    # a lung cut in half is what the anatomy check exists to refuse (lung_bases): the scenario
    # tests that the corrected segmentation is the one used, so it overrides the check, as a user
    # who means the correction does (the record keeps the override)
    edit_run = mrml.start_edit(volume, {**EDIT, "model": str(model), "accept-anatomy": True}, outputs / "edit",
                               work, segmentation)
    percents = []  # what the module's progress bar shows, polled as its timer does
    while True:
        state, percent, _ = edit_run.poll()
        percents.append(percent)
        if state != "running":
            break
        time.sleep(0.2)
    facts["edit"] = _finish(edit_run)
    facts["edit_percents"] = percents
    # every percent the bar could have shown: the run's lines through the parser poll() uses
    # (polling alone can miss them all on a loaded machine, where the run ends between polls)
    facts["edit_reported"] = sorted({p for p in map(parse_progress, edit_run.stderr_lines + edit_run.stdout_lines)
                                     if p is not None})
    result = mrml.result_volume(outputs / "edit", volume)
    difference = mrml.difference_volume(result, volume)
    np.save(out / "input.npy", slicer.util.arrayFromVolume(volume))
    np.save(out / "result.npy", slicer.util.arrayFromVolume(result))
    np.save(out / "difference.npy", slicer.util.arrayFromVolume(difference))
    facts.update(input=_geometry(volume), result=_geometry(result), difference=_geometry(difference),
                 attributes=_attributes(result), result_class=result.GetClassName(),
                 in_scene=scene.GetNodeByID(result.GetID()) is not None,
                 edit_dir=str(outputs / "edit"), masks=str(work / "anatomy.seg.nrrd"))
    return facts


def dicom(film: Path, model: Path, out: Path) -> dict:
    """A DICOM radiograph's volume node -> medcf edit (the module's default anatomy) -> the synthetic
    series, loaded back as a volume node by Slicer's DICOM-capable reader, with its tags."""
    scene = _scene()
    volume = _load(scene, film, "dicom film")
    volume.SetAttribute(mrml.SOURCE_ATTRIBUTE, str(film))  # what the module sets when it loads a DICOM
    run = mrml.start_edit(volume, {**EDIT, "model": str(model)}, out / "edit", out / "work")
    facts = {"edit": _finish(run)}
    result = mrml.result_volume(out / "edit", volume)
    source = result.GetAttribute(mrml.SOURCE_ATTRIBUTE)
    tags = ["0008|001c", "0008|0008", "0008|103e", "0020|000d", "0020|000e", "0008|0018", "0010|0020",
            "0028|0301"]
    np.save(out / "result.npy", slicer.util.arrayFromVolume(result))
    np.save(out / "input.npy", slicer.util.arrayFromVolume(volume))
    facts.update(input=_geometry(volume), result=_geometry(result), attributes=_attributes(result),
                 source=source, result_tags=mrml.dicom_tags(source, tags), input_tags=mrml.dicom_tags(film, tags))
    return facts


def result(film: Path, out_dir: Path, out: Path) -> dict:
    """A finished edit's folder (here, the one a remote edit unpacked) loaded beside the film's node."""
    scene = _scene()
    volume = _load(scene, film, "film")
    node = mrml.result_volume(out_dir, volume)
    return {"input": _geometry(volume), "result": _geometry(node), "attributes": _attributes(node)}


def errors(film: Path, anatomy_dir: Path, out: Path) -> dict:
    """Bad input gives one line (MRMLError), and converter registration is idempotent."""
    scene = _scene()
    volume = _load(scene, film, "film")
    said = {}
    mrml.register_segmentation_converters()
    rules = slicer.vtkSegmentationConverterFactory.GetInstance().GetConverterRules()
    count = len(rules)
    mrml.register_segmentation_converters()
    said["rules"] = [count, len(slicer.vtkSegmentationConverterFactory.GetInstance().GetConverterRules())]
    small = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "small")
    slicer.util.updateVolumeFromArray(small, np.zeros((1, 40, 30), np.float32))
    segmentation = mrml.segmentation_from_anatomy(anatomy_dir, volume)
    cases = {
        "wrong_size": lambda: mrml.segmentation_from_anatomy(anatomy_dir, small),
        "no_anatomy": lambda: mrml.segmentation_from_anatomy(out, volume),
        "missing_segment": lambda: (segmentation.GetSegmentation().RemoveSegment(
            mrml.segment_id(segmentation, "heart")), mrml.write_masks(segmentation, out / "m.seg.nrrd", volume)),
        "bad_suffix": lambda: mrml.write_masks(segmentation, out / "m.nrrd", volume),
        "no_result": lambda: mrml.result_volume(out, volume),
    }
    for name, action in cases.items():
        try:
            action()
            said[name] = None
        except mrml.MRMLError as error:
            said[name] = str(error)
    return said


def closed(film: Path, _unused: Path, out: Path) -> dict:
    """``medcf segment --device cpu`` (Force CPU) -> a segmentation whose organs carry SNOMED CT
    terminology; then File > Close Scene (``Clear``) while a result is due: loading it into the
    deleted volume's place is refused in one line and adds no node."""
    scene = _scene()
    volume = _load(scene, film, "film")
    run = mrml.start_segment(volume, out / "anatomy", out / "work", device="cpu")
    facts = {"command": run.command, "segment": _finish(run)}
    segmentation = mrml.segmentation_from_anatomy(out / "anatomy", volume)
    seg = segmentation.GetSegmentation()
    terminology = {}
    for index in range(seg.GetNumberOfSegments()):
        segment = seg.GetNthSegment(index)
        tag = segment.GetTerminology() if segment.HasTag(segment.GetTerminologyEntryTagName()) else None
        entry = None
        if tag:
            parsed = slicer.vtkSlicerTerminologyEntry()
            assert slicer.vtkSlicerTerminologiesModuleLogic.DeserializeTerminologyEntry(tag, parsed), tag
            entry = {"category": [parsed.GetCategoryObject().GetCodingSchemeDesignator(),
                                  parsed.GetCategoryObject().GetCodeValue()],
                     "type": [parsed.GetTypeObject().GetCodingSchemeDesignator(), parsed.GetTypeObject().GetCodeValue(),
                              parsed.GetTypeObject().GetCodeMeaning()],
                     "modifier": parsed.GetTypeModifierObject().GetCodeValue() or None}
        terminology[segment.GetName()] = entry
    facts["terminology"] = terminology
    # the masks file written from it keeps the segments by name (what medcf edit --masks reads)
    facts["masks_written"] = mrml.write_masks(segmentation, out / "masks.seg.nrrd", volume).is_file()

    scene.Clear(0)  # File > Close Scene: the job's input volume is deleted
    before = scene.GetNumberOfNodes()
    said = {}
    for name, action in {"segmentation": lambda: mrml.segmentation_from_anatomy(out / "anatomy", volume),
                         "result": lambda: mrml.result_volume(out / "anatomy", volume)}.items():
        try:
            action()
            said[name] = None
        except mrml.MRMLError as error:
            said[name] = str(error)
    facts.update(after_close=said, nodes_added=scene.GetNumberOfNodes() - before)
    return facts


def main(argv: list[str]) -> dict:
    scenario, first, second, out = argv
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    scenarios = {"nifti": nifti, "dicom": dicom, "result": result, "errors": errors, "closed": closed}
    return scenarios[scenario](Path(first), Path(second), out)


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), default=str))
