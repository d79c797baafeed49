"""Shared fixtures: sample DICOM files of every encoding, and the dciodvfy gate."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from medcf.io.samples import SampleSpec, make_sample, save_sample


@pytest.fixture
def sample_file(tmp_path: Path):
    """Factory: write a sample for a SampleSpec and return (path, expected display)."""
    counter = {"n": 0}

    def make(spec: SampleSpec | None = None, name: str | None = None, **overrides):
        counter["n"] += 1
        ds, expected = make_sample(spec or SampleSpec())
        for keyword, value in overrides.items():
            setattr(ds, keyword, value)
        path = tmp_path / "inputs" / (name or f"sample{counter['n']:03d}.dcm")
        save_sample(ds, path)
        return path, expected

    return make


def require_tool(name: str) -> str:
    """Return the tool's path; the test fails (never skips) when it is missing,
    because `make test` installs it (scripts/install-system-deps.sh)."""
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed; run `make system-deps` (Debian: dicom3tools, dcmtk)")
    return found


def jpeg_lossless(path: Path, out: Path, selection_value_1: bool = True) -> Path:
    """Re-encode a DICOM file as JPEG Lossless with dcmtk (no Python encoder exists)."""
    tool = require_tool("dcmcjpeg")
    flag = "+e1" if selection_value_1 else "+el"
    subprocess.run([tool, flag, str(path), str(out)], check=True, capture_output=True)
    return out
