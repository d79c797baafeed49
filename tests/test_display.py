"""Stored values -> display space: every encoding a CR/DX/SC source may use.

Each sample carries the display image a correct reader must produce, computed
forward from the stored values with the textbook formulas (samples.py), so
these tests compare MedCF against an independent expectation.
"""

from __future__ import annotations

import numpy as np
import pytest

from medcf.io import load_radiograph, radiograph_from_dataset
from medcf.io.display import pixel_spacing
from medcf.io.samples import SampleSpec, make_sample
from medcf.vocab import Photometric, SpacingSource

M1, M2 = Photometric.MONOCHROME1, Photometric.MONOCHROME2

CASES = {
    "mono2-12bit-window": SampleSpec(),
    "mono1-12bit-window": SampleSpec(photometric=M1),
    "mono1-plut-inverse": SampleSpec(photometric=M1, presentation_lut_shape="INVERSE", modality="DX"),
    "mono2-plut-inverse": SampleSpec(photometric=M2, presentation_lut_shape="INVERSE", modality="DX"),
    "mono2-plut-identity": SampleSpec(photometric=M2, presentation_lut_shape="IDENTITY", modality="DX"),
    "10bit": SampleSpec(bits_stored=10),
    "14bit-rescale": SampleSpec(bits_stored=14, rescale=(0.5, -1024.0)),
    "15bit-signed": SampleSpec(bits_stored=15, signed=True),
    "16bit-sigmoid": SampleSpec(bits_stored=16, voi="sigmoid"),
    "multiple-windows": SampleSpec(voi="windows", photometric=M1),
    "narrow-window-linear-exact": SampleSpec(voi="narrow-window"),
    "voi-lut-sequence": SampleSpec(voi="lut", photometric=M1),
    "voi-lut-signed": SampleSpec(voi="lut", signed=True, bits_stored=12),
    "no-voi": SampleSpec(voi="none", bits_stored=14),
    "8bit-sc": SampleSpec(modality="SC", bits_stored=8),
    "rle": SampleSpec(transfer_syntax="rle", photometric=M1),
    "jpeg-ls-16bit": SampleSpec(transfer_syntax="jpeg-ls", bits_stored=16),
    "jpeg-ls-near-lossless": SampleSpec(transfer_syntax="jpeg-ls-near"),
    "jpeg2000-lossless-signed": SampleSpec(transfer_syntax="jpeg2000", signed=True, bits_stored=14),
    "jpeg2000-lossy": SampleSpec(transfer_syntax="jpeg2000-lossy", photometric=M1),
    "jpeg-baseline-8bit": SampleSpec(transfer_syntax="jpeg-baseline", bits_stored=8, modality="SC"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_display_matches_independent_expectation(name: str) -> None:
    ds, expected = make_sample(CASES[name])
    radiograph = radiograph_from_dataset(ds)
    assert radiograph.display.dtype == np.float32
    assert radiograph.display.shape == (CASES[name].rows, CASES[name].columns)
    assert float(radiograph.display.min()) >= 0.0 and float(radiograph.display.max()) <= 1.0
    np.testing.assert_allclose(radiograph.display, expected, atol=2e-6)


def test_polarity_makes_monochrome1_and_monochrome2_look_alike() -> None:
    """The same chest stored as MONOCHROME1 and MONOCHROME2 displays the same way:
    lungs dark, spine bright."""
    mono1 = radiograph_from_dataset(make_sample(SampleSpec(photometric=M1))[0])
    mono2 = radiograph_from_dataset(make_sample(SampleSpec(photometric=M2))[0])
    assert mono1.transform.inverted and not mono2.transform.inverted
    np.testing.assert_allclose(mono1.display, mono2.display, atol=1.0 / 4095 + 1e-6)
    rows, cols = mono2.shape
    lung = mono2.display[rows * 45 // 100, cols * 30 // 100]
    spine = mono2.display[rows * 45 // 100, cols // 2]
    assert spine > lung + 0.2


def test_stored_pixels_are_kept_untouched() -> None:
    ds, _ = make_sample(SampleSpec(photometric=M1, bits_stored=12))
    radiograph = radiograph_from_dataset(ds)
    assert radiograph.stored.dtype == np.uint16
    assert int(radiograph.stored.max()) <= 4095
    assert not np.shares_memory(radiograph.stored, radiograph.display)


def test_first_of_multiple_windows_is_used_and_said() -> None:
    ds, _ = make_sample(SampleSpec(voi="windows"))
    radiograph = radiograph_from_dataset(ds)
    assert radiograph.transform.voi.startswith("Window Center/Width 2048/4096")
    assert any('used the first "FULL"' in note for note in radiograph.transform.notes)


def test_monochrome1_with_identity_shape_is_noted_not_inverted_twice() -> None:
    ds, expected = make_sample(SampleSpec(photometric=M1, modality="DX"))
    ds.PresentationLUTShape = "IDENTITY"
    radiograph = radiograph_from_dataset(ds)
    np.testing.assert_allclose(radiograph.display, expected, atol=2e-6)
    assert any("contradicts MONOCHROME1" in note for note in radiograph.transform.notes)


@pytest.mark.parametrize(
    "source",
    [SpacingSource.PIXEL_SPACING, SpacingSource.IMAGER_PIXEL_SPACING,
     SpacingSource.NOMINAL_SCANNED_PIXEL_SPACING, SpacingSource.NONE],
)
def test_spacing_and_its_source(source: SpacingSource) -> None:
    ds, _ = make_sample(SampleSpec(spacing=source, spacing_mm=0.168))
    spacing, found = pixel_spacing(ds)
    assert found is source
    assert spacing == (None if source is SpacingSource.NONE else (0.168, 0.168))


def test_pixel_spacing_wins_over_imager_pixel_spacing() -> None:
    ds, _ = make_sample(SampleSpec(spacing=SpacingSource.IMAGER_PIXEL_SPACING, spacing_mm=0.15))
    ds.PixelSpacing = [0.139, 0.14]
    assert pixel_spacing(ds) == ((0.139, 0.14), SpacingSource.PIXEL_SPACING)


def test_full_size_matrix_loads(sample_file) -> None:
    """3000x3000 16-bit: loads correctly (speed is measured by benchmarks/bench_io.py)."""
    path, expected = sample_file(SampleSpec(rows=3000, columns=3000, bits_stored=16, transfer_syntax="jpeg-ls"))
    radiograph = load_radiograph(path)
    assert radiograph.shape == (3000, 3000)
    np.testing.assert_allclose(radiograph.display, expected, atol=2e-6)
