"""Synthetic DICOM output: dicom.md's marks, dciodvfy-clean, geometry kept, nothing lost."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medcf.errors import OutputError
from medcf.io import Provenance, load_radiograph, radiograph_from_dataset, write_synthetic
from medcf.io.atomic import write_new_text
from medcf.io.samples import SampleSpec, make_sample, save_sample
from medcf.vocab import OutputSOPClass, Photometric, SpacingSource, ViewPosition
from tests.conftest import jpeg_lossless
from tests.dicom_validation import assert_valid_dicom

M1, M2 = Photometric.MONOCHROME1, Photometric.MONOCHROME2

SOURCES = {
    "cr-mono1-10bit": SampleSpec(modality="CR", photometric=M1, bits_stored=10),
    "cr-mono1-12bit-jpegls": SampleSpec(modality="CR", photometric=M1, bits_stored=12, transfer_syntax="jpeg-ls"),
    "cr-mono2-14bit-j2k": SampleSpec(modality="CR", photometric=M2, bits_stored=14, transfer_syntax="jpeg2000"),
    "cr-mono2-15bit-signed-rle": SampleSpec(modality="CR", bits_stored=15, signed=True, transfer_syntax="rle"),
    "dx-mono1-16bit-lut": SampleSpec(modality="DX", photometric=M1, bits_stored=16, voi="lut",
                                     presentation_lut_shape="INVERSE", spacing=SpacingSource.PIXEL_SPACING),
    "dx-processing-ap": SampleSpec(modality="DXP", view=ViewPosition.AP),
    "sc-8bit-jpeg-baseline": SampleSpec(modality="SC", bits_stored=8, transfer_syntax="jpeg-baseline",
                                        spacing=SpacingSource.NOMINAL_SCANNED_PIXEL_SPACING),
    "cr-lossy-j2k": SampleSpec(modality="CR", photometric=M1, transfer_syntax="jpeg2000-lossy"),
}


def _edit(display: np.ndarray) -> np.ndarray:
    """A stand-in edit: brighten a disc in the left lower lung (image right)."""
    rows, cols = display.shape
    y, x = np.mgrid[0:rows, 0:cols]
    disc = ((y - 0.65 * rows) ** 2 + (x - 0.68 * cols) ** 2) < (0.1 * rows) ** 2
    out = display.copy()
    out[disc] = np.clip(out[disc] + 0.25, 0, 1)
    return out


def _provenance(**overrides) -> Provenance:
    fields = dict(method="test-disc", finding="pleural_effusion", action="add", side="left", zone="lower",
                  severity="moderate", strength=1.0, seed=7, model_name="none", weights_sha256="0" * 64)
    fields.update(overrides)
    return Provenance(**fields)


@pytest.fixture(params=sorted(SOURCES))
def source(request, tmp_path: Path):
    ds, _ = make_sample(SOURCES[request.param])
    path = save_sample(ds, tmp_path / "in" / f"{request.param}.dcm")
    return load_radiograph(path)


@pytest.mark.parametrize("sop_class", list(OutputSOPClass))
def test_written_objects_are_valid_and_marked_synthetic(source, sop_class, tmp_path: Path) -> None:
    edited = _edit(source.display)
    written = write_synthetic(source, edited, _provenance(), tmp_path / "out", sop_class=sop_class)
    assert_valid_dicom(written.dicom_path)

    ds = pydicom.dcmread(written.dicom_path)
    src = source.dataset
    assert ds.SyntheticData == "YES"
    assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"] and "COUNTERFACTUAL" in list(ds.ImageType)
    if sop_class is OutputSOPClass.SECONDARY_CAPTURE:
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and ds.ConversionType == "SYN"
    else:
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.1.1" and ds.PresentationIntentType == "FOR PRESENTATION"
    synthesizers = [item for item in ds.ContributingEquipmentSequence
                    if item.PurposeOfReferenceCodeSequence[0].CodeValue == "109100"]
    assert len(synthesizers) == 1
    purpose = synthesizers[0].PurposeOfReferenceCodeSequence[0]
    assert purpose.CodingSchemeDesignator == "DCM" and purpose.CodeMeaning == "Synthesizing Equipment"
    assert synthesizers[0].ManufacturerModelName == "MedCF" and synthesizers[0].SoftwareVersions
    acquisition = [item for item in ds.ContributingEquipmentSequence
                   if item.PurposeOfReferenceCodeSequence[0].CodeValue == "109101"]
    assert [item.Manufacturer for item in acquisition] == [src.Manufacturer]
    for text in ("weights_sha256=" + "0" * 64, "method=test-disc", "finding=pleural_effusion", "side=left",
                 "zone=lower", "severity=moderate", "strength=1", "seed=7"):
        assert text in ds.DerivationDescription
    (ref,) = ds.SourceImageSequence
    assert ref.ReferencedSOPInstanceUID == src.SOPInstanceUID and ref.ReferencedSOPClassUID == src.SOPClassUID
    assert ref.PurposeOfReferenceCodeSequence[0].CodeValue == "121322"
    assert ds.SeriesDescription.startswith("SYNTHETIC")
    assert ds.BurnedInAnnotation == "NO"
    for keyword in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"):
        assert ds[keyword].value != src[keyword].value
    assert ds.PatientID == src.PatientID and ds.PatientName == src.PatientName
    assert (ds.Rows, ds.Columns) == (src.Rows, src.Columns)
    assert ds.LossyImageCompression == src.get("LossyImageCompression", "00")

    # Geometry and pixels survive the round trip through MedCF's own reader.
    back = load_radiograph(written.dicom_path)
    assert back.shape == source.shape
    assert back.spacing_mm == source.spacing_mm
    np.testing.assert_allclose(back.display, edited, atol=1.0 / 65535)

    record = json.loads(written.provenance_path.read_text())
    assert record["source"]["sop_instance_uid"] == src.SOPInstanceUID
    assert record["output"]["sop_instance_uid"] == ds.SOPInstanceUID
    assert record["seed"] == 7 and "research only" in record["notice"]
    assert len(record["source"]["sha256"]) == 64


def test_jpeg_lossless_source_writes_valid_output(tmp_path: Path) -> None:
    ds, _ = make_sample(SampleSpec(photometric=M1, bits_stored=12))
    plain = save_sample(ds, tmp_path / "plain.dcm")
    source = load_radiograph(jpeg_lossless(plain, tmp_path / "jll.dcm"))
    written = write_synthetic(source, _edit(source.display), _provenance(), tmp_path / "out")
    assert_valid_dicom(written.dicom_path)


@pytest.mark.parametrize("compression", ["rle", "jpeg-ls", "jpeg2000"])
def test_compressed_output_is_valid_and_lossless(compression: str, tmp_path: Path) -> None:
    source = radiograph_from_dataset(make_sample(SampleSpec(photometric=M1))[0])
    edited = _edit(source.display)
    for sop_class in OutputSOPClass:
        written = write_synthetic(source, edited, _provenance(), tmp_path / sop_class.value,
                                  sop_class=sop_class, compression=compression)
        assert_valid_dicom(written.dicom_path)
        np.testing.assert_allclose(load_radiograph(written.dicom_path).display, edited, atol=1.0 / 65535)


def _pa(tmp_path: Path, **spec):
    ds, _ = make_sample(SampleSpec(**spec))
    return load_radiograph(save_sample(ds, tmp_path / "pa.dcm"))


def test_watermark_is_burned_outside_the_avoid_mask(tmp_path: Path) -> None:
    source = _pa(tmp_path)
    avoid = np.zeros(source.shape, bool)
    avoid[: source.shape[0] // 2, : source.shape[1] // 2] = True  # top-left quadrant is "lung"
    written = write_synthetic(source, source.display, _provenance(), tmp_path / "out", watermark=True,
                              watermark_avoid=avoid)
    assert_valid_dicom(written.dicom_path)
    ds = pydicom.dcmread(written.dicom_path)
    assert ds.BurnedInAnnotation == "YES"
    changed = np.abs(load_radiograph(written.dicom_path).display - source.display) > 1e-3
    assert changed.any() and not (changed & avoid).any()
    rows, cols = np.nonzero(changed)
    assert rows.max() < source.shape[0] * 0.15 and cols.min() > source.shape[1] * 0.5  # top-right corner


def test_keep_study_and_deidentify(tmp_path: Path) -> None:
    source = _pa(tmp_path)
    kept = pydicom.dcmread(write_synthetic(source, source.display, _provenance(), tmp_path / "a",
                                           keep_study=True).dicom_path)
    assert kept.StudyInstanceUID == source.dataset.StudyInstanceUID
    assert kept.AccessionNumber == source.dataset.AccessionNumber
    written = write_synthetic(source, source.display, _provenance(), tmp_path / "b", deidentify=True)
    from tests.dicom_validation import DEIDENTIFIED_WARNINGS

    assert_valid_dicom(written.dicom_path, DEIDENTIFIED_WARNINGS)  # the profile empties Study Date/Time/ID
    anon = pydicom.dcmread(written.dicom_path)
    assert anon.PatientIdentityRemoved == "YES"
    assert anon.PatientID != source.dataset.PatientID and "PHANTOM" not in str(anon.PatientName)
    assert not anon.get("PatientBirthDate")
    # the same PS3.15 Basic profile as medcf batch --deidentify: coded, with the option it keeps
    codes = [item.CodeValue for item in anon.DeidentificationMethodCodeSequence]
    assert codes[0] == "113100" and "113108" in codes and anon.PatientSex == source.dataset.PatientSex
    assert not anon.get("StudyDate") and not anon.get("AccessionNumber")
    source_uids = {str(source.dataset.SOPInstanceUID), str(source.dataset.StudyInstanceUID)}
    referenced = {str(item.ReferencedSOPInstanceUID) for item in anon.SourceImageSequence}
    assert not referenced & source_uids and str(anon.StudyInstanceUID) not in source_uids
    assert anon.SyntheticData == "YES" and str(anon.SeriesDescription).startswith("SYNTHETIC")
    assert written.dicom_path.name.startswith(str(anon.SOPInstanceUID))
    with pytest.raises(OutputError, match="cannot be combined"):
        write_synthetic(source, source.display, _provenance(), tmp_path / "c", keep_study=True, deidentify=True)


def test_images_can_share_a_series(tmp_path: Path) -> None:
    source = _pa(tmp_path)
    first = write_synthetic(source, source.display, _provenance(severity="mild"), tmp_path / "out")
    second = write_synthetic(source, _edit(source.display), _provenance(severity="severe"), tmp_path / "out",
                             series_instance_uid=first.dataset.SeriesInstanceUID, instance_number=2)
    assert second.dataset.SeriesInstanceUID == first.dataset.SeriesInstanceUID
    assert second.dataset.SOPInstanceUID != first.dataset.SOPInstanceUID


@pytest.mark.parametrize(
    "pixels, message",
    [
        (lambda d: np.full_like(d, np.nan), "NaN or infinite"),
        (lambda d: np.full_like(d, 0.5), "blank"),
        (lambda d: d[:-1], "geometry must match"),
        (lambda d: d * 3.0, "must lie in \\[0, 1\\]"),
        (lambda d: (d > 0.5).astype(np.float32), "saturated"),
        (lambda d: (d * 255).astype(np.uint8), "must be float display values"),
    ],
)
def test_bad_pixels_are_refused_and_nothing_is_written(tmp_path: Path, pixels, message: str) -> None:
    source = _pa(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(OutputError, match=message):
        write_synthetic(source, pixels(source.display), _provenance(), out)
    assert not out.exists() or not any(out.iterdir())


def test_dx_without_spacing_is_refused(tmp_path: Path) -> None:
    source = _pa(tmp_path, spacing=SpacingSource.NONE)
    with pytest.raises(OutputError, match="DX output requires Imager Pixel Spacing"):
        write_synthetic(source, source.display, _provenance(), tmp_path / "out",
                        sop_class=OutputSOPClass.DX_FOR_PRESENTATION)
    written = write_synthetic(source, source.display, _provenance(), tmp_path / "sc")
    assert_valid_dicom(written.dicom_path)


def test_never_overwrites_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "result.json"
    write_new_text(target, "first")
    with pytest.raises(OutputError, match="refusing to overwrite existing file"):
        write_new_text(target, "second")
    assert target.read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_input_is_never_touched(tmp_path: Path) -> None:
    source = _pa(tmp_path)
    before = source.path.read_bytes()
    write_synthetic(source, _edit(source.display), _provenance(), source.path.parent)
    assert source.path.read_bytes() == before


def test_provenance_rejects_bad_image_type_value() -> None:
    with pytest.raises(ValueError, match="1-16 characters"):
        Provenance(method="x", image_type_value="remove pleural effusion")


def test_outputs_get_ordinary_file_permissions(tmp_path):
    """Atomic writes go through a 0600 temp file; the published file must not stay private."""
    import os
    import stat

    from medcf.io.atomic import write_new_text

    old = os.umask(0o022)
    try:
        path = write_new_text(tmp_path / "out.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
