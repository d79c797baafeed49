"""The app's model folder: fine-tuned anatomy weights, one run folder each, and which is current.

The bundle's weights (``monai_bundle/models/anatomy_unet.safetensors``) are never
written: every training run gets a new folder ``<models>/medcf_anatomy/<run>/`` holding
the weights and MedCF's ``training.json``, and ``current.json`` names the run that infer
and the strategy use. ``current.json`` is replaced atomically (write beside, rename), so
a reader sees the old run or the new one, never half a file. No ``current.json``: the
bundle's weights.

``progress.json`` says how far a training run is while it runs (written by the trainer in
MONAI Label's background task process, read by the server's ``/info/`` for the Slicer
plugin's progress bar); it names the process that writes it, so a run that died leaves no
"running" state behind.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import psutil


class ModelStore:
    def __init__(self, root: str | Path, model: str):
        self.folder = Path(root) / model
        self.folder.mkdir(parents=True, exist_ok=True)

    @property
    def pointer(self) -> Path:
        return self.folder / "current.json"

    def current(self) -> dict | None:
        """The current run's record (``run``, ``weights``, ``training``), or None."""
        if not self.pointer.is_file():
            return None
        record = json.loads(self.pointer.read_text(encoding="utf-8"))
        return record if Path(record["weights"]).is_file() else None

    def current_weights(self) -> Path | None:
        record = self.current()
        return Path(record["weights"]) if record else None

    def new_run(self, seed: int) -> Path:
        """A new, empty run folder (never an existing one)."""
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        for attempt in range(1000):
            run = self.folder / f"{stamp}-seed{seed}" if attempt == 0 else self.folder / f"{stamp}-seed{seed}-{attempt}"
            try:
                run.mkdir(parents=True)
                return run
            except FileExistsError:
                continue
        raise RuntimeError(f"no free run folder under {self.folder}")

    def publish(self, run: Path, weights: Path, summary: dict) -> dict:
        """Make ``run`` current."""
        record = {"run": run.name, "weights": str(weights), "training": str(weights.parent / "training.json"), **summary}
        self._replace(self.pointer, record)
        return record

    def weights_key(self) -> str:
        """Which weights infer and the strategy use now, as a string that changes when they do:
        the current run's weights file with its size and time, or ``bundle``."""
        weights = self.current_weights()
        if weights is None:
            return "bundle"
        stat = weights.stat()
        return f"{weights}|{stat.st_size}|{stat.st_mtime_ns}"

    @property
    def progress_file(self) -> Path:
        return self.folder / "progress.json"

    def write_progress(self, run: str, step: int, steps: int, started: float) -> None:
        """Record that ``run`` has done ``step`` of ``steps`` (atomically, like ``current.json``)."""
        self._replace(self.progress_file, {"run": run, "step": step, "steps": steps, "start_ts": started,
                                           "pid": os.getpid()})

    def progress(self) -> dict | None:
        """The running training's progress, or None (none running, or its process is gone)."""
        try:
            record = json.loads(self.progress_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return record if psutil.pid_exists(int(record.get("pid", -1))) else None

    def clear_progress(self) -> None:
        self.progress_file.unlink(missing_ok=True)

    def _replace(self, path: Path, record: dict) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".json", dir=self.folder)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(record, handle, indent=2)
        os.replace(tmp, path)
