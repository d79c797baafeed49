"""``medcf batch``: every (study, edit) once, failures recorded and retried, resume after a
kill with no duplicates and no gaps, sends with bounded retries to a real Orthanc.

The edits are real ``edit_file`` calls on 256 x 256 films cut from the committed sample
study, with the tiny random default model of tests/model_fixtures.py (2 sampling steps):
about a second per edit on a CPU.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests import model_fixtures, waiting
from tests.orthanc_server import free_port as _free_port

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_PA = ROOT / "medcf" / "data" / "sample_study" / "series-001-pa" / "IM0001.dcm"
EDIT = ["--method", "regulated", "--steps", "2", "--quiet"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}


def small_study(folder: Path, patient_id: str, patient_name: str, blank: bool = False,
                burned_in: bool = False) -> Path:
    """One study folder: the sample study's PA at a quarter of its size (256 x 256, which the
    segmenter still reads confidently), with a new study and its own patient."""
    source = pydicom.dcmread(SAMPLE_PA)
    pixels = source.pixel_array[::4, ::4].copy()
    if blank:
        pixels[:] = pixels.mean().astype(pixels.dtype)
    ds = source.copy()
    ds.PixelData, (ds.Rows, ds.Columns) = pixels.tobytes(), pixels.shape
    ds.ImagerPixelSpacing = [float(v) * 4 for v in source.ImagerPixelSpacing]
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientID, ds.PatientName = patient_id, patient_name
    ds.AccessionNumber = f"ACC-{patient_id}-{folder.name}"
    ds.InstitutionName = "St. Example Hospital"
    if burned_in:
        ds.BurnedInAnnotation = "YES"
    folder.mkdir(parents=True)
    ds.save_as(folder / "pa.dcm", enforce_file_format=True)
    return folder


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return model_fixtures.make_default_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture
def cohort(tmp_path: Path) -> dict:
    """Three studies of two patients (one blank film, which the editor refuses)."""
    root = tmp_path / "cohort"
    studies = {
        "a": small_study(root / "a", "P-001", "DOE^JANE"),
        "b": small_study(root / "b", "P-001", "DOE^JANE"),
        "c": small_study(root / "c", "P-002", "ROE^RICHARD"),
    }
    uids = {k: str(pydicom.dcmread(v / "pa.dcm", stop_before_pixels=True).StudyInstanceUID) for k, v in studies.items()}
    return {"root": root, "studies": studies, "uids": uids}


# A limit in CPU seconds (tests/waiting.py), not wall seconds: a batch of 3 edits measured 12 CPU s
# (loading torch and the tiny model is most of it) on a 2-core x86 VM, 47 s of wall time there beside
# other jobs. 25x that for a slower CPU; a hang is caught sooner, as a stall.
CPU_BUDGET = 300.0


def medcf(*args) -> subprocess.CompletedProcess:
    return waiting.run([sys.executable, "-m", "medcf", *map(str, args)], env=ENV, cpu_budget=CPU_BUDGET,
                       what=f"medcf {args[0]}")


def write_plan(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["study", "finding", "action", "side", "zone", "severity",
                                                    "method", "seed"])
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
    return path


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def digests(folder: Path) -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def published(out: Path) -> list[Path]:
    """The published item folders (those under .partial/ are not)."""
    return sorted(p.parent for p in out.glob("*/*/edit.json") if not p.parent.parent.name.startswith("."))


def assert_exactly_once(out: Path, keys: set[str]) -> None:
    """Every key has exactly one done line, its outputs exist, one DICOM per key, and
    nothing is published that no line reports."""
    lines = manifest(out)
    done = Counter(line["key"] for line in lines if line["status"] == "done")
    assert set(done) == keys and set(done.values()) == {1}, done
    for line in lines:
        if line["status"] == "done":
            assert line["outputs"] and all((out / p).is_file() for p in line["outputs"]), line
            assert len([p for p in line["outputs"] if p.endswith(".dcm")]) == 1
    assert {str(p.relative_to(out)) for p in published(out)} == keys
    assert not any((out / ".partial").glob("*"))


@pytest.mark.integration  # a chain of medcf subprocesses
def test_plan_batch_records_every_item_keeps_going_after_a_failure_and_retries_only_it(cohort, tiny_model,
                                                                                     tmp_path):
    from tests.dicom_validation import assert_valid_dicom

    blank = small_study(cohort["root"] / "blank", "P-003", "POE^EDGAR", blank=True)
    before = digests(cohort["root"])
    plan = write_plan(tmp_path / "plan.csv", [
        {"study": "a", "finding": "pleural_effusion", "action": "add", "side": "left"},
        {"study": cohort["uids"]["a"], "finding": "cardiomegaly", "action": "add", "seed": "3"},
        {"study": "blank", "finding": "nodule", "action": "add", "side": "right", "zone": "upper"},
        {"study": "c", "finding": "pleural_effusion", "action": "remove", "side": "right", "severity": "mild"},
    ])
    plan = plan.rename(cohort["root"] / "plan.csv")  # study paths are relative to the plan
    out = tmp_path / "out"
    first = medcf("batch", "--plan", plan, "--model", tiny_model, *EDIT, "--out", out)
    assert first.returncode == 1, first.stderr
    assert first.stdout.strip().endswith(f"4 item(s): 0 done before, 3 done now, 1 failed, 0 skipped; "
                                         f"manifest {out / 'manifest.jsonl'}")
    lines = manifest(out)
    assert [line["status"] for line in lines].count("done") == 3 and len(lines) == 4
    failed = next(line for line in lines if line["status"] == "failed")
    blank_uid = str(pydicom.dcmread(blank / "pa.dcm", stop_before_pixels=True).StudyInstanceUID)
    assert failed["key"].startswith(blank_uid + "/add-nodule-right-upper-")
    assert failed["error"] and "\n" not in failed["error"] and failed["outputs"] == []
    assert set(lines[0]) >= {"key", "source", "status", "outputs", "error", "seconds"}
    keys = {line["key"] for line in lines if line["status"] == "done"}
    assert f"{cohort['uids']['a']}/add-cardiomegaly-noside-defaultzone-moderate-regulated-seed3" in keys
    record = json.loads((out / f"{cohort['uids']['c']}/remove-pleural_effusion-right-defaultzone-mild-regulated-seed0"
                         / "edit.json").read_text())
    assert record["severity"] == "mild" and record["extra"]["batch"]["key"].startswith(cohort["uids"]["c"])
    dicom = next(out.glob(f"{cohort['uids']['a']}/add-pleural_effusion-*/dicom/*.dcm"))
    ds = pydicom.dcmread(dicom)
    assert ds.SyntheticData == "YES" and ds.SourceImageSequence[0].ReferencedSOPInstanceUID == \
        pydicom.dcmread(cohort["studies"]["a"] / "pa.dcm").SOPInstanceUID
    assert_valid_dicom(dicom)
    published = digests(out)
    # Rerun: the done keys are not touched, the failed key is tried again (and fails again).
    again = medcf("batch", "--plan", plan, "--model", tiny_model, *EDIT, "--out", out)
    assert again.returncode == 1 and "3 done before, 0 done now, 1 failed" in again.stdout
    lines = manifest(out)
    assert len(lines) == 5 and lines[-1]["key"] == failed["key"] and lines[-1]["attempt"] == 2
    assert {p: h for p, h in digests(out).items() if p.name != "manifest.jsonl"} == \
        {p: h for p, h in published.items() if p.name != "manifest.jsonl"}
    assert digests(cohort["root"]) == {**before, plan: digests(cohort["root"])[plan]}  # inputs untouched
    # Other settings for a done key: refused in one line, nothing run.
    other = medcf("batch", "--plan", plan, "--model", tiny_model, "--method", "regulated", "--steps", "3", "--quiet",
                  "--out", out)
    assert other.returncode == 2 and other.stderr.count("\n") == 1 and "with other settings" in other.stderr
    assert len(manifest(out)) == 5


@pytest.mark.integration  # a chain of medcf subprocesses
def test_a_killed_batch_resumes_with_no_duplicates_and_no_gaps(cohort, tiny_model, tmp_path):
    out = tmp_path / "out"
    rows = [{"study": s, "finding": "pleural_effusion", "action": "add", "side": "left", "seed": str(seed)}
            for s in ("a", "b", "c") for seed in (0, 1)]
    plan = write_plan(cohort["root"] / "plan.csv", rows)
    args = [sys.executable, "-m", "medcf", "batch", "--plan", plan, "--model", tiny_model, *EDIT, "--out", out]
    process = subprocess.Popen(list(map(str, args)), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def first_line_written() -> bool:
        assert process.poll() is None, process.stderr.read().decode()
        return (out / "manifest.jsonl").is_file() and bool((out / "manifest.jsonl").read_text().strip())

    try:
        waiting.wait_until(first_line_written, watch=[process.pid], cpu_budget=CPU_BUDGET,
                           what="the first item of the batch")
    except BaseException:
        waiting.kill_tree(process)
        raise
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()
    killed = manifest(out)
    assert 1 <= len(killed) < len(rows), "the kill came after the run had finished"
    resumed = medcf("batch", "--plan", plan, "--model", tiny_model, *EDIT, "--out", out)
    assert resumed.returncode == 0, resumed.stderr
    keys = {f"{cohort['uids'][s]}/add-pleural_effusion-left-defaultzone-moderate-regulated-seed{seed}"
            for s in ("a", "b", "c") for seed in (0, 1)}
    assert_exactly_once(out, keys)
    assert manifest(out)[: len(killed)] == killed  # lines are only ever appended
    # A third run has nothing left to do and does not even load the model.
    third = medcf("batch", "--plan", plan, "--model", tmp_path / "no-model-here", *EDIT, "--out", out)
    assert third.returncode == 0 and "6 done before, 0 done now" in third.stdout, third.stderr
    assert len(manifest(out)) == len(manifest(out)[: len(killed)]) + (len(manifest(out)) - len(killed))


def test_interrupts_between_publication_and_manifest_line_are_recovered_not_redone(cohort, tiny_model, tmp_path,
                                                                                   monkeypatch):
    """The two windows a kill can hit, made exact: inside the edit (nothing published) and
    after the rename but before the manifest line (published, not reported)."""
    import medcf.editing.api as api
    from medcf.batch.manifest import Manifest
    from medcf.batch.plan import discover_studies, items_from_spec
    from medcf.batch.runner import run_batch
    from medcf.editing.api import load_editor
    from medcf.editing.spec import EditSpec

    editor = load_editor(tiny_model)
    items = items_from_spec(discover_studies([cohort["root"]]),
                            EditSpec("pleural_effusion", "add", "left", method="regulated", steps=2))
    out = tmp_path / "out"
    real_edit, real_append = api.edit_file, Manifest.append
    calls = {"edit": 0, "append": 0}

    def edit_then_die(path, specs, out_dir, *args, **kwargs):
        calls["edit"] += 1
        result = real_edit(path, specs, out_dir, *args, **kwargs)
        if calls["edit"] == 2:
            raise KeyboardInterrupt  # Ctrl-C after the files were written, before the rename
        return result

    def append_then_die(self, line):
        calls["append"] += 1
        if calls["append"] == 1:
            raise KeyboardInterrupt  # Ctrl-C after the rename, before the line
        real_append(self, line)

    # Killed in the very first item: no line yet, but the folder is still this batch's to resume.
    from medcf.batch.runner import check_out_dir

    def die_at_once(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "edit_file", die_at_once)
    with pytest.raises(KeyboardInterrupt):
        run_batch(items, tmp_path / "first", editor, progress=False)
    check_out_dir(tmp_path / "first", [cohort["root"]])  # no "not a medcf batch folder" refusal
    assert manifest(tmp_path / "first") == []
    monkeypatch.setattr(api, "edit_file", edit_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_batch(items, out, editor, progress=False)
    assert len(manifest(out)) == 1 and any((out / ".partial").iterdir())
    assert len(published(out)) == 1
    monkeypatch.setattr(api, "edit_file", real_edit)
    monkeypatch.setattr(Manifest, "append", append_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_batch(items, out, editor, progress=False)
    assert len(manifest(out)) == 1 and len(published(out)) == 2  # published, not reported
    orphan = next(p for p in published(out) if str(p.relative_to(out)) not in {line["key"] for line in manifest(out)})
    orphan_files = digests(orphan)
    monkeypatch.setattr(Manifest, "append", real_append)
    report = run_batch(items, out, editor, progress=False)
    assert (report.already, report.done, report.failed) == (1, 2, 0)
    recovered = [line for line in manifest(out) if line["recovered"]]
    assert [line["key"] for line in recovered] == [str(orphan.relative_to(out))]
    assert digests(orphan) == orphan_files  # not edited again
    assert_exactly_once(out, {item.key for item in items})


@pytest.mark.integration
def test_send_retries_are_bounded_recorded_and_resumed_without_editing_again(cohort, tiny_model, orthanc, tmp_path):
    out = tmp_path / "out"
    dead = "dicom://NOBODY@127.0.0.1:9"
    edit = ["--finding", "pleural_effusion", "--action", "add", "--side", "left", "--model", tiny_model, *EDIT]
    first = medcf("batch", cohort["studies"]["a"], cohort["studies"]["c"], *edit, "--send", dead,
                  "--send-retries", "2", "--send-wait", "0", "--out", out)
    assert first.returncode == 1, first.stderr
    lines = manifest(out)
    assert [line["status"] for line in lines] == ["failed", "failed"]
    assert all("send failed after 2 attempt(s)" in line["error"] and line["outputs"] for line in lines)
    local = {p.name: p for p in out.glob("*/*/dicom/*.dcm")}
    assert len(local) == 2
    second = medcf("batch", cohort["studies"]["a"], cohort["studies"]["c"], *edit, "--send", orthanc["dimse"],
                   "--out", out)
    assert second.returncode == 0, second.stderr
    done = [line for line in manifest(out) if line["status"] == "done"]
    assert len(done) == 2 and all(line["recovered"] for line in done)  # sent, not edited again
    assert all(line["sent"] == {"to": orthanc["dimse"], "instances": 1, "attempts": 1} for line in done)
    assert {p.name for p in out.glob("*/*/dicom/*.dcm")} == set(local)
    from medcf.io.pacs import fetch_study

    for path in local.values():
        ds = pydicom.dcmread(path)
        back = fetch_study(f"{orthanc['dimse']}/{ds.StudyInstanceUID}", tmp_path / "back")
        copy = pydicom.dcmread(back / path.name)
        assert copy.SyntheticData == "YES" and copy.PixelData == ds.PixelData


@pytest.mark.integration  # a chain of medcf subprocesses
def test_bad_batch_requests_are_one_line_errors_before_anything_is_written(cohort, tmp_path):
    plan = write_plan(cohort["root"] / "plan.csv", [{"study": "nowhere", "finding": "nodule", "action": "add",
                                                    "side": "left"}])
    bad_column = tmp_path / "bad.csv"
    bad_column.write_text("study,finding,action,colour\na,nodule,add,red\n")
    repeated = write_plan(cohort["root"] / "twice.csv", [
        {"study": "a", "finding": "nodule", "action": "add", "side": "left"},
        {"study": "a", "finding": "nodule", "action": "add", "side": "left"}])
    bad_side = write_plan(cohort["root"] / "side.csv", [{"study": "a", "finding": "nodule", "action": "add",
                                                         "side": "up"}])
    out = tmp_path / "out"
    for args, words in (
        (["--plan", plan], "is neither a Study Instance UID nor an existing path"),
        (["--plan", bad_column], "unknown column(s) colour"),
        (["--plan", repeated], "line 3 repeats the edit of line 2"),
        (["--plan", bad_side], "line 2: --side"),
        ([cohort["root"], "--plan", repeated, "--finding", "nodule"], "exclude each other"),
        ([cohort["root"]], "--plan PLAN.csv is required"),
        ([cohort["root"], "--finding", "nodule", "--side", "left"], "--action add|remove is required"),
        ([cohort["root"], "--finding", "nodule", "--action", "add"], "--side is needed"),
        ([cohort["root"], "--finding", "cardiomegaly", "--action", "add", "--deidentify"], "needs --deid-map"),
        ([cohort["root"], "--finding", "cardiomegaly", "--action", "add", "--deidentify", "--deid-map",
          out / "map.json"], "is inside --out"),
        ([cohort["root"], "--finding", "cardiomegaly", "--action", "add", "--deidentify", "--deid-map",
          tmp_path / "map.json", "--deid-option", "retain-uids"], "is not a valid DeidOption"),
        ([cohort["root"], "--finding", "cardiomegaly", "--action", "add", "--deid-map", tmp_path / "map.json"],
         "only apply with --deidentify"),
    ):
        done = medcf("batch", *args, "--out", out)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.count("\n") == 1 and words in done.stderr, (args, done.stderr)
        assert not out.exists(), args
    inside = medcf("batch", cohort["root"], "--finding", "cardiomegaly", "--action", "add",
                   "--out", cohort["root"] / "a" / "out")
    assert inside.returncode == 2 and "overlaps the source" in inside.stderr
    assert not (cohort["root"] / "a" / "out").exists()
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "notes.txt").write_text("mine")
    used = medcf("batch", cohort["root"], "--finding", "cardiomegaly", "--action", "add", "--out", tmp_path / "used")
    assert used.returncode == 2 and "is not a medcf batch folder" in used.stderr
    assert np.array_equal(sorted(p.name for p in (tmp_path / "used").iterdir()), ["notes.txt"])


# --- de-identified exports ------------------------------------------------------------------


@pytest.mark.integration
def test_deidentified_batch_is_consistent_keeps_every_marker_leaks_nothing_and_reaches_the_server(
        cohort, tiny_model, orthanc, tmp_path):
    from medcf.io.pacs import fetch_study
    from tests.dicom_validation import DEIDENTIFIED_WARNINGS, assert_valid_dicom

    burned = small_study(cohort["root"] / "d", "P-003", "POE^EDGAR", burned_in=True)
    out, table = tmp_path / "export", tmp_path / "private" / "map.json"
    args = [cohort["root"], "--finding", "pleural_effusion", "--action", "add", "--side", "right",
            "--model", tiny_model, *EDIT, "--deidentify", "--deid-map", table,
            "--deid-option", "retain-patient-characteristics", "--send", orthanc["web"], "--out", out]
    first = medcf("batch", *args)
    assert first.returncode == 1, first.stderr
    lines = manifest(out)
    assert sorted(line["status"] for line in lines) == ["done", "done", "done", "skipped"]
    skipped = next(line for line in lines if line["status"] == "skipped")
    assert "Burned In Annotation = YES" in skipped["error"] and "--allow-burned-in" in skipped["error"]
    mapping = json.loads(table.read_text())
    originals = {k: str(pydicom.dcmread(v / "pa.dcm", stop_before_pixels=True).SOPInstanceUID)
                 for k, v in cohort["studies"].items()}
    outputs = {}
    for key, study_uid in cohort["uids"].items():
        folder = out / mapping["uids"][study_uid]
        dicom = next(folder.glob("*/dicom/*.dcm"))
        outputs[key] = ds = pydicom.dcmread(dicom)
        assert ds.SyntheticData == "YES" and ds.PatientIdentityRemoved == "YES"
        assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"] and ds.ConversionType == "SYN"
        assert ds.SeriesDescription.startswith("SYNTHETIC MedCF") and ds.DerivationDescription.startswith("MedCF=")
        assert any(i.PurposeOfReferenceCodeSequence[0].CodeValue == "109100" for i in ds.ContributingEquipmentSequence)
        assert [c.CodeValue for c in ds.DeidentificationMethodCodeSequence] == ["113100", "113105", "113108"]
        assert ds.LongitudinalTemporalInformationModified == "REMOVED" and ds.BurnedInAnnotation == "NO"
        assert ds.StudyDate == "" and ds.AccessionNumber == "" and "InstanceCreationDate" not in ds
        assert ds.PatientSex == "O" and ds.PatientAge == "056Y"  # retained characteristics
        # references stay valid: the source image is named by its pseudonymous UID
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == mapping["uids"][originals[key]]
        assert dicom.name == f"{ds.SOPInstanceUID}.dcm" and ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert_valid_dicom(dicom, DEIDENTIFIED_WARNINGS)
        back = fetch_study(f"{orthanc['dimse']}/{ds.StudyInstanceUID}", tmp_path / "back")
        stored = pydicom.dcmread(back / dicom.name)
        assert stored.SyntheticData == "YES" and stored.PatientIdentityRemoved == "YES"
        assert stored.PatientID == ds.PatientID and stored.PixelData == ds.PixelData
    # the same patient gets the same pseudonym, another patient another one
    assert outputs["a"].PatientID == outputs["b"].PatientID == mapping["patients"]["id:P-001"]
    assert outputs["c"].PatientID == mapping["patients"]["id:P-002"] != outputs["a"].PatientID
    # nothing identifying anywhere in the export, manifest included
    secrets = [b"DOE", b"ROE", b"POE", b"P-00", b"ACC-", b"St. Example", str(cohort["root"]).encode(),
               *(u.encode() for u in cohort["uids"].values()), *(u.encode() for u in originals.values())]
    for path in out.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not [s for s in secrets if s in data], path
    assert not list(out.rglob("panel.png"))  # its title names the input file
    # Resume with the burned-in study allowed and a new study of patient P-001: same table, same pseudonym.
    later = small_study(tmp_path / "later" / "e", "P-001", "DOE^JANE")
    second = medcf("batch", *args[:1], later, *args[1:], "--allow-burned-in")
    assert second.returncode == 0, second.stderr
    assert "4 item(s)" not in second.stdout and "3 done before, 2 done now" in second.stdout
    mapping = json.loads(table.read_text())
    e_uid = str(pydicom.dcmread(later / "pa.dcm", stop_before_pixels=True).StudyInstanceUID)
    e = pydicom.dcmread(next((out / mapping["uids"][e_uid]).glob("*/dicom/*.dcm")))
    assert e.PatientID == outputs["a"].PatientID
    d_uid = str(pydicom.dcmread(burned / "pa.dcm", stop_before_pixels=True).StudyInstanceUID)
    d = pydicom.dcmread(next((out / mapping["uids"][d_uid]).glob("*/dicom/*.dcm")))
    assert d.PatientIdentityRemoved == "NO" and d.BurnedInAnnotation == "YES"
    assert "burned-in text kept" in d.DeidentificationMethod


def test_profile_actions_on_attributes_a_source_can_bring(cohort, tmp_path):
    """Table E.1-1 actions on what the tiny edits do not carry: private tags, overlays (a
    repeating group), other names, institution and device; options keep what they name."""
    from medcf.io import Provenance, load_radiograph, write_synthetic
    from medcf.io.deidentify import DeidOption, PseudonymTable, deidentify_dataset

    radiograph = load_radiograph(cohort["studies"]["a"])
    written = write_synthetic(radiograph, radiograph.display, Provenance(method="test"), tmp_path / "w")

    def prepared():
        ds = pydicom.dcmread(written.dicom_path)
        ds.OperatorsName, ds.InstitutionName, ds.StationName = "SMITH^ANNE", "St. Example Hospital", "XR-ROOM-2"
        ds.add_new(0x60003000, "OW", b"\0" * 8)  # Overlay Data: removed (X, group 60xx)
        ds.add_new(0x00090010, "LO", "ACME private")
        ds.add_new(0x00091001, "LO", "DOE^JANE")
        return ds

    table = PseudonymTable(tmp_path / "map.json")
    ds = prepared()
    done = deidentify_dataset(ds, table, "ANON-1", [])
    assert "OperatorsName" not in ds and "InstitutionName" not in ds and "StationName" not in ds
    assert 0x60003000 not in ds and 0x00091001 not in ds and 0x00090010 not in ds and ds.PatientSex == ""
    assert "PatientAge" not in ds and ds.PatientName == "ANON-1"
    assert [c.CodeValue for c in ds.DeidentificationMethodCodeSequence] == ["113100", "113105"]
    assert ds.StudyInstanceUID == table.uids[str(written.dataset.StudyInstanceUID)] == done.remapped[
        str(written.dataset.StudyInstanceUID)]
    again = prepared()
    deidentify_dataset(again, table, "ANON-1", [DeidOption.RETAIN_INSTITUTION_IDENTITY,
                                                DeidOption.RETAIN_DEVICE_IDENTITY])
    assert again.InstitutionName == "St. Example Hospital" and again.StationName == "XR-ROOM-2"
    assert again.SOPInstanceUID == ds.SOPInstanceUID  # the same table gives the same UIDs
    assert [c.CodeValue for c in again.DeidentificationMethodCodeSequence] == ["113100", "113105", "113112", "113109"]


@pytest.mark.integration
def test_study_list_on_a_server_is_fetched_and_an_unfetchable_study_is_a_failed_item(cohort, tiny_model, orthanc,
                                                                                   tmp_path):
    from medcf.io.pacs import send

    send([cohort["studies"]["a"], cohort["studies"]["c"]], orthanc["dimse"], allow_non_synthetic=True)
    accession = str(pydicom.dcmread(cohort["studies"]["c"] / "pa.dcm", stop_before_pixels=True).AccessionNumber)
    listing = tmp_path / "list.csv"
    listing.write_text(f"study,accession\n{cohort['uids']['a']},\n,{accession}\n1.2.3.4.999,\n")
    out = tmp_path / "out"
    args = [listing, "--server", orthanc["dimse"], "--cache-dir", tmp_path / "cache", "--finding", "cardiomegaly",
            "--action", "add", "--model", tiny_model, *EDIT, "--out", out]
    first = medcf("batch", *args)
    assert first.returncode == 1, first.stderr
    lines = manifest(out)
    assert sorted(line["status"] for line in lines) == ["done", "done", "failed"]
    done = {line["key"].split("/")[0] for line in lines if line["status"] == "done"}
    assert done == {cohort["uids"]["a"], cohort["uids"]["c"]}  # named by the fetched studies' own UIDs
    failed = next(line for line in lines if line["status"] == "failed")
    assert failed["key"].startswith("1.2.3.4.999/") and "no study matches" in failed["error"]
    again = medcf("batch", *args)
    assert again.returncode == 1 and "2 done before, 0 done now, 1 failed" in again.stdout
    bare = tmp_path / "bare.csv"
    bare.write_text("study\n1.2.3.4.5\n")
    refused = medcf("batch", bare, "--finding", "cardiomegaly", "--action", "add", "--out", tmp_path / "x")
    assert refused.returncode == 2 and "needs --server URL" in refused.stderr and refused.stderr.count("\n") == 1


@pytest.mark.integration
def test_pull_fetches_listed_studies_into_the_cache_and_reports_the_rest(cohort, orthanc, tmp_path):
    from medcf.io.pacs import send

    send([cohort["studies"]["b"]], orthanc["dimse"], allow_non_synthetic=True)
    source = pydicom.dcmread(cohort["studies"]["b"] / "pa.dcm")
    listing = tmp_path / "list.csv"
    listing.write_text(f"study\n{cohort['uids']['b']}\n1.2.3.4.998\n")
    cache = tmp_path / "cache"
    done = medcf("pull", listing, f"{orthanc['web']}/studies/{cohort['uids']['b']}", "--server", orthanc["dimse"],
                 "--cache-dir", cache)
    assert done.returncode == 1 and "not fetched: " in done.stderr and "1.2.3.4.998" in done.stderr
    fetched = [line.split("\t") for line in done.stdout.strip().splitlines()]
    assert len(fetched) == 2 and {Path(f).name for f, _ in fetched} == {cohort["uids"]["b"]}
    copy = pydicom.dcmread(Path(fetched[0][0]) / f"{source.SOPInstanceUID}.dcm")
    assert copy.PixelData == source.PixelData
    bad = medcf("pull", cohort["studies"]["b"], "--cache-dir", cache)
    assert bad.returncode == 2 and "is not a study address" in bad.stderr


@pytest.mark.integration  # a chain of medcf subprocesses
def test_from_report_makes_one_edit_per_finding_and_lists_reports_with_none(cohort, tiny_model, tmp_path):
    reports = cohort["root"] / "reports.csv"
    with open(reports, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["study", "report"])
        writer.writerow([cohort["uids"]["a"], "Small left pleural effusion.\nThe heart is enlarged."])
        writer.writerow(["c", "No acute cardiopulmonary abnormality."])  # a path relative to the table
    out = tmp_path / "out"
    done = medcf("batch", cohort["root"], "--from-report", reports, "--action", "add", "--model", tiny_model, *EDIT,
                 "--out", out)
    assert done.returncode == 0, done.stderr
    assert "1 report(s) state no present, certain finding to add (--from-report line(s) 4)" in done.stderr
    a = cohort["uids"]["a"]
    assert_exactly_once(out, {f"{a}/add-pleural_effusion-left-defaultzone-mild-regulated-seed0",
                              f"{a}/add-cardiomegaly-noside-defaultzone-moderate-regulated-seed0"})
    record = json.loads(next(out.glob(f"{a}/add-pleural_effusion-*/edit.json")).read_text())
    assert record["extra"]["report"] == {"evidence": "Small left pleural effusion.", "finding": "pleural_effusion",
                                         "side": "left", "zone": None, "severity": "mild"}
    again = medcf("batch", cohort["root"], "--from-report", reports, "--action", "add", "--model", tiny_model, *EDIT,
                  "--out", out)
    assert again.returncode == 0 and "2 done before, 0 done now" in again.stdout
    # De-identified: the report's own words stay out of the export.
    private = tmp_path / "private"
    private.mkdir()
    anonymous = tmp_path / "anonymous"
    done = medcf("batch", cohort["root"], "--from-report", reports, "--action", "add", "--model", tiny_model, *EDIT,
                 "--deidentify", "--deid-map", private / "map.json", "--out", anonymous)
    assert done.returncode == 0, done.stderr
    records = [json.loads(p.read_text()) for p in anonymous.glob("*/*/edit.json")]
    assert len(records) == 2 and all("evidence" not in r["extra"]["report"] for r in records)
    assert not any(b"Small left pleural" in p.read_bytes() or b"heart is enlarged" in p.read_bytes()
                   for p in anonymous.rglob("*") if p.is_file())
    # Bad requests: one line, nothing written.
    for args, message in (
        (["--from-report", reports, "--finding", "nodule", "--action", "add"], "--from-report excludes --finding"),
        (["--from-report", reports], "--action add|remove is required with --from-report"),
        (["--from-report", cohort["root"] / "missing.csv", "--action", "add"], "missing.csv: no such file"),
    ):
        bad = medcf("batch", *args, "--model", tiny_model, "--out", tmp_path / "bad")
        assert bad.returncode == 2 and message in bad.stderr and bad.stderr.count("\n") == 1, (args, bad.stderr)
        assert not (tmp_path / "bad").exists()


@pytest.mark.integration
def test_a_query_source_fetches_every_study_it_matches_over_dimse_and_dicomweb(orthanc, tmp_path):
    import uuid

    from medcf.io.pacs import send

    patient = f"Q-{uuid.uuid4().hex[:6]}"  # the server is shared by this module's tests: a patient of its own
    studies = [small_study(tmp_path / "q" / name, patient, "QUERY^PATIENT") for name in ("a", "b", "old")]
    old = pydicom.dcmread(studies[2] / "pa.dcm")
    old.StudyDate = "19990101"
    old.save_as(studies[2] / "pa.dcm")
    send(studies, orthanc["dimse"], allow_non_synthetic=True)
    uids = [str(pydicom.dcmread(s / "pa.dcm", stop_before_pixels=True).StudyInstanceUID) for s in studies]
    for query, expected in ((f"{orthanc['dimse']}/?PatientID={patient}", uids),
                            (f"{orthanc['web']}/studies?PatientID={patient}", uids),
                            (f"{orthanc['dimse']}/?PatientID={patient}&StudyDate=20000101-", uids[:2]),
                            (f"{orthanc['web']}/studies?PatientID={patient}&StudyDate=20000101-", uids[:2])):
        done = medcf("pull", query, "--cache-dir", tmp_path / "cache", "--quiet")
        assert done.returncode == 0, done.stderr
        fetched = [line.split("\t") for line in done.stdout.strip().splitlines()]
        assert sorted(Path(folder).name for folder, _ in fetched) == sorted(expected), (query, done.stdout)
        assert {address.rsplit("/", 1)[1] for _, address in fetched} == set(expected)  # each by its own UID
    nothing = medcf("pull", f"{orthanc['dimse']}/?PatientID=NOBODY-{patient}", "--cache-dir", tmp_path / "cache")
    assert nothing.returncode == 1 and "no study matches" in nothing.stderr and not nothing.stdout.strip()


@pytest.mark.integration
def test_pull_by_c_move_listens_as_our_ae_and_gets_the_same_bytes(orthanc, tmp_path):
    from medcf.io.pacs import send

    study = small_study(tmp_path / "moved", "M-001", "MOVE^PATIENT")
    send([study], orthanc["dimse"], allow_non_synthetic=True)
    source = pydicom.dcmread(study / "pa.dcm")
    address = f"{orthanc['dimse']}/{source.StudyInstanceUID}"
    done = medcf("pull", address, "--move-port", orthanc["move_port"], "--cache-dir", tmp_path / "cache", "--quiet")
    assert done.returncode == 0, done.stderr
    folder = Path(done.stdout.strip().split("\t")[0])
    assert pydicom.dcmread(folder / f"{source.SOPInstanceUID}.dcm").PixelData == source.PixelData
    # A port the server does not send to: the move fails in one line, the study is reported, exit 1.
    wrong = medcf("pull", address, "--move-port", _free_port(), "--cache-dir", tmp_path / "other", "--quiet")
    assert wrong.returncode == 1 and "C-MOVE of study" in wrong.stderr and wrong.stderr.count("\n") == 1, wrong.stderr
    bad = medcf("pull", address, "--move-port", "70000", "--cache-dir", tmp_path / "other")
    assert bad.returncode == 2 and "--move-port 70000" in bad.stderr


@pytest.mark.integration  # a chain of medcf subprocesses
def test_plain_batch_runs_the_editor_on_the_device_and_dtype_asked_for(cohort, tiny_model, tmp_path):
    """``--device``/``--dtype`` reach the editor of a batch without Ray as they do ``medcf edit``
    (one recipe for both), and an absent GPU is one line before anything is written."""
    out = tmp_path / "out"
    done = medcf("batch", cohort["studies"]["a"], "--finding", "pleural_effusion", "--action", "add", "--side", "left",
                 "--model", tiny_model, *EDIT, "--device", "cpu", "--dtype", "bfloat16", "--out", out)
    assert done.returncode == 0, done.stderr
    record = json.loads(next(out.glob("*/*/edit.json")).read_text())
    assert record["extra"]["placement"] == {"device": "cpu", "dtype": "bfloat16", "autoencoder_dtype": "float32"}
    assert record["extra"]["anatomy"]["placement"]["dtype"] == "bfloat16"
    import torch

    if not torch.cuda.is_available():
        refused = medcf("batch", cohort["studies"]["a"], "--finding", "pleural_effusion", "--action", "add",
                        "--model", tiny_model, *EDIT, "--device", "cuda", "--out", tmp_path / "refused")
        assert refused.returncode == 2 and "no CUDA GPU" in refused.stderr and refused.stderr.count("\n") == 1
        assert not (tmp_path / "refused").exists()
