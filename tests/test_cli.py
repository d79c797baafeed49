"""The command line as a user meets it: real processes, real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medcf.io.samples import write_sample_study
from tests.conftest import bad_inputs


def medcf(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medcf", *args], capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("study")
    write_sample_study(out, rows=320, columns=288)
    return out


def test_inspect_table_names_every_instance_and_the_choice(study: Path) -> None:
    result = medcf("inspect", str(study))
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "3 DICOM instance(s) in 3 series" in text
    for path in study.rglob("*.dcm"):
        assert str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID) in text
    assert "Would edit: " + str(study / "series-001-pa" / "IM0001.dcm") in text
    assert "Why: frontal by View Position (0018,5101) = PA" in text
    assert "JPEG-LS Lossless" in text and "MONOCHROME1" in text and "ImagerPixelSpacing" in text
    assert "Problems: none" in text


def test_inspect_json_is_one_document(study: Path) -> None:
    result = medcf("inspect", "--json", str(study))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["selected_path"].endswith("series-001-pa/IM0001.dcm")
    assert len(report["instances"]) == 3
    views = sorted(i["view"] for i in report["instances"])
    assert views == ["LL", "PA", "PA"]
    required = {"sop_instance_uid", "modality", "view", "rows", "columns", "bits_stored", "photometric",
                "transfer_syntax", "spacing_mm", "spacing_source", "problems"}
    assert all(required <= set(i) for i in report["instances"])


def test_inspect_of_several_paths(study: Path) -> None:
    result = medcf("inspect", str(study / "series-002-lateral"), str(study / "series-003-capture"))
    assert result.returncode == 0
    assert "series-003-capture" in result.stdout.split("Would edit: ")[1]


@pytest.mark.integration  # a chain of medcf subprocesses
def test_bad_input_gives_one_line_exit_2_and_writes_nothing(tmp_path: Path) -> None:
    cases = bad_inputs(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    for name, (path, message) in cases.items():
        result = medcf("inspect", str(path), cwd=tmp_path)
        assert result.returncode == 2, (name, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("medcf: error: "), (name, result.stderr)
        assert message in lines[0], (name, lines[0])
        assert "Traceback" not in result.stderr
    assert sorted(tmp_path.rglob("*")) == before


def test_sample_study_never_overwrites(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    first = medcf("sample-study", "--out", str(out), "--rows", "128", "--columns", "112")
    assert first.returncode == 0, first.stderr
    assert len(first.stdout.splitlines()) == 3
    snapshot = {p: p.read_bytes() for p in out.rglob("*.dcm")}
    second = medcf("sample-study", "--out", str(out), "--rows", "128", "--columns", "112")
    assert second.returncode == 2 and "refusing to overwrite existing file" in second.stderr
    assert {p: p.read_bytes() for p in out.rglob("*.dcm")} == snapshot


@pytest.mark.parametrize("command", [[], ["inspect"], ["sample-study"]])
def test_help_explains(command: list[str]) -> None:
    result = medcf(*command, "--help")
    assert result.returncode == 0
    assert "research only" in result.stdout
    assert len(result.stdout) > 300


def test_inspect_contact_sheet(study: Path, tmp_path: Path) -> None:
    from PIL import Image

    sheet = tmp_path / "sheet.png"
    result = medcf("inspect", str(study), "--png", str(sheet))
    assert result.returncode == 0, result.stderr
    picture = np.asarray(Image.open(sheet).convert("RGB"))
    assert picture.shape[1] > 3 * 300  # three thumbnails side by side
    frame = np.all(picture == [255, 196, 0], axis=-1)  # the selected image is framed
    assert frame.sum() > 1000 and np.nonzero(frame)[1].max() < picture.shape[1] / 3
    again = medcf("inspect", str(study), "--png", str(sheet))
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr
