"""Store, query and retrieve against a real Orthanc (Debian package), by DIMSE and DICOMweb.

Orthanc (the ``orthanc`` fixture of conftest.py) runs on loopback ports chosen at random,
with a throw-away database, for the duration of this module.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medcf.errors import InputError, OutputError
from medcf.io import Provenance, load_radiograph, write_synthetic
from medcf.io.pacs import fetch_study, parse_remote, send
from medcf.io.samples import write_sample_study


@pytest.fixture(scope="module")
def stored_study(orthanc, tmp_path_factory):
    folder = tmp_path_factory.mktemp("study")
    paths = write_sample_study(folder, rows=256, columns=224)
    header = pydicom.dcmread(paths[0], stop_before_pixels=True)
    result = subprocess.run([sys.executable, "-m", "medcf", "send", str(folder), "--to", orthanc["dimse"],
                             "--allow-non-synthetic"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"sent 3 instance(s) to {orthanc['dimse']}"
    return {"paths": paths, "study": str(header.StudyInstanceUID), "accession": str(header.AccessionNumber)}


def _medcf(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medcf", *args], capture_output=True, text=True)


@pytest.mark.integration
def test_inspect_study_on_server_by_uid_and_by_accession(orthanc, stored_study, tmp_path: Path) -> None:
    for address in (f"{orthanc['dimse']}/{stored_study['study']}",
                    f"{orthanc['dimse']}/?AccessionNumber={stored_study['accession']}"):
        result = _medcf("inspect", address, "--cache-dir", str(tmp_path / "cache"), "--json")
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert len(report["instances"]) == 3
        selected = next(i for i in report["instances"] if i["sop_instance_uid"] == report["selected"])
        assert selected["view"] == "PA" and selected["modality"] == "CR"


@pytest.mark.integration
def test_dicomweb_retrieval_keeps_the_stored_encoding(orthanc, stored_study, tmp_path: Path) -> None:
    folder = fetch_study(f"{orthanc['web']}/studies/{stored_study['study']}", tmp_path)
    fetched = {str(pydicom.dcmread(p).SOPInstanceUID): p for p in folder.glob("*.dcm")}
    assert len(fetched) == 3
    for original in stored_study["paths"]:
        source = pydicom.dcmread(original)
        copy = pydicom.dcmread(fetched[str(source.SOPInstanceUID)])
        assert copy.file_meta.TransferSyntaxUID == source.file_meta.TransferSyntaxUID
        np.testing.assert_array_equal(copy.pixel_array, source.pixel_array)


@pytest.mark.parametrize("protocol", ["dimse", "web"])
@pytest.mark.integration
def test_synthetic_series_goes_back_to_the_server(orthanc, stored_study, protocol: str, tmp_path: Path) -> None:
    source = load_radiograph(fetch_study(f"{orthanc['dimse']}/{stored_study['study']}", tmp_path / "in"))
    written = write_synthetic(source, source.display, Provenance(method=f"send-{protocol}"), tmp_path / "out",
                              keep_study=True)
    report = send([written.dicom_path], orthanc[protocol])
    assert report.sent == 1
    back = fetch_study(f"{orthanc['dimse']}/{stored_study['study']}", tmp_path / "back")
    copy = pydicom.dcmread(back / f"{written.dataset.SOPInstanceUID}.dcm")
    assert copy.SyntheticData == "YES" and copy.SeriesDescription.startswith("SYNTHETIC")
    assert f"method=send-{protocol}" in copy.DerivationDescription


@pytest.mark.integration
def test_send_refuses_objects_not_marked_synthetic(orthanc, stored_study) -> None:
    with pytest.raises(OutputError, match="is not marked Synthetic Data = YES"):
        send(stored_study["paths"][:1], orthanc["dimse"])
    result = _medcf("send", str(stored_study["paths"][0]), "--to", orthanc["web"])
    assert result.returncode == 2 and result.stderr.count("\n") == 1


@pytest.mark.integration
def test_ambiguous_or_empty_queries(orthanc, stored_study, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no study matches"):
        fetch_study(f"{orthanc['dimse']}/?AccessionNumber=NOPE", tmp_path)
    with pytest.raises(InputError, match="names no study"):
        parse_remote(f"{orthanc['web']}/studies")


@pytest.mark.parametrize(
    "address, message",
    [
        ("dicom://ORTHANC@127.0.0.1:9/1.2.3", "did not accept an association from MEDCF"),
        ("http://127.0.0.1:9/dicom-web/studies/1.2.3", "cannot reach http://127.0.0.1:9/dicom-web"),
        ("dicom://127.0.0.1:104/1.2.3", "is not a DICOM address"),
        ("dicom://A@127.0.0.1:104/1.2.x", "is not a valid Study Instance UID"),
        ("dicom://A@127.0.0.1:104/?Modality=CR", "unknown query key(s) Modality"),
    ],
)
def test_bad_addresses_are_one_line_errors(address: str, message: str) -> None:
    result = _medcf("inspect", address)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr
