"""The one training engine every MedCF trainer runs on (generator, autoencoder, segmenter,
judge, causal factors): a run folder with atomic checkpoints and resume, seeds and threads
for determinism, the learning-rate schedules, the EMA copy, a progress bar and a time limit.

A run owns one output folder::

    run.json                      recipe: options, data, seed, versions, hardware (written once)
    log.jsonl                     one line per logged step
    checkpoints/step-NNNNNNN.pt   written atomically, the last :data:`KEEP_CHECKPOINTS` kept

Every trainer draws the batch of step ``s`` from a generator seeded by ``(seed, s)`` only,
so a run resumed from a checkpoint sees the batches an uninterrupted one would, and ends
with the same weights.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from medcf.errors import InputError, OutputError
from medcf.io.atomic import write_new_file, write_new_text

KEEP_CHECKPOINTS = 3


class RunFolder:
    """A training run's folder: refuses to start over a run unless resuming, and refuses to
    resume where there is nothing to resume from."""

    def __init__(self, folder: str | Path, resume: bool) -> None:
        self.folder = Path(folder)
        self.checkpoints = self.folder / "checkpoints"
        if self.folder.exists() and not self.folder.is_dir():
            raise OutputError(f"{self.folder} is a file, not a run folder")
        if not resume and self.folder.exists() and any(self.folder.iterdir()):
            raise OutputError(f"{self.folder} is not empty: pass --resume to continue that run, or choose a new --out")
        if resume and not self.latest():
            raise InputError(f"--resume: no checkpoint in {self.checkpoints}")
        self.checkpoints.mkdir(parents=True, exist_ok=True)

    def latest(self) -> Path | None:
        """The newest checkpoint, or None."""
        found = sorted(self.checkpoints.glob("step-*.pt")) if self.checkpoints.is_dir() else []
        return found[-1] if found else None

    def resume_state(self, resume: bool) -> dict | None:
        """The newest checkpoint's state when resuming, else None."""
        return load_checkpoint(self.latest()) if resume else None

    def save(self, step: int, state: dict) -> Path:
        """Write ``state`` as the checkpoint of ``step`` (atomically) and drop all but the newest few."""
        path = write_new_file(self.checkpoints / f"step-{step:07d}.pt", lambda tmp: torch.save(state, tmp))
        for old in sorted(self.checkpoints.glob("step-*.pt"))[:-KEEP_CHECKPOINTS]:
            old.unlink(missing_ok=True)
        return path

    def log(self, **values) -> None:
        with open(self.folder / "log.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(values) + "\n")

    def write_recipe(self, recipe: dict) -> None:
        """``run.json``, once: a resumed run keeps the recipe it started with."""
        path = self.folder / "run.json"
        if not path.exists():
            write_new_text(path, json.dumps(recipe, indent=2) + "\n")


def newest_checkpoint(folder: str | Path, kind: str, hint: str) -> tuple[Path, dict]:
    """The newest checkpoint of the run in ``folder`` and its state, which must be of ``kind``
    (``hint``: what to run first when there is none)."""
    folder = Path(folder)
    found = sorted((folder / "checkpoints").glob("step-*.pt")) if (folder / "checkpoints").is_dir() else []
    if not found:
        raise InputError(f"{folder} holds no {kind} checkpoint (checkpoints/step-*.pt); {hint}")
    state = load_checkpoint(found[-1])
    if state.get("kind") != kind:
        raise InputError(f"{found[-1]} is not a {kind} checkpoint")
    return found[-1], state


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as error:
        raise InputError(f"cannot read checkpoint {path}: {' '.join(str(error).split())[:200]}") from None


def hardware() -> dict:
    """What the run ran on, for its recipe (timings mean little without it)."""
    return {"machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version(), "torch": torch.__version__}


def seed_and_device(seed: int, threads: int) -> torch.device:
    """Seed torch and numpy's global generators and fix torch's CPU threads (``threads`` > 0):
    CPU sums are split by thread, so the same run under another thread count differs in the
    last bits. Returns the device to train on."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    if threads > 0:
        torch.set_num_threads(threads)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def step_generator(seed: int, step: int) -> torch.Generator:
    """The torch generator of step ``step``: a function of ``(seed, step)`` only (resume)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


# --- learning-rate schedules ------------------------------------------------------------------


def warmup_lr(step: int, base: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then constant."""
    return base * min(1.0, (step + 1) / max(1, warmup))


def cosine_lr(step: int, base: float, total: int) -> float:
    """Cosine decay from ``base`` at step 0 to 0 at ``total``."""
    return base * 0.5 * (1 + np.cos(np.pi * step / total))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's rate to ``lr`` times the group's ``lr_scale`` (default 1)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


# --- EMA, progress, time limit --------------------------------------------------------------


def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """Move the EMA copy's parameters toward the model's: ``ema ← decay·ema + (1 − decay)·model``."""
    with torch.no_grad():
        for target, source in zip(ema.parameters(), model.parameters()):
            target.lerp_(source, 1.0 - decay)


def ema_decay(step: int, ceiling: float) -> float:
    """The EMA's decay at ``step``: small at first (the early weights are not worth keeping),
    rising toward ``ceiling``."""
    return min(ceiling, (1 + step) / (10 + step))


def progress_bar(total: int, initial: int, desc: str, enabled: bool):
    """A tqdm bar over the run's steps, starting at the resumed step."""
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="step", disable=not enabled)


class Deadline:
    """``--max-minutes``: a run stops (with a checkpoint) once this much wall time has passed;
    ``--resume`` continues it. ``minutes`` None: no limit (0: stop after the first step)."""

    def __init__(self, minutes: float | None) -> None:
        self.minutes = minutes
        self.started = time.perf_counter()

    def passed(self) -> bool:
        return self.minutes is not None and time.perf_counter() - self.started > 60 * float(self.minutes)

    def seconds(self) -> float:
        return time.perf_counter() - self.started


def due(step: int, every: int, total: int) -> bool:
    """Whether ``step`` (counted after the update) is a checkpoint or log step."""
    return step % every == 0 or step == total
