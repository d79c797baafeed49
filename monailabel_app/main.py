"""MedCF's MONAI Label app: anatomy that clinicians correct and the segmenter learns from,
and counterfactuals served.

A thin adapter: MONAI Label 0.8.5 runs here (its own environment, ``.venv-monailabel``),
and every piece of MedCF's work runs in MedCF's environment through ``lib/worker.py``.
Models: ``medcf_anatomy`` (segmentation infer + train), ``medcf_counterfactual`` (OTHERS: the
film), ``medcf_counterfactual_region`` (segmentation: the same edit's region, the form MONAI
Label's Slicer plugin lists); strategy ``medcf_least_sure``. Start: ``python -m monailabel_app``
(``monailabel_app/__main__.py``). See docs/monailabel.md.

App settings (``monailabel start_server ... -c KEY VALUE``):
- ``models_dir``: where fine-tuned weights go (default ``<app>/model``);
- ``min_labels``: labels needed before training (default 3);
- ``generator``: a model folder for counterfactuals instead of the bundle's default model;
- ``timeout_anatomy``, ``timeout_score``, ``timeout_counterfactual``, ``timeout_train``:
  seconds a worker job may take (defaults in lib/worker.py); ``dicomweb_timeout`` (120).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import monailabel
from fastapi import HTTPException
from monailabel.config import settings
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore

from lib.datastore import RadiographDatastore
from lib.infers.anatomy import AnatomyInfer
from lib.infers.counterfactual import CounterfactualInfer
from lib.infers.counterfactual_region import CounterfactualRegionInfer
from lib.legend import (ANATOMY_MODEL, APP_VERSION, COUNTERFACTUAL_MODEL, COUNTERFACTUAL_REGION_MODEL, LABELS,
                        STRATEGY)
from lib.models import ModelStore
from lib.strategies.least_sure import LeastSure
from lib.trainers.anatomy import AnatomyTrain
from lib.worker import DEFAULT_TIMEOUTS, MedCFWorker

logger = logging.getLogger(__name__)


class MedCFApp(MONAILabelApp):
    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]):
        conf = conf or {}
        timeouts = {kind: float(conf[f"timeout_{kind}"]) for kind in DEFAULT_TIMEOUTS if f"timeout_{kind}" in conf}
        self.worker = MedCFWorker(timeouts=timeouts)
        self.store = ModelStore(conf.get("models_dir") or os.path.join(app_dir, "model"), ANATOMY_MODEL)
        self.min_labels = int(conf.get("min_labels", 3))
        self.generator = conf.get("generator") or None
        self.dicomweb_timeout = float(conf.get("dicomweb_timeout", 120))
        super().__init__(app_dir=app_dir, studies=studies, conf=conf, name="MedCF",
                         description="MedCF: lung/heart anatomy to annotate and learn from; counterfactual chest "
                                     "radiographs. Synthetic output, research only, never for diagnosis.",
                         version=APP_VERSION, labels=dict(LABELS))

    def init_remote_datastore(self) -> Datastore:
        if settings.MONAI_LABEL_DATASTORE.lower() in ("xnat", "dsa"):
            return super().init_remote_datastore()
        logger.info("DICOMweb datastore for radiographs (CR, DX): %s", self.studies)
        return RadiographDatastore(self.studies, timeout=self.dicomweb_timeout)

    def init_infers(self) -> dict[str, Any]:
        return {
            ANATOMY_MODEL: AnatomyInfer(self.worker, self.store, monailabel.__version__),
            COUNTERFACTUAL_MODEL: CounterfactualInfer(self.worker, self.store, monailabel.__version__,
                                                      generator=self.generator),
            COUNTERFACTUAL_REGION_MODEL: CounterfactualRegionInfer(self.worker, self.store, monailabel.__version__,
                                                                   generator=self.generator),
        }

    def init_trainers(self) -> dict[str, Any]:
        return {ANATOMY_MODEL: AnatomyTrain(self.worker, self.store, min_labels=self.min_labels)}

    def init_strategies(self) -> dict[str, Any]:
        return {STRATEGY: LeastSure(self.worker, self.store)}

    def infer(self, request: dict[str, Any], datastore: Datastore | None = None) -> dict[str, Any]:
        # MONAI Label waits MONAI_LABEL_INFER_TIMEOUT (600 s) for a result unless the request
        # says otherwise; an edit on a CPU can take longer, so its own timeout applies.
        if request.get("model") in (COUNTERFACTUAL_MODEL, COUNTERFACTUAL_REGION_MODEL) and "timeout" not in request:
            request = {**request, "timeout": self.worker.timeouts["counterfactual"] + 60}
        return super().infer(request, datastore)

    def train(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            return super().train(request)
        except HTTPException as error:
            if not _in_background_runner():
                raise  # inside the server (run_sync): the client gets the status and the message
            # MONAI Label runs training in a background process and shows its last lines as the
            # task's details: a refusal is one line there, not a traceback.
            print(error.detail, flush=True)
            raise SystemExit(2) from None

    def info(self) -> dict[str, Any]:
        meta = super().info()
        current = self.store.current()
        meta["medcf"] = {"app_version": APP_VERSION, "monailabel": monailabel.__version__,
                         "worker_python": self.worker.python, "anatomy_weights": current["weights"] if current
                         else "bundle (monai_bundle/models/anatomy_unet.safetensors)",
                         "models_dir": str(Path(self.store.folder).parent), "min_labels": self.min_labels,
                         "timeouts_s": self.worker.timeouts}
        return meta


def _in_background_runner() -> bool:
    """True inside MONAI Label's background task process (``python -m monailabel.interfaces.utils.app``)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return getattr(spec, "name", None) == "monailabel.interfaces.utils.app"
