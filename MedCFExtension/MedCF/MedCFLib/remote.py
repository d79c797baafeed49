"""Remote mode: the edit runs on MedCF's MONAI Label server (``monailabel_app/``, model
``medcf_counterfactual``) instead of in a local process (no Slicer, no Qt, standard library only).

:class:`RemoteEdit` has the interface of :class:`MedCFLib.process.BackgroundEdit` (``start``,
``poll`` -> ``(state, percent, message)``, ``wait``, ``cancel``, ``result``, ``out_dir``), so the
module's timer, progress bar, Cancel button and result loading are the same code for both modes.
It uploads the film (the file ``medcf`` would read locally) with the edit's params and
``"series": true``, and unpacks the answer, a zip of everything ``medcf edit`` wrote on the server
(``edit.json``, the counterfactual or the synthetic DICOM series, masks, panel), into ``out_dir``:
the same folder a local run leaves, so :func:`MedCFLib.mrml.result_volume` loads either.

What differs from a local run, said plainly: the server segments the film with its own current
weights (its ``medcf_counterfactual`` takes no masks, so a corrected segmentation is not sent);
there is no progress while the server works (MONAI Label answers once, at the end); and Cancel
stops waiting and keeps nothing, but the server finishes the job it was given (MONAI Label has no
way to cancel an inference).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from pathlib import Path

from .domain import REFUSAL_EXIT as REFUSED_EXIT
from .process import CANCELLED, FAILED, FINISHED, RUNNING, classify_outputs

MODEL = "medcf_counterfactual"
#: the MONAI Label release whose REST API this client speaks; sent as ``client_version`` so that a
#: server of another minor release refuses in one line (monailabel_app/lib/versions.py)
MONAI_LABEL_API = "0.8.5"


class RemoteError(Exception):
    """The server could not be reached or refused the work; one line."""


def _detail(error: urllib.error.HTTPError) -> str:
    """MONAI Label's (FastAPI's) error ``detail``, else the status line."""
    try:
        body = error.read()
        detail = json.loads(body).get("detail")
        if detail:
            return str(detail).splitlines()[0]
    except (ValueError, AttributeError, OSError):
        pass
    return f"HTTP {error.code} {error.reason}"


def _multipart(fields: dict[str, str], files: dict[str, Path]) -> tuple[bytes, str]:
    boundary = f"medcf-{uuid.uuid4().hex}"
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, path in files.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{path.name}"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + path.read_bytes() + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def server_info(url: str, timeout: float = 30) -> dict:
    """``GET /info/`` of a MONAI Label server; refuses in one line if it does not serve
    ``medcf_counterfactual``."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/info/", timeout=timeout) as response:
            info = json.loads(response.read())
    except urllib.error.HTTPError as error:
        raise RemoteError(f"MONAI Label server {url}: {_detail(error)}") from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise RemoteError(f"cannot reach a MONAI Label server at {url}: {reason}") from None
    if MODEL not in (info.get("models") or {}):
        raise RemoteError(f"the server at {url} ({info.get('name', 'unnamed app')}) has no {MODEL} model: "
                          "is it MedCF's MONAI Label app (make monailabel-server)?")
    return info


