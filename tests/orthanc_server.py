"""A private Orthanc (DIMSE + DICOMweb) on loopback ports, for the tests and the cohort
benchmark: one launcher, so both talk to the same server configuration."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.waiting import Watch

DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


class OrthancUnavailable(RuntimeError):
    """Orthanc is not installed, or did not start (it exited, or stalled before answering)."""


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports free now: all are held open together while they are
    picked, since ports taken one at a time may repeat (it happened: Orthanc was given the
    same port for DICOM and HTTP and refused to start)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def start_orthanc(root: Path, name: str = "MedCF-test", aet: str = "ORTHANC",
                  tries: int = 3) -> tuple[subprocess.Popen, dict]:
    """Start Orthanc with its database under ``root``; returns the process and its addresses
    (``dimse``, ``web``, ``http``, and ``move_port``: where its C-MOVE sends to AE MEDCF).
    A port taken between picking it and Orthanc binding it (another test worker) is retried
    on new ports, up to ``tries`` times."""
    binary = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None)
    if binary is None or not Path(DICOMWEB_PLUGIN).exists():
        raise OrthancUnavailable("Orthanc with its DICOMweb plugin is not installed; run `make system-deps`")
    root.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, tries + 1):
        try:
            return _start(binary, root, name, aet)
        except OrthancUnavailable as error:
            if "already in use" not in str(error) or attempt == tries:
                raise


def _start(binary: str, root: Path, name: str, aet: str) -> tuple[subprocess.Popen, dict]:
    http_port, dicom_port, move_port = free_ports(3)
    config = {
        "Name": name, "StorageDirectory": str(root / "db"), "IndexDirectory": str(root / "db"),
        "HttpPort": http_port, "DicomPort": dicom_port, "DicomAet": aet,
        "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
        "DicomModalities": {"medcf": ["MEDCF", "127.0.0.1", move_port]},  # where C-MOVE sends to MEDCF
        "DicomAlwaysAllowEcho": True, "DicomAlwaysAllowStore": True, "DicomCheckCalledAet": False,
        "Plugins": [DICOMWEB_PLUGIN], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (root / "config.json").write_text(json.dumps(config))
    with open(root / "orthanc.log", "w") as log:
        process = subprocess.Popen([binary, str(root / "config.json")], stdout=log, stderr=log, cwd=root)
    http = f"http://127.0.0.1:{http_port}"
    # Not a wall-clock deadline: starting takes longer beside other jobs. It failed if Orthanc
    # exited, stalled (no CPU for a minute while not answering) or ran away (1-2 CPU s measured).
    progress = Watch([process.pid], cpu_budget=60, stall=60, what="Orthanc's start")
    while True:
        try:
            urllib.request.urlopen(f"{http}/system", timeout=1).read()
            break
        except OSError:
            why = "it exited" if process.poll() is not None else progress.problem()
            if why:
                process.kill()
                process.wait()
                raise OrthancUnavailable(f"Orthanc did not start ({why}): "
                                         f"{(root / 'orthanc.log').read_text()[-2000:]}") from None
            time.sleep(0.2)
    return process, {"dimse": f"dicom://{aet}@127.0.0.1:{dicom_port}", "web": f"{http}/dicom-web", "http": http,
                     "move_port": move_port}


def stop_orthanc(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
