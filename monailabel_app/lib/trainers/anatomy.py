"""``medcf_anatomy`` training: fine-tune MedCF's segmenter on the labels saved in the datastore.

Labels saved by a client (Slicer's or OHIF's "Submit Label", ``PUT /datastore/label`` with
tag ``final``) are the training set; the start is the current weights (the bundle's until a
first run). The work is ``medcf train segmenter-labels`` in MedCF's environment
(reproducible: seeded per step; docs/monailabel.md), writing into a new run folder of the
app's model folder with MedCF's ``training.json``; the run becomes current only when it
finished. The bundle's weights are never touched. Too few labels: refused before anything
starts, with how many there are and how many it takes.

``stats()`` is what MONAI Label's ``/info/`` puts under ``train_stats``, and what its Slicer
plugin reads: ``epoch`` / ``total_epochs`` for the training progress bar (here optimisation
steps: a fine-tune is a few hundred steps, not epochs), ``total_time`` once a run is finished
(the plugin then stops counting), and ``best_metric`` for its accuracy bar: the current
weights' mean Dice on the labelled films (not a held-out figure; 0 before a first run).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from fastapi import HTTPException
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.train import TrainTask

from lib.models import ModelStore
from lib.worker import MedCFWorker

DEFAULTS = {"max_steps": 100, "batch": 4, "learning_rate": 1e-4, "seed": 0}
#: the line ``medcf train segmenter-labels`` prints after each step (without --quiet)
STEP_LINE = re.compile(r"^step (\d+)/(\d+)\b")


def mean_dice(per_organ: dict[str, float] | None) -> float:
    """The plugin's one accuracy figure: the organs' mean Dice (0.0 when there is none)."""
    return round(sum(per_organ.values()) / len(per_organ), 4) if per_organ else 0.0


class AnatomyTrain(TrainTask):
    def __init__(self, worker: MedCFWorker, store: ModelStore, min_labels: int = 3):
        super().__init__("Fine-tune MedCF's lung/heart segmenter on the labels saved on this server "
                         f"(at least {min_labels}); new weights go to the app's model folder, never over the "
                         "bundle's")
        self.worker, self.store, self.min_labels = worker, store, min_labels

    def config(self) -> dict[str, Any]:
        return dict(DEFAULTS)

    def stats(self) -> dict[str, Any]:
        current = self.store.current()
        stats: dict[str, Any] = {
            "current_run": current["run"] if current else None,
            "labelled_dice_after": current.get("labelled_dice_after") if current else None,
            "best_metric": mean_dice(current.get("labelled_dice_after")) if current else 0.0,
        }
        running = self.store.progress()
        if running:  # no total_time while running: the plugin counts epochs until it appears
            return {**stats, "epoch": running["step"], "total_epochs": running["steps"],
                    "start_ts": running["start_ts"], "training_run": running["run"]}
        if current:
            return {**stats, "epoch": current["steps"], "total_epochs": current["steps"],
                    "total_time": current["train_seconds"]}
        return {**stats, "epoch": 0, "total_epochs": DEFAULTS["max_steps"]}

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        pairs = [{"image": item["image"], "label": item["label"]} for item in datastore.datalist()]
        if len(pairs) < self.min_labels:
            raise HTTPException(status_code=409, detail=f"not enough labels to train medcf_anatomy: {len(pairs)} "
                                f"saved, at least {self.min_labels} needed (label more films and submit them)")
        settings = {key: request.get(key, value) for key, value in DEFAULTS.items()}
        run = self.store.new_run(int(settings["seed"]))
        manifest = run / "labelled.json"
        manifest.write_text(json.dumps(pairs, indent=2), encoding="utf-8")
        steps = int(settings["max_steps"])
        args = ["train", "segmenter-labels", "--pairs", manifest, "--out", run / "weights",
                "--steps", steps, "--batch", int(settings["batch"]),
                "--lr", float(settings["learning_rate"]), "--seed", int(settings["seed"]),
                "--min-labels", self.min_labels]
        start = self.store.current_weights()
        if start:
            args += ["--init", start]
        started = time.time()

        def on_line(line: str) -> None:
            step = STEP_LINE.match(line)
            if step:
                self.store.write_progress(run.name, int(step.group(1)), int(step.group(2)), started)

        self.store.write_progress(run.name, 0, steps, started)
        try:
            self.worker.stream(args, "train", on_line)
        finally:
            self.store.clear_progress()
        weights = run / "weights" / "anatomy_unet.safetensors"
        record = json.loads((run / "weights" / "training.json").read_text(encoding="utf-8"))
        summary = {"labels": len(pairs), "steps": record["recipe"]["steps"], "train_seconds": record["train_seconds"],
                   "labelled_dice_before": record["labelled_dice_before"],
                   "labelled_dice_after": record["labelled_dice_after"],
                   "initialised_from": record["initialised_from"]}
        return self.store.publish(run, weights, summary)
