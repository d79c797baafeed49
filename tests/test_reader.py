"""Finding the radiograph to edit, and refusing what is not one."""

from __future__ import annotations

import re

from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from medcf.errors import InputError
from medcf.io import inspect_study, load_radiograph
from medcf.io.samples import SampleSpec, make_sample, save_sample
from medcf.vocab import Photometric, SpacingSource, ViewPosition
from tests.conftest import bad_inputs, jpeg_lossless

PA = SampleSpec(view=ViewPosition.PA)
LATERAL = SampleSpec(view=ViewPosition.LL)


def _write(path: Path, spec: SampleSpec, **attrs) -> Path:
    ds, _ = make_sample(spec)
    for keyword, value in attrs.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return save_sample(ds, path)


# --- inputs of every shape ----------------------------------------------------


def test_single_file(sample_file) -> None:
    path, expected = sample_file(PA)
    radiograph = load_radiograph(path)
    assert radiograph.path == path
    assert radiograph.view is ViewPosition.PA
    np.testing.assert_allclose(radiograph.display, expected, atol=2e-6)


def test_study_folder_with_frontal_and_lateral_series(tmp_path: Path) -> None:
    study = generate_uid()
    _write(tmp_path / "s2" / "lat.dcm", LATERAL, StudyInstanceUID=study, SeriesNumber=2)
    pa = _write(tmp_path / "s1" / "pa.dcm", PA, StudyInstanceUID=study, SeriesNumber=1)
    (tmp_path / "s1" / "notes.txt").write_text("not dicom")
    inspection = inspect_study(tmp_path)
    assert len(inspection.instances) == 2
    assert inspection.selected is not None and inspection.selected.path == pa
    assert "View Position (0018,5101) = PA" in inspection.selection_reason
    assert "1 lateral view(s) left aside" in inspection.selection_reason
    assert [Path(p).name for p, _ in inspection.skipped] == ["notes.txt"]
    assert load_radiograph(tmp_path).path == pa


def test_list_of_files(tmp_path: Path) -> None:
    lat = _write(tmp_path / "lat.dcm", LATERAL)
    pa = _write(tmp_path / "pa.dcm", PA)
    assert load_radiograph([lat, pa]).path == pa


@pytest.mark.parametrize(
    "frontal_attrs, evidence",
    [
        ({"ViewPosition": None, "ViewCodeSequence": "PA"}, "View Code Sequence"),
        ({"ViewPosition": None}, "Patient Orientation (0020,0020) = L\\F"),
        ({"ViewPosition": None, "PatientOrientation": None, "SeriesDescription": "CHEST PA ERECT"}, "names PA"),
    ],
)
def test_frontal_found_without_view_position(tmp_path: Path, frontal_attrs: dict, evidence: str) -> None:
    attrs = dict(frontal_attrs)
    if attrs.get("ViewCodeSequence") == "PA":
        item = pydicom.Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "272479007", "SCT", "postero-anterior"
        attrs["ViewCodeSequence"] = [item]
    _write(tmp_path / "lat.dcm", LATERAL, ViewPosition=None, SeriesDescription="CHEST LAT")
    pa = _write(tmp_path / "pa.dcm", PA, **attrs)
    inspection = inspect_study(tmp_path)
    assert inspection.selected.path == pa
    assert evidence in inspection.selection_reason


def test_pa_preferred_over_ap_and_acquisition_over_capture(tmp_path: Path) -> None:
    _write(tmp_path / "a_ap.dcm", replace(PA, view=ViewPosition.AP))
    _write(tmp_path / "b_sc.dcm", replace(PA, modality="SC", bits_stored=8))
    _write(tmp_path / "c_proc.dcm", replace(PA, modality="DXP"))
    pa = _write(tmp_path / "d_pa.dcm", replace(PA, modality="DX"))
    inspection = inspect_study(tmp_path)
    assert inspection.selected.path == pa
    assert "preferred over 3 other candidate(s)" in inspection.selection_reason


def test_for_presentation_preferred_over_for_processing(tmp_path: Path) -> None:
    _write(tmp_path / "a.dcm", replace(PA, modality="DXP"))
    presentation = _write(tmp_path / "b.dcm", replace(PA, modality="DX"))
    assert inspect_study(tmp_path).selected.path == presentation


def test_only_lateral_is_refused_with_reason(tmp_path: Path) -> None:
    _write(tmp_path / "lat.dcm", LATERAL)
    with pytest.raises(InputError, match="only lateral views found.*LL.*frontal"):
        load_radiograph(tmp_path)


