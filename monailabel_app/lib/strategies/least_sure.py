"""``medcf_least_sure``: the next film to annotate is the one the segmenter is least sure of.

``medcf anatomy-score`` (MedCF's environment, the app's current weights) ranks the
unlabelled films: masks that fail MedCF's plausibility rules first (more failed rules
first), then the network's confidence, lowest first. One worker call scores them all, so
the model loads once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.strategy import Strategy

from lib.models import ModelStore
from lib.worker import MedCFWorker


class LeastSure(Strategy):
    def __init__(self, worker: MedCFWorker, store: ModelStore):
        super().__init__("The unlabelled film MedCF's segmenter is least sure of (plausibility rules, then "
                         "confidence)")
        self.worker, self.store = worker, store

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any] | None:
        images = datastore.get_unlabeled_images()
        if not images:
            return None
        by_path = {str(Path(datastore.get_image_uri(image))): image for image in images}
        args = ["anatomy-score", *by_path]
        weights = self.store.current_weights()
        if weights:
            args += ["--weights", weights]
        ranked = json.loads(self.worker.run(args, "score"))
        first = ranked[0]
        return {"id": by_path[first["input"]], "confidence": first["confidence"], "plausible": first["plausible"],
                "failed_rules": first["failed"], "error": first["error"],
                "ranking": [{"id": by_path[r["input"]], "confidence": r["confidence"], "failed_rules": r["failed"]}
                            for r in ranked]}
