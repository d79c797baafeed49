"""Hand MedCF's work to MedCF's own environment and bring back its files.

The server runs in ``.venv-monailabel`` (MONAI Label 0.8.5: pydicom 2, numpy 1); MedCF
needs pydicom 3 and numpy 2. So every segmentation, edit, score and fine-tune runs as
``<MedCF python> -m medcf ...`` in a subprocess: the same commands a user runs, with the
same one-line errors, and nothing of MedCF's logic copied into the app.

Where MedCF's Python is: ``$MEDCF_PYTHON``, else the ``.venv`` environment ``make install``
creates next to this app (``.venv/bin/python``; on Windows ``.venv\\Scripts\\python.exe``).
``$MEDCF_PYTHONPATH``, when set, is the worker's ``PYTHONPATH`` (a checkout that is not
installed); otherwise the worker gets
no ``PYTHONPATH``, so the server's own paths (which MONAI Label extends with the app
folder) never leak into MedCF's interpreter. On Windows the worker runs without a console
window (``CREATE_NO_WINDOW``), so a server started from a desktop shortcut does not flash one
per request.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from fastapi import HTTPException

logger = logging.getLogger(__name__)

REPOSITORY = Path(__file__).resolve().parents[2]
#: seconds a worker may take, per kind of job (diffusion edits on a CPU take minutes)
DEFAULT_TIMEOUTS = {"anatomy": 300.0, "score": 900.0, "counterfactual": 1800.0, "train": 3600.0}
#: ``subprocess`` flags: no console window per worker on Windows (0 elsewhere)
CREATION_FLAGS = getattr(subprocess, "CREATE_NO_WINDOW", 0) if sys.platform == "win32" else 0


def default_python(repository: Path = REPOSITORY, windows: bool = sys.platform == "win32") -> Path:
    """The python of ``<repository>/.venv``: ``Scripts\\python.exe`` on Windows, ``bin/python`` elsewhere."""
    venv = repository / ".venv"
    return venv / "Scripts" / "python.exe" if windows else venv / "bin" / "python"


class MedCFWorker:
    """Runs ``python -m medcf ARGS`` in MedCF's environment."""

    def __init__(self, python: str | None = None, timeouts: dict[str, float] | None = None):
        self.python = python or os.environ.get("MEDCF_PYTHON") or str(default_python())
        self.timeouts = {**DEFAULT_TIMEOUTS, **(timeouts or {})}
        if not Path(self.python).is_file():
            raise RuntimeError(f"MedCF's Python not found at {self.python}: run `make install` in {REPOSITORY}, "
                               "or set MEDCF_PYTHON to the python of an environment where MedCF is installed")

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        if os.environ.get("MEDCF_PYTHONPATH"):
            env["PYTHONPATH"] = os.environ["MEDCF_PYTHONPATH"]
        return env

    def run(self, args: list[str], kind: str) -> str:
        """stdout of ``medcf ARGS``; a refusal or failure becomes an HTTP error carrying
        MedCF's own one-line message (422: the input; 504: too slow; 500: anything else)."""
        command = [self.python, "-m", "medcf", *map(str, args)]
        timeout = self.timeouts[kind]
        logger.info("MedCF worker: %s", " ".join(command))
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=self.environment(),
                                  stdin=subprocess.DEVNULL, creationflags=CREATION_FLAGS)
        except subprocess.TimeoutExpired:
            raise self._too_slow(kind, timeout) from None
        _check(done.returncode, done.stderr)
        return done.stdout

    def stream(self, args: list[str], kind: str, on_line: Callable[[str], None]) -> str:
        """Like :meth:`run`, but hands each stdout line to ``on_line`` as MedCF prints it (a
        training's ``step k/N`` lines: the trainer's progress); returns the whole stdout."""
        command = [self.python, "-m", "medcf", *map(str, args)]
        timeout = self.timeouts[kind]
        logger.info("MedCF worker: %s", " ".join(command))
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   env=self.environment(), stdin=subprocess.DEVNULL, creationflags=CREATION_FLAGS)
        errors: list[str] = []
        reader = threading.Thread(target=lambda: errors.append(process.stderr.read()), daemon=True)
        reader.start()  # stderr drained beside stdout, so a chatty worker never blocks on a full pipe
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            process.kill()

        timer = threading.Timer(timeout, expire)
        timer.start()
        lines: list[str] = []
        try:
            for line in process.stdout:
                lines.append(line)
                on_line(line.rstrip("\n"))
            process.wait()
        finally:
            timer.cancel()
            reader.join()
        if expired.is_set():
            raise self._too_slow(kind, timeout)
        _check(process.returncode, "".join(errors))
        return "".join(lines)

    @staticmethod
    def _too_slow(kind: str, timeout: float) -> HTTPException:
        return HTTPException(status_code=504, detail=f"MedCF {kind} took longer than {timeout:g} s "
                             f"(raise it with -c timeout_{kind} SECONDS)")


def _check(returncode: int, stderr: str) -> None:
    """A failed worker as an HTTP error carrying MedCF's own last line (422: the input, 500: else)."""
    if returncode != 0:
        lines = [line for line in stderr.strip().splitlines() if line.strip()]
        message = lines[-1] if lines else f"medcf exited with status {returncode}"
        raise HTTPException(status_code=422 if returncode == 2 else 500, detail=message)
