"""``medcf_counterfactual``: the film with one finding added or removed (type OTHERS).

The work is ``medcf edit`` in MedCF's environment with the request's params, so the
result is the very file ``medcf edit`` writes for the same input, params and seed. The
returned file is the counterfactual in the input's format (PNG → PNG, NIfTI → NIfTI, DICOM
→ the synthetic DICOM instance); with ``"series": true`` it is a zip of everything ``medcf
edit`` wrote (the synthetic DICOM series, ``edit.json``, masks, panel). ``edit.json``
always comes back in the result's JSON (``edit``).

MONAI Label's Slicer plugin lists only models of type segmentation, detection, deepgrow,
deepedit and scribbles (``updateSelector`` in plugins/slicer/MONAILabel/MONAILabel.py, 0.8.5), and
loads every result as a label map, so it cannot show a film of type OTHERS. What it shows is
the sibling task :mod:`lib.infers.counterfactual_region` (``medcf_counterfactual_region``, type
segmentation): the same edit, returned as the region it changed. This task's clients are plain
HTTP, scripts and MedCF's Slicer module in its remote mode.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from fastapi import HTTPException
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from lib.models import ModelStore
from lib.options import read_edit_options, served_params
from lib.refusal import client_line
from lib.versions import check_client
from lib.worker import MedCFWorker

#: params a request may give, and the ``medcf edit`` option each becomes (None: left to MedCF's defaults)
PARAMS = served_params()
#: the served params that are flags (``allow_out_of_domain``), each with its ``medcf edit`` flag
FLAGS = {name: option["flag"] for name, option in read_edit_options().items()
         if name in PARAMS and option["kind"] == "flag"}
#: how a client may say true for a flag param (JSON true, or the text MONAI Label's Options give)
TRUE = ("true", "1", "yes", "on")


class CounterfactualInfer(InferTask):
    def __init__(self, worker: MedCFWorker, store: ModelStore, server_version: str, generator: str | None = None):
        super().__init__(type=InferType.OTHERS, labels=None, dimension=2,
                         description="MedCF counterfactual: add or remove one finding in a side and zone; returns "
                                     "the SYNTHETIC film and its edit.json. Research only, never for diagnosis.",
                         config={**{k: ("" if v is None else v) for k, v in PARAMS.items()}, "series": False})
        self.worker, self.store, self.server_version = worker, store, server_version
        self.generator = generator  # a model folder instead of the bundle's (sites' own models; tests' tiny one)

    def is_valid(self) -> bool:
        return True

    def command(self, image: str, request: dict[str, Any], out: Path) -> list[str]:
        """The ``medcf edit`` arguments for ``request``: one option per param given."""
        return edit_args(image, request, out, self.store, self.generator, task="medcf_counterfactual")

    def __call__(self, request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        check_client(request, self.server_version)
        with tempfile.TemporaryDirectory(prefix="medcf-edit-") as folder:
            out = Path(folder) / "out"
            run_edit(self.worker, self.command(str(request["image"]), request, out))
            record = json.loads((out / "edit.json").read_text(encoding="utf-8"))
            files = record.get("files", {})
            if str(request.get("series", "")).lower() in ("true", "1", "yes"):
                archive = shutil.make_archive(str(Path(folder) / "counterfactual"), "zip", out)
                source, suffix = Path(archive), ".zip"
            else:
                name = files.get("image") or files.get("dicom")
                source = out / name
                suffix = "".join(source.suffixes)
            # MONAI Label deletes the returned file once sent: hand it a copy outside this folder.
            handle = tempfile.NamedTemporaryFile(prefix="medcf-counterfactual-", suffix=suffix, delete=False)
            handle.close()
            shutil.copyfile(source, handle.name)
        return handle.name, {"edit": record, "files": files}


def edit_args(image: str, request: dict[str, Any], out: Path, store: ModelStore, generator: str | None,
              task: str) -> list[str]:
    """``medcf edit`` arguments for a request's params (one option per param given; absent or
    empty: MedCF's defaults), the app's current anatomy weights and its generator."""
    if not request.get("finding") or not request.get("action"):
        raise HTTPException(status_code=422, detail=f"{task} needs params finding and action "
                            "(e.g. {\"finding\": \"pleural_effusion\", \"action\": \"add\", \"side\": \"left\"})")
    args = ["edit", image, "--out", out, "--quiet"]
    for name, default in PARAMS.items():
        value = request.get(name, default)
        if name in FLAGS:
            if str(value).strip().lower() in TRUE:
                args.append(FLAGS[name])
            continue
        if value is None or value == "":
            continue
        args += [f"--{name}", str(value)]
    weights = store.current_weights()
    if weights:
        args += ["--weights", weights]
    if generator:
        args += ["--model", generator]
    return args


def run_edit(worker: MedCFWorker, args: list[str]) -> str:
    """``medcf edit ARGS`` on the worker; a refusal outside the model's domain reaches the client as
    one line naming its ways on as params (lib.refusal), any other error as MedCF wrote it."""
    try:
        return worker.run(args, "counterfactual")
    except HTTPException as error:
        line = client_line(str(error.detail)) if error.status_code == 422 else None
        if line is None:
            raise
        raise HTTPException(status_code=422, detail=line) from None
