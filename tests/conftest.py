"""Shared fixtures: sample DICOM files of every encoding, the dciodvfy gate, and a real Orthanc."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
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


@pytest.fixture
def one_torch_thread():
    """Torch on one thread for this test, restored after. A training whose figure a test bounds
    must not depend on the machine's core count (the thread count splits each reduction, so its
    rounding and the trained network differ) nor on which test ran before it in this process
    (several module fixtures set one thread and leave it)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


def bad_inputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Inputs MedCF must refuse, each with the words its one-line error must hold."""
    pa = SampleSpec()
    cases: dict[str, tuple[Path, str]] = {}

    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    cases["not-dicom"] = (text, "is not a DICOM file")
    cases["missing"] = (tmp_path / "nowhere", "no such file or directory")

    def save(name: str, ds) -> Path:
        return save_sample(ds, tmp_path / name)

    ds, _ = make_sample(pa)
    ds.SOPClassUID, ds.Modality = "1.2.840.10008.5.1.4.1.1.2", "CT"
    cases["ct"] = (save("ct.dcm", ds), "CT object (CT Image Storage) is not a projection radiograph")

    ds, _ = make_sample(replace(pa, modality="SC"))
    frames = np.stack([ds.pixel_array] * 2)
    ds.NumberOfFrames, ds.PixelData = 2, frames.tobytes()
    cases["multi-frame"] = (save("mf.dcm", ds), "multi-frame image (2 frames); MedCF edits single-frame radiographs")

    ds, _ = make_sample(replace(pa, modality="SC", bits_stored=8))
    rgb = np.repeat(ds.pixel_array[..., None], 3, axis=2)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.PixelData = rgb.tobytes()
    cases["rgb"] = (save("rgb.dcm", ds), "colour image (RGB photometric interpretation, 3 samples per pixel)")

    ds, _ = make_sample(pa)
    del ds.PixelData
    cases["no-pixel-data"] = (save("nopix.dcm", ds), "no Pixel Data (7FE0,0010) in this instance")

    ds, _ = make_sample(pa)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.92"
    ds.PixelData = pydicom.encaps.encapsulate([b"\xff\x4f\xff\x51" + bytes(64)])
    path = tmp_path / "j2k-mc.dcm"
    ds.save_as(path, enforce_file_format=True)
    cases["no-decoder"] = (path, "no pixel decoder exists for transfer syntax JPEG 2000 Part 2 Multi-component Image Compression (Lossless Only) (1.2.840.10008.1.2.4.92)")
    return cases


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    from tests.orthanc_server import OrthancUnavailable, start_orthanc, stop_orthanc

    try:
        process, addresses = start_orthanc(tmp_path_factory.mktemp("orthanc") / "server")
    except OrthancUnavailable as error:
        pytest.fail(str(error))
    yield addresses
    stop_orthanc(process)
