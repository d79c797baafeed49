"""Shared fixtures: sample DICOM files of every encoding, the dciodvfy gate, and a real Orthanc."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
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


DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    binary = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None)
    if binary is None or not Path(DICOMWEB_PLUGIN).exists():
        pytest.fail("Orthanc with its DICOMweb plugin is not installed; run `make system-deps`")
    root = tmp_path_factory.mktemp("orthanc")
    http_port, dicom_port, move_port = _free_port(), _free_port(), _free_port()
    config = {
        "Name": "MedCF-test", "StorageDirectory": str(root / "db"), "IndexDirectory": str(root / "db"),
        "HttpPort": http_port, "DicomPort": dicom_port, "DicomAet": "ORTHANC",
        "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
        "DicomModalities": {"medcf": ["MEDCF", "127.0.0.1", move_port]},  # where C-MOVE sends to MEDCF
        "DicomAlwaysAllowEcho": True, "DicomAlwaysAllowStore": True, "DicomCheckCalledAet": False,
        "Plugins": [DICOMWEB_PLUGIN], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (root / "config.json").write_text(json.dumps(config))
    log = open(root / "orthanc.log", "w")
    process = subprocess.Popen([binary, str(root / "config.json")], stdout=log, stderr=log, cwd=root)
    http = f"http://127.0.0.1:{http_port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{http}/system", timeout=1).read()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"Orthanc did not start: {(root / 'orthanc.log').read_text()[-2000:]}")
            time.sleep(0.2)
    yield {"dimse": f"dicom://ORTHANC@127.0.0.1:{dicom_port}", "web": f"{http}/dicom-web", "http": http,
           "move_port": move_port}
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()
