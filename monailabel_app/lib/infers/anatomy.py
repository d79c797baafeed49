"""``medcf_anatomy``: right lung, left lung and heart as a label map Slicer and OHIF can edit.

The work is ``medcf segment`` in MedCF's environment, with the app's current weights
(the latest fine-tune, else the bundle's, loaded through ``configs/anatomy.json``). Two
differences from the command line, both because this is an annotation tool: films the
segmenter is unsure of, or whose masks fail the plausibility rules, are *not* refused
(``--min-confidence 0 --accept-anatomy``): they are exactly the films a person should
correct. Confidence and the plausibility verdict come back in the result's JSON.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from fastapi import HTTPException
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from lib.legend import LABELS
from lib.models import ModelStore
from lib.versions import check_client
from lib.worker import MedCFWorker


class AnatomyInfer(InferTask):
    def __init__(self, worker: MedCFWorker, store: ModelStore, server_version: str):
        super().__init__(type=InferType.SEGMENTATION, labels=dict(LABELS), dimension=2,
                         description="MedCF lungs and heart (MONAI UNet; simulated-world weights, fine-tuned on "
                                     "this server's labels once trained). Research only, never for diagnosis.")
        self.worker, self.store, self.server_version = worker, store, server_version

    def is_valid(self) -> bool:
        return True

    def __call__(self, request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        check_client(request, self.server_version)
        image = str(request["image"])
        weights = self.store.current_weights()
        with tempfile.TemporaryDirectory(prefix="medcf-anatomy-") as folder:
            out = Path(folder) / "out"
            args = ["segment", image, "--out", out, "--min-confidence", "0", "--accept-anatomy"]
            if weights:
                args += ["--weights", weights]
            self.worker.run(args, "anatomy")
            record = json.loads((out / "anatomy.json").read_text(encoding="utf-8"))
            legend = {name: value for name, value in record.get("labels", {}).items() if value}
            if legend != LABELS:
                raise HTTPException(status_code=500, detail=f"MedCF's label legend {legend} is not the app's "
                                    f"{LABELS}: the app and MedCF are of different versions")
            # MONAI Label deletes the returned file once sent: hand it a copy outside this folder.
            handle = tempfile.NamedTemporaryFile(prefix="medcf-anatomy-", suffix=".nii.gz", delete=False)
            handle.close()
            shutil.copyfile(out / "anatomy.nii.gz", handle.name)
        plausibility = record["plausibility"]
        return handle.name, {
            "label_names": dict(LABELS),
            "confidence": record.get("confidence"),
            "plausible": plausibility["passed"],
            "failed_rules": plausibility["failed"],
            "reasons": plausibility.get("reasons", {}),
            "segmenter": record.get("segmenter"),
            "weights": record.get("weights"),
            "cardiothoracic_ratio": record.get("cardiothoracic_ratio"),
            "notice": record.get("notice"),
        }
