"""The Slicer module's adapter (MedCFExtension/MedCF/MedCFLib/logic.py), tested without Slicer."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medcf.io import radiograph_from_dataset
from medcf.io.samples import SampleSpec, make_sample
from medcf.vocab import SpacingSource

MODULE_DIR = Path(__file__).resolve().parents[1] / "MedCFExtension" / "MedCF"
sys.path.insert(0, str(MODULE_DIR))

from MedCFLib.logic import (  # noqa: E402
    CORONAL_IJK_TO_RAS,
    DEFAULT_SPACING_MM,
    EDIT_CHOICES,
    radiograph_to_volume_arrays,
)


def _radiograph(spec: SampleSpec):
    ds, _expected = make_sample(spec)
    return radiograph_from_dataset(ds)


def test_single_slice_float32_volume_in_kji_order():
    rad = _radiograph(SampleSpec(rows=96, columns=64, spacing_mm=0.2))
    array, spacing, origin, direction = radiograph_to_volume_arrays(rad)
    assert array.shape == (1, 96, 64)
    assert array.dtype == np.float32
    assert array.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(array[0], rad.display)
    assert 0.0 <= array.min() and array.max() <= 1.0
    assert spacing == pytest.approx((0.2, 0.2, 1.0))
    assert origin == (0.0, 0.0, 0.0)
    assert direction.shape == (3, 3)


def test_spacing_is_column_row_slice():
    rad = _radiograph(SampleSpec(rows=96, columns=64, spacing_mm=0.2))
    assert rad.spacing_mm == pytest.approx((0.2, 0.2))
    anisotropic = dataclasses.replace(rad, spacing_mm=(0.2, 0.3))  # (row, col) in DICOM order
    _, spacing, _, _ = radiograph_to_volume_arrays(anisotropic)
    assert spacing == pytest.approx((0.3, 0.2, 1.0))


def test_missing_spacing_falls_back_to_one_mm():
    rad = _radiograph(SampleSpec(rows=80, columns=72, spacing=SpacingSource.NONE))
    assert rad.spacing_mm is None
    volume = radiograph_to_volume_arrays(rad)
    assert volume.spacing_ijk == (DEFAULT_SPACING_MM, DEFAULT_SPACING_MM, DEFAULT_SPACING_MM) == (1.0, 1.0, 1.0)
    assert volume.array_kji.shape == (1, 80, 72)


def test_direction_is_a_right_handed_coronal_frame():
    direction = radiograph_to_volume_arrays(_radiograph(SampleSpec(rows=32, columns=40))).ijk_to_ras_direction
    np.testing.assert_array_equal(direction, CORONAL_IJK_TO_RAS)
    np.testing.assert_allclose(direction.T @ direction, np.eye(3))
    assert np.linalg.det(direction) == pytest.approx(1.0)
    i_axis, j_axis, k_axis = direction.T
    np.testing.assert_array_equal(i_axis, [-1, 0, 0])  # columns toward patient's left
    np.testing.assert_array_equal(j_axis, [0, 0, -1])  # rows toward the feet


def test_rejects_non_2d_display():
    rad = _radiograph(SampleSpec(rows=32, columns=40))
    with pytest.raises(ValueError, match="2-D"):
        radiograph_to_volume_arrays(dataclasses.replace(rad, display=np.zeros((2, 32, 40), np.float32)))


def test_importing_logic_does_not_import_slicer_or_qt():
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(MODULE_DIR)!r})\n"
        "import MedCFLib.logic, MedCFLib\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'slicer', 'qt', 'ctk', 'vtk', 'PythonQt', 'PyQt5', 'PySide2', 'PySide6'})\n"
        "print(bad)\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr + result.stdout
    assert result.stdout.strip() == "[]"


def test_edit_choices_are_the_library_vocabularies():
    from medcf.editing.spec import Method
    from medcf.vocab import Action, Finding, Severity, Side, Zone

    expected = {"finding": Finding, "action": Action, "side": Side, "zone": Zone, "severity": Severity,
                "method": Method}
    for name, enum in expected.items():
        assert set(EDIT_CHOICES[name]) - {"-"} == {m.value for m in enum}, name
