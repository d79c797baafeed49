"""The Slicer module's logic (MedCFExtension/MedCF/MedCFLib/mrml.py) on a real MRML scene.

Each scenario runs in ``.venv-slicer`` (Kitware's ``slicer-core`` wheel, built by ``make slicer-env``,
which ``make test`` runs) through tests/slicer_scenarios.py; the module's logic there starts
``python -m medcf`` in this environment (``$MEDCF_PYTHON``), as it does inside Slicer. The
assertions are made here, with MedCF's own readers (nibabel, pydicom), on the files both sides wrote.
Edits use the tests' tiny random-weight model: what is checked is the plumbing (geometry, anatomy,
masks, provenance), not the look of the finding.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medcf.io.atomic import sha256_of_file
from tests import waiting

REPO = Path(__file__).resolve().parents[1]
SLICER_PYTHON = REPO / ".venv-slicer" / "bin" / "python"
SCENARIOS = Path(__file__).with_name("slicer_scenarios.py")
pytestmark = pytest.mark.integration  # runs in the slicer-core environment (make test-fast leaves it out)
# A limit in CPU seconds (tests/waiting.py), not wall seconds: a scenario loads a scene and runs
# medcf (segment, an edit of the tiny model) in a subprocess, tens of CPU s; 20x for a slower CPU.
CPU_BUDGET = 900.0
SAMPLE_STUDY = REPO / "medcf" / "data" / "sample_study"
ORGANS = ["lung_right", "lung_left", "heart"]
ZONES = ["right_upper", "right_middle", "right_lower", "left_upper", "left_middle", "left_lower",
         "right_costophrenic", "left_costophrenic"]


def _scenario(*args: object) -> dict:
    """One scenario of tests/slicer_scenarios.py in the slicer-core environment."""
    if not SLICER_PYTHON.is_file():
        pytest.fail("the slicer-core environment is missing; run `make slicer-env` (make test does)")
    env = {**os.environ, "MEDCF_PYTHON": sys.executable,
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    done = waiting.run([str(SLICER_PYTHON), str(SCENARIOS), *map(str, args)], env=env, cpu_budget=CPU_BUDGET,
                       what=f"the slicer-core scenario {args[0]}")
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def film(tmp_path_factory) -> Path:
    """The sample study's PA film at 256 x 256 as 2D NIfTI (what a user loads with Add Data)."""
    from medcf.io.inputs import radiograph_affine, read_input, write_nifti_2d

    folder = tmp_path_factory.mktemp("film")
    image = read_input(SAMPLE_STUDY).display[::4, ::4]
    return write_nifti_2d(folder / "film.nii.gz", np.ascontiguousarray(image), radiograph_affine((1.0, 1.0)))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    from tests import model_fixtures

    return model_fixtures.make_default_model(tmp_path_factory.mktemp("tiny") / "model")


def _nifti(path: Path) -> np.ndarray:
    from medcf.io.inputs import read_nifti_2d

    return read_nifti_2d(path)[0]


