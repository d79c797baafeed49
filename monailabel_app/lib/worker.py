"""Hand MedCF's work to MedCF's own environment and bring back its files.

The server runs in ``.venv-monailabel`` (MONAI Label 0.8.5: pydicom 2, numpy 1); MedCF
needs pydicom 3 and numpy 2. So every segmentation, edit, score and fine-tune runs as
``<MedCF python> -m medcf ...`` in a subprocess: the same commands a user runs, with the
same one-line errors, and nothing of MedCF's logic copied into the app.

Where MedCF's Python is: ``$MEDCF_PYTHON``, else ``<repository>/.venv/bin/python`` (the
environment ``make install`` creates next to this app). ``$MEDCF_PYTHONPATH``, when set, is
the worker's ``PYTHONPATH`` (a checkout that is not installed); otherwise the worker gets
no ``PYTHONPATH``, so the server's own paths (which MONAI Label extends with the app
folder) never leak into MedCF's interpreter.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

from fastapi import HTTPException

logger = logging.getLogger(__name__)

REPOSITORY = Path(__file__).resolve().parents[2]
#: seconds a worker may take, per kind of job (diffusion edits on a CPU take minutes)
DEFAULT_TIMEOUTS = {"anatomy": 300.0, "score": 900.0, "counterfactual": 1800.0, "train": 3600.0}


class MedCFWorker:
    """Runs ``python -m medcf ARGS`` in MedCF's environment."""

    def __init__(self, python: str | None = None, timeouts: dict[str, float] | None = None):
        self.python = python or os.environ.get("MEDCF_PYTHON") or str(REPOSITORY / ".venv" / "bin" / "python")
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
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise HTTPException(status_code=504, detail=f"MedCF {kind} took longer than {timeout:g} s "
                                f"(raise it with -c timeout_{kind} SECONDS)") from None
        if done.returncode != 0:
            lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
            message = lines[-1] if lines else f"medcf exited with status {done.returncode}"
            status = 422 if done.returncode == 2 else 500
            raise HTTPException(status_code=status, detail=message)
        return done.stdout
