"""``medcf_anatomy`` training: fine-tune MedCF's segmenter on the labels saved in the datastore.

Labels saved by a client (Slicer's or OHIF's "Submit Label", ``PUT /datastore/label`` with
tag ``final``) are the training set; the start is the current weights (the bundle's until a
first run). The work is ``medcf train segmenter-labels`` in MedCF's environment
(reproducible: seeded per step; docs/monailabel.md), writing into a new run folder of the
app's model folder with MedCF's ``training.json``; the run becomes current only when it
finished. The bundle's weights are never touched. Too few labels: refused before anything
starts, with how many there are and how many it takes.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import HTTPException
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.train import TrainTask

from lib.models import ModelStore
from lib.worker import MedCFWorker

DEFAULTS = {"max_steps": 100, "batch": 4, "learning_rate": 1e-4, "seed": 0}


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
        return {"current_run": current["run"] if current else None,
                "labelled_dice_after": current.get("labelled_dice_after") if current else None}

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        pairs = [{"image": item["image"], "label": item["label"]} for item in datastore.datalist()]
        if len(pairs) < self.min_labels:
            raise HTTPException(status_code=409, detail=f"not enough labels to train medcf_anatomy: {len(pairs)} "
                                f"saved, at least {self.min_labels} needed (label more films and submit them)")
        settings = {key: request.get(key, value) for key, value in DEFAULTS.items()}
        run = self.store.new_run(int(settings["seed"]))
        manifest = run / "labelled.json"
        manifest.write_text(json.dumps(pairs, indent=2), encoding="utf-8")
        args = ["train", "segmenter-labels", "--pairs", manifest, "--out", run / "weights", "--quiet",
                "--steps", int(settings["max_steps"]), "--batch", int(settings["batch"]),
                "--lr", float(settings["learning_rate"]), "--seed", int(settings["seed"]),
                "--min-labels", self.min_labels]
        start = self.store.current_weights()
        if start:
            args += ["--init", start]
        self.worker.run(args, "train")
        weights = run / "weights" / "anatomy_unet.safetensors"
        record = json.loads((run / "weights" / "training.json").read_text(encoding="utf-8"))
        summary = {"labels": len(pairs), "steps": record["recipe"]["steps"], "train_seconds": record["train_seconds"],
                   "labelled_dice_before": record["labelled_dice_before"],
                   "labelled_dice_after": record["labelled_dice_after"],
                   "initialised_from": record["initialised_from"]}
        return self.store.publish(run, weights, summary)
