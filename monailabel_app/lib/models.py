"""The app's model folder: fine-tuned anatomy weights, one run folder each, and which is current.

The bundle's weights (``monai_bundle/models/anatomy_unet.safetensors``) are never
written: every training run gets a new folder ``<models>/medcf_anatomy/<run>/`` holding
the weights and MedCF's ``training.json``, and ``current.json`` names the run that infer
and the strategy use. ``current.json`` is replaced atomically (write beside, rename), so
a reader sees the old run or the new one, never half a file. No ``current.json``: the
bundle's weights.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path


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
        fd, tmp = tempfile.mkstemp(prefix=".current.", suffix=".json", dir=self.folder)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(record, handle, indent=2)
        os.replace(tmp, self.pointer)
        return record
