"""``medcf_least_sure``: the next film to annotate is the one the segmenter is least sure of.

``medcf anatomy-score`` (MedCF's environment, the app's current weights) ranks the
unlabelled films: masks that fail MedCF's plausibility rules first (more failed rules
first), then the network's confidence, lowest first. One worker call scores every film not
scored yet, so the model loads once.

Scores are kept per film (:class:`ScoreCache`): a second "Next Sample" scores only the films
it has not seen, and never fetches the others again (on a DICOMweb archive, asking for a
film's file downloads its series). A film's score is dropped when its label state changes
(labelled, or its label removed) and every score is dropped when the weights change (a
training run became current, or ``current.json`` was removed); the cache lives as long as
the server process, so a new MedCF version behind the same server starts from scratch.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.strategy import Strategy

from lib.models import ModelStore
from lib.worker import MedCFWorker

logger = logging.getLogger(__name__)


def sureness(record: dict) -> tuple:
    """Sort key, least sure first: the rule of ``medcf.anatomy.score.sureness`` (the server
    cannot import MedCF; a test in MedCF's environment checks the two agree)."""
    failed = len(record["failed"]) + (100 if record["error"] else 0)
    confidence = record["confidence"] if record["confidence"] is not None else 1.0
    return (-failed, confidence, record["input"])


@dataclass
class ScoreCache:
    """Each film's score under one set of weights and one set of labelled films."""

    weights: str | None = None
    labelled: frozenset[str] = frozenset()
    scores: dict[str, dict] = field(default_factory=dict)  # film id -> anatomy-score record

    def refresh(self, weights: str, labelled: frozenset[str]) -> None:
        """Forget what no longer holds: everything under other weights, a film whose label
        state changed."""
        if weights != self.weights:
            if self.scores:
                logger.info("least-sure cache: weights changed, %d score(s) dropped", len(self.scores))
            self.scores.clear()
            self.weights = weights
        for image in labelled ^ self.labelled:
            self.scores.pop(image, None)
        self.labelled = labelled


class LeastSure(Strategy):
    def __init__(self, worker: MedCFWorker, store: ModelStore):
        super().__init__("The unlabelled film MedCF's segmenter is least sure of (plausibility rules, then "
                         "confidence)")
        self.worker, self.store = worker, store
        self.cache = ScoreCache()
        self._lock = threading.Lock()  # one scoring at a time: two clients must not score the same films twice

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any] | None:
        with self._lock:
            return self._pick(datastore)

    def _pick(self, datastore: Datastore) -> dict[str, Any] | None:
        images = datastore.get_unlabeled_images()
        if not images:
            return None
        self.cache.refresh(self.store.weights_key(), frozenset(datastore.get_labeled_images()))
        missing = [image for image in images if image not in self.cache.scores]
        if missing:
            by_path = {str(Path(datastore.get_image_uri(image))): image for image in missing}
            args = ["anatomy-score", *by_path]
            weights = self.store.current_weights()
            if weights:
                args += ["--weights", weights]
            for record in json.loads(self.worker.run(args, "score")):
                self.cache.scores[by_path[record["input"]]] = record
        logger.info("least-sure: %d film(s) scored now, %d from the cache", len(missing), len(images) - len(missing))
        ranked = sorted(((image, self.cache.scores[image]) for image in images), key=lambda pair: sureness(pair[1]))
        first_id, first = ranked[0]
        return {"id": first_id, "confidence": first["confidence"], "plausible": first["plausible"],
                "failed_rules": first["failed"], "error": first["error"], "scored_now": len(missing),
                "ranking": [{"id": image, "confidence": r["confidence"], "failed_rules": r["failed"]}
                            for image, r in ranked]}