def test_jpeg_lossless_sources(sample_file, tmp_path: Path) -> None:
    """JPEG Lossless process 14 (SV1 and other predictors), encoded by dcmtk."""
    path, expected = sample_file(SampleSpec(photometric=Photometric.MONOCHROME1, bits_stored=12))
    for sv1, uid in ((True, "1.2.840.10008.1.2.4.70"), (False, "1.2.840.10008.1.2.4.57")):
        out = jpeg_lossless(path, tmp_path / f"jpegll-{sv1}.dcm", selection_value_1=sv1)
        assert str(pydicom.dcmread(out, stop_before_pixels=True).file_meta.TransferSyntaxUID) == uid
        np.testing.assert_allclose(load_radiograph(out).display, expected, atol=2e-6)


# --- refusals: one clear line each --------------------------------------------


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(InputError, match="no DICOM files found"):
        load_radiograph(tmp_path)


@pytest.mark.parametrize(
    "attrs, message",
    [
        ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.4", "Modality": "MR"}, r"MR object \(MR Image Storage\) is not a projection radiograph"),
        ({"BodyPartExamined": "KNEE"}, "Body Part Examined is KNEE, not a chest"),
    ],
)
def test_refused_objects(tmp_path: Path, attrs: dict, message: str) -> None:
    path = _write(tmp_path / "x.dcm", PA, **attrs)
    with pytest.raises(InputError, match=message):
        load_radiograph(path)


@pytest.mark.parametrize("case", ["not-dicom", "missing", "ct", "multi-frame", "rgb", "no-pixel-data", "no-decoder"])
def test_bad_inputs_are_refused_with_their_reason(tmp_path: Path, case: str) -> None:
    path, message = bad_inputs(tmp_path)[case]
    with pytest.raises(InputError, match=re.escape(message)):
        load_radiograph(path)


def test_missing_decoder_plugin_names_the_package(sample_file, monkeypatch, capsys) -> None:
    """When no installed plugin can decode the transfer syntax (pydicom's decoder
    reports itself unavailable), the message names the package to install, and
    the command line prints it without a traceback."""
    from pydicom.pixels import get_decoder

    from medcf.cli import main

    path, _ = sample_file(SampleSpec(transfer_syntax="jpeg-ls"))
    decoder = get_decoder(pydicom.uid.JPEGLSLossless)
    monkeypatch.setattr(type(decoder), "is_available", property(lambda self: False))
    with pytest.raises(InputError, match=r"no installed plugin decodes it; install pyjpegls \(pip install pyjpegls\)"):
        load_radiograph(path)
    assert main(["inspect", str(path)]) == 2
    captured = capsys.readouterr()
    assert "install pyjpegls" in captured.out and "Traceback" not in captured.err
    assert captured.err.count("\n") == 1 and captured.err.startswith("medcf: error: nothing to edit")


def test_inspect_reports_every_instance_field(tmp_path: Path) -> None:
    path = _write(tmp_path / "pa.dcm", replace(PA, photometric=Photometric.MONOCHROME1, bits_stored=14,
                                               transfer_syntax="jpeg2000", spacing=SpacingSource.PIXEL_SPACING,
                                               spacing_mm=0.139))
    (instance,) = inspect_study(path).instances
    record = instance.to_dict()
    assert record["modality"] == "CR" and record["view"] == "PA" and record["frontal"] is True
    assert record["rows"] == 256 and record["columns"] == 224
    assert record["bits_stored"] == 14 and record["bits_allocated"] == 16
    assert record["photometric"] == "MONOCHROME1"
    assert record["transfer_syntax_uid"] == "1.2.840.10008.1.2.4.90"
    assert record["spacing_mm"] == [0.139, 0.139] and record["spacing_source"] == "PixelSpacing"
    assert record["sop_instance_uid"] == str(pydicom.dcmread(path).SOPInstanceUID)
    assert record["editable"] is True and record["problems"] == []


def test_file_without_preamble_is_read(tmp_path: Path) -> None:
    """Old exports write the dataset without the 128-byte preamble and DICM prefix."""
    ds, expected = make_sample(PA)
    path = tmp_path / "raw.dcm"
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.save_as(path, implicit_vr=True, little_endian=True)  # no file meta, no preamble
    assert path.read_bytes()[128:132] != b"DICM"
    np.testing.assert_allclose(load_radiograph(path).display, expected, atol=2e-6)


def test_truncated_pixel_data_is_a_clear_error(tmp_path: Path) -> None:
    ds, _ = make_sample(PA)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    path = save_sample(ds, tmp_path / "short.dcm")
    with pytest.raises(InputError, match="pixel data of .*short.dcm could not be decoded"):
        load_radiograph(path)