class RemoteEdit:
    """One counterfactual on a MONAI Label server; see the module docstring."""

    def __init__(self, url: str, input_file: str | os.PathLike, options: dict[str, str | None],
                 out_dir: str | os.PathLike, timeout_s: float = 1900, api_version: str = MONAI_LABEL_API):
        self.url = url.rstrip("/")
        self.input_file = Path(input_file)
        # the app's params are the schema's names (allow_out_of_domain), the panel's the flags' (allow-out-of-domain)
        self.params = {k.replace("-", "_"): v for k, v in options.items() if v is not False and v not in (None, "", "-")}
        self.params.update(series=True, client_version=api_version)
        self.out_dir = Path(out_dir)
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._state, self._percent = RUNNING, 0.0
        self._message = "not started"
        self._cancelled = False
        self._thread: threading.Thread | None = None
        self._written: list[str] = []
        self.returncode: int | None = None  # 2 once the server refused the input (HTTP 422), as medcf exits

    def start(self) -> "RemoteEdit":
        if self._thread is not None:
            raise RuntimeError("this edit was already started")
        if not self.input_file.is_file():
            raise RemoteError(f"{self.input_file}: no such file to send")
        if self.out_dir.exists() and (not self.out_dir.is_dir() or any(self.out_dir.iterdir())):
            raise RemoteError(f"{self.out_dir} is not empty: give a new or empty folder")
        if not self.url.startswith(("http://", "https://")):
            raise RemoteError(f"{self.url!r} is not a server address (http://HOST:PORT)")
        self._message = f"sending {self.input_file.name} to {self.url}"
        self._thread = threading.Thread(target=self._work, daemon=True)
        self._thread.start()
        return self

    def _set(self, state: str | None = None, percent: float | None = None, message: str | None = None) -> None:
        with self._lock:
            if state is not None:
                self._state = state
            if percent is not None:
                self._percent = max(self._percent, percent)
            if message is not None:
                self._message = message

    def _work(self) -> None:
        try:
            server_info(self.url)
            body, content_type = _multipart({"params": json.dumps(self.params)}, {"file": self.input_file})
            request = urllib.request.Request(f"{self.url}/infer/{MODEL}?output=image", data=body, method="POST",
                                             headers={"Content-Type": content_type})
            self._set(percent=5.0, message=f"medcf edit is running on {self.url} (no progress until it answers)")
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                answer = response.read()
            if self._cancelled:
                return
            self._set(percent=95.0, message="unpacking the server's answer")
            self._publish(answer)
            self._set(FINISHED, 100.0, "finished")
        except urllib.error.HTTPError as error:
            if error.code == 422:  # the app's answer to medcf's exit 2: the input was refused, in one line
                self.returncode = REFUSED_EXIT
            self._set(FAILED, message=f"MONAI Label server: {_detail(error)}")
        except RemoteError as error:
            self._set(FAILED, message=str(error))
        except (urllib.error.URLError, OSError, zipfile.BadZipFile) as error:
            self._set(FAILED, message=f"remote edit on {self.url} failed: {getattr(error, 'reason', error)}")

    def _publish(self, answer: bytes) -> None:
        """Unpack into a sibling folder, then move it into place: ``out_dir`` appears complete or not at all."""
        try:
            archive = zipfile.ZipFile(io.BytesIO(answer))
        except zipfile.BadZipFile:
            raise RemoteError("the server's answer is not the zip of an edit (is its medcf_counterfactual "
                              "MedCF's, with \"series\" support?)") from None
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{self.out_dir.name}-", dir=self.out_dir.parent))
        try:
            for member in archive.namelist():
                target = (staging / member).resolve()
                if not str(target).startswith(str(staging.resolve()) + os.sep):
                    raise RemoteError(f"the server's answer holds a path outside the folder: {member}")
            archive.extractall(staging)
            if not (staging / "edit.json").is_file():
                raise RemoteError("the server's answer holds no edit.json")
            with self._lock:  # a cancel either comes first (nothing is kept) or after the result is complete
                if self._cancelled:
                    return
                if self.out_dir.is_dir():
                    self.out_dir.rmdir()  # new or empty (checked at start)
                staging.rename(self.out_dir)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        record = json.loads((self.out_dir / "edit.json").read_text(encoding="utf-8"))
        self._written = [str(self.out_dir / name) for name in (record.get("files") or {}).values()]
        self._written.append(str(self.out_dir / "edit.json"))

    def poll(self) -> tuple[str, float, str]:
        with self._lock:
            if self._cancelled:
                return CANCELLED, self._percent, "cancelled"
            return self._state, (100.0 if self._state == FINISHED else self._percent), self._message

    def wait(self, timeout: float | None = None) -> tuple[str, float, str]:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.poll()

    def cancel(self) -> None:
        """Stop waiting for the server and keep nothing it sends (the server finishes its job)."""
        with self._lock:
            if self._state != RUNNING:
                return
            self._cancelled = True

    def result(self) -> dict[str, str]:
        """The written files by kind (dicom, image, panel, provenance), as for a local run."""
        state, _, message = self.poll()
        if state != FINISHED:
            raise RuntimeError(f"no result: the remote edit is {state} ({message})")
        files, _ = classify_outputs(self._written)
        return files
