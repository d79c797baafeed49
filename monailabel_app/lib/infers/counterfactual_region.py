"""``medcf_counterfactual_region``: the counterfactual edit as MONAI Label's Slicer plugin can show it.

The plugin lists only models of type segmentation, detection, deepgrow, deepedit and
scribbles, and loads every result as a label map (plugins/slicer/MONAILabel/MONAILabel.py,
``updateSelector`` and ``updateSegmentationMask``, release 0.8.5). A counterfactual film
(``medcf_counterfactual``, type OTHERS) therefore never appears there. This task is the same
``medcf edit`` with the same params (the plugin's *Options* section edits them: finding,
action, side, zone, severity, method, strength, seed, allow_out_of_domain), returned as what the plugin can load:
the region the edit changed, one segment ``edited_region`` on the film's own grid, for the
annotator to see where the finding was added or removed. ``edit.json`` comes back in the
result's JSON (``edit``); the film itself, for the same params and seed, is
``medcf_counterfactual``'s answer (``medcf edit`` is seeded: same film).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from lib.infers.counterfactual import PARAMS, edit_args, run_edit
from lib.legend import COUNTERFACTUAL_REGION_MODEL, REGION_LABELS
from lib.models import ModelStore
from lib.versions import check_client
from lib.worker import MedCFWorker


class CounterfactualRegionInfer(InferTask):
    def __init__(self, worker: MedCFWorker, store: ModelStore, server_version: str, generator: str | None = None):
        super().__init__(type=InferType.SEGMENTATION, labels=dict(REGION_LABELS), dimension=2,
                         description="MedCF counterfactual (set finding, action, side in Options): the region the "
                                     "SYNTHETIC edit changed; the film itself is medcf_counterfactual. Research "
                                     "only, never for diagnosis.",
                         config={k: ("" if v is None else v) for k, v in PARAMS.items()})
        self.worker, self.store, self.server_version = worker, store, server_version
        self.generator = generator

    def is_valid(self) -> bool:
        return True

    def __call__(self, request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        check_client(request, self.server_version)
        with tempfile.TemporaryDirectory(prefix="medcf-edit-region-") as folder:
            out = Path(folder) / "out"
            args = edit_args(str(request["image"]), request, out, self.store, self.generator,
                             task=COUNTERFACTUAL_REGION_MODEL)
            run_edit(self.worker, args)
            record = json.loads((out / "edit.json").read_text(encoding="utf-8"))
            # MONAI Label deletes the returned file once sent: hand it a copy outside this folder.
            handle = tempfile.NamedTemporaryFile(prefix="medcf-edit-region-", suffix=".nii.gz", delete=False)
            handle.close()
            shutil.copyfile(out / "masks" / "edit_region.nii.gz", handle.name)
        return handle.name, {"label_names": dict(REGION_LABELS), "edit": record}