def test_volume_to_segmentation_to_corrected_edit_on_a_real_scene(film: Path, tiny: Path, tmp_path: Path) -> None:
    facts = _scenario("nifti", film, tiny, tmp_path)

    # anatomy: one segmentation node, named segments exactly as `medcf segment` drew them
    assert facts["segment"]["state"] == "finished"
    assert facts["segments"] == ORGANS + ZONES
    labels = np.rint(_nifti(tmp_path / "runs" / "anatomy" / "anatomy.nii.gz")).astype(np.uint8)
    for value, name in enumerate(ORGANS, start=1):
        mask = np.load(tmp_path / f"{name}.npy")
        assert mask.shape == (1, *labels.shape) and mask.any(), name
        assert np.array_equal(mask[0], labels == value), name

    # the result: a new volume node on the input's exact geometry
    assert facts["result_class"] == "vtkMRMLScalarVolumeNode" and facts["in_scene"]
    assert facts["input"]["origin"] == [12.5, -3.0, 40.0]
    np.testing.assert_allclose(facts["input"]["spacing"], [0.7, 0.9, 1.0])
    for key in ("origin", "spacing", "ijk_to_ras"):
        np.testing.assert_array_equal(facts["result"][key], facts["input"][key], err_msg=key)
        np.testing.assert_array_equal(facts["difference"][key], facts["input"][key], err_msg=key)

    # the corrected segmentation is what the edit used: the masks file, its segments by name, its hash
    edit_dir = Path(facts["edit_dir"])
    record = json.loads((edit_dir / "edit.json").read_text())
    anatomy = record["extra"]["anatomy"]
    assert anatomy["source"] == "file" and anatomy["format"] == "seg.nrrd"
    assert anatomy["path"] == facts["masks"] and anatomy["sha256"] == sha256_of_file(Path(facts["masks"]))
    assert anatomy["segments"] == {name: name for name in ORGANS}
    assert anatomy["plausibility"]["overridden"] and "lung_bases" in anatomy["plausibility"]["failed"]
    corrected = np.load(tmp_path / "lung_left_corrected.npy")[0].astype(bool)
    original = np.load(tmp_path / "lung_left.npy")[0].astype(bool)
    cut = facts["cut_row"]
    assert corrected.sum() < original.sum() and not corrected[cut:].any() and original[cut:].any()
    used = np.rint(_nifti(edit_dir / "masks" / "anatomy.nii.gz")).astype(np.uint8)
    assert np.array_equal(used == 2, corrected & ~(labels == 3))  # the heart is painted over the lungs
    # ... and the edit followed it: the effusion's region (left base) moved up with the corrected base
    region = _nifti(edit_dir / "masks" / "edit_region.nii.gz") > 0
    rows = np.nonzero(original.any(axis=1))[0]
    assert region.any() and np.nonzero(region.any(axis=1))[0].max() < rows.max() - 0.25 * (rows.max() - rows.min())

    attributes = facts["attributes"]
    # pixels: outside the region the result is the input (in the input's units), inside it changed
    before, after = np.load(tmp_path / "input.npy")[0], np.load(tmp_path / "result.npy")[0]
    difference = np.load(tmp_path / "difference.npy")[0]
    np.testing.assert_allclose(after[~region], before[~region], atol=1e-6)
    assert np.abs(after - before)[region].max() > 0.01
    np.testing.assert_allclose(difference, after - before, atol=1e-6)
    written = _nifti(edit_dir / "counterfactual.nii.gz")  # medcf's display space: the input scaled to [0, 1]
    np.testing.assert_allclose(after, before.min() + written * (before.max() - before.min()), atol=1e-5)
    assert json.loads(attributes["MedCF.ValueMap"])["max_residual"] < 1e-5

    # edit.json's facts on the node; progress rose while it ran
    attributes = facts["attributes"]
    assert attributes["MedCF.Synthetic"] == "YES" and attributes["MedCF.AnatomySource"] == "file"
    assert (attributes["MedCF.Finding"], attributes["MedCF.Action"], attributes["MedCF.Side"],
            attributes["MedCF.Seed"]) == ("pleural_effusion", "add", "left", "3")
    assert attributes["MedCF.WeightsSHA256"] == record["weights_sha256"]
    check = record["extra"]["settings"]["check"]
    if check["target_reached"] is None:  # "not checked" (the tiny model's check is unreliable): no verdict to show
        assert "MedCF.TargetReached" not in attributes and attributes["MedCF.ModelCheck"] == str(check["verdict"])
    else:
        assert attributes["MedCF.TargetReached"] == str(check["target_reached"])
    assert attributes["MedCF.OutputFolder"] == str(edit_dir)
    polled = facts["edit_percents"]
    assert polled == sorted(polled) and polled[-1] == 100.0, polled  # the bar never moves back and ends full
    assert any(0 < p < 100 for p in facts["edit_reported"]), facts["edit_reported"]  # and the run reports between


def test_dicom_volume_gives_a_synthetic_series_that_loads_back_with_its_tags(tiny: Path, tmp_path: Path) -> None:
    from medcf.io.inputs import read_input
    from medcf.io.samples import SampleSpec, make_sample, save_sample

    image = np.ascontiguousarray(read_input(SAMPLE_STUDY).display[::4, ::4])
    dataset, _ = make_sample(SampleSpec(modality="CR", rows=image.shape[0], columns=image.shape[1]), image=image)
    dataset.SyntheticData = "NO"  # a patient's film, as far as this test is concerned
    film = tmp_path / "film" / "cr.dcm"
    film.parent.mkdir()
    save_sample(dataset, film)

    facts = _scenario("dicom", film, tiny, tmp_path / "run")
    written = Path(facts["source"])
    assert written.parent == tmp_path / "run" / "edit" / "dicom" and written.suffix == ".dcm"
    for key in ("origin", "spacing", "ijk_to_ras"):
        np.testing.assert_array_equal(facts["result"][key], facts["input"][key], err_msg=key)
    # what Slicer's reader saw in the series MedCF wrote: synthetic, derived, the same patient, a new
    # series and (MedCF's default, docs/io.md) a new study
    tags, source_tags = facts["result_tags"], facts["input_tags"]
    assert source_tags["0008|001c"] == "NO" and tags["0008|001c"] == "YES"
    assert "DERIVED" in tags["0008|0008"] and tags["0008|103e"].startswith("SYNTHETIC MedCF")
    assert tags["0020|000d"] != source_tags["0020|000d"] and tags["0020|000e"] != source_tags["0020|000e"]
    assert tags["0010|0020"] == source_tags["0010|0020"] and tags["0028|0301"] in ("YES", "NO")
    # ... and the pixels Slicer loaded are the file's (read independently with pydicom), put in the
    # input's units (12-bit source, 16-bit synthetic) by the line fitted outside the edit region
    on_disk = pydicom.dcmread(written)
    assert str(on_disk.SyntheticData) == "YES" and on_disk.SOPInstanceUID == tags["0008|0018"]
    assert on_disk.SourceImageSequence[0].ReferencedSOPInstanceUID == dataset.SOPInstanceUID
    fit = json.loads(facts["attributes"]["MedCF.ValueMap"])
    result, source = np.load(tmp_path / "run" / "result.npy")[0], np.load(tmp_path / "run" / "input.npy")[0]
    np.testing.assert_allclose(result, fit["slope"] * on_disk.pixel_array.astype(np.float64) + fit["offset"],
                               rtol=1e-5, atol=1e-3)
    assert fit["slope"] == pytest.approx(4095 / 65535, rel=1e-3) and fit["max_residual"] < 0.5
    region = np.rint(_nifti(written.parents[1] / "masks" / "edit_region.nii.gz")) > 0
    assert np.abs(result - source)[~region].max() < 0.5 and np.abs(result - source)[region].max() > 5
    assert facts["attributes"]["MedCF.Synthetic"] == "YES" and facts["attributes"]["MedCF.AnatomySource"] == "segmenter"


def test_bad_input_is_one_line(film: Path, tmp_path: Path) -> None:
    anatomy = tmp_path / "anatomy"
    done = waiting.run([sys.executable, "-m", "medcf", "segment", str(film), "--out", str(anatomy)],
                       env={**os.environ, "PYTHONPATH": str(REPO)}, cpu_budget=CPU_BUDGET, what="medcf segment")
    assert done.returncode == 0, done.stderr
    said = _scenario("errors", film, anatomy, tmp_path / "errors")
    rules = said.pop("rules")
    assert rules[0] >= 4 and rules[1] == rules[0]  # registering twice adds nothing
    expected = {"wrong_size": "not its anatomy", "no_anatomy": "no such file",
                "missing_segment": "no segment named 'heart'",
                "bad_suffix": "must end in .seg.nrrd", "no_result": "holds no edit.json"}
    for name, words in expected.items():
        assert said[name] is not None and words in said[name] and "\n" not in said[name], (name, said[name])


def test_force_cpu_terminology_and_a_closed_scene(film: Path, tmp_path: Path) -> None:
    """Force CPU reaches medcf segment as --device cpu; lungs and heart carry SNOMED CT codes (category
    Anatomical Structure, type Lung/Heart, laterality), zones Slicer's generic Tissue; after the scene is closed a
    job's result is refused in one line and no node is written."""
    facts = _scenario("closed", film, "-", tmp_path)
    command = facts["command"]
    assert command[command.index("--device") + 1] == "cpu" and facts["segment"]["state"] == "finished"
    terminology = facts["terminology"]
    structure = ["SCT", "123037004"]
    assert terminology["lung_right"] == {"category": structure, "type": ["SCT", "39607008", "Lung"],
                                         "modifier": "24028007"}
    assert terminology["lung_left"] == {"category": structure, "type": ["SCT", "39607008", "Lung"],
                                        "modifier": "7771000"}
    assert terminology["heart"] == {"category": structure, "type": ["SCT", "80891009", "Heart"], "modifier": None}
    # the zones keep Slicer's generic default (Tissue): no zone claims an organ's concept
    assert all(terminology[zone]["type"] == ["SCT", "85756007", "Tissue"] for zone in ZONES)
    assert facts["masks_written"]
    for name, said in facts["after_close"].items():
        assert said is not None and "no longer in the scene" in said and "\n" not in said, (name, said)
    assert facts["nodes_added"] == 0
