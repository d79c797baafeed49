"""MedCF's MONAI Label app, served for real: ``python -m monailabel_app`` (the app's own launcher,
which runs ``monailabel start_server``) on a loopback port (from ``.venv-monailabel``, which
``make test`` builds with ``make monailabel``), called
with MONAI Label's own client class (tests/monailabel_client.py, run in the server's
environment) and with plain HTTP. The worker runs in this environment (``sys.executable``).
Each server is stopped by the test that started it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from medcf.io.atomic import sha256_of_file
from tests import waiting
from tests.orthanc_server import free_port

# Limits in CPU seconds of the server and its MedCF workers (tests/waiting.py), not wall seconds:
# the work does not grow when other jobs share the machine. START: the server's imports and app
# (tens of CPU s); WORK: one request or CLI call, an edit or a short training at most (minutes).
START_CPU_BUDGET = 600.0
WORK_CPU_BUDGET = 3600.0

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "monailabel_app"
ML_PYTHON = REPO / ".venv-monailabel" / "bin" / "python"
CLIENT = Path(__file__).with_name("monailabel_client.py")
SAMPLE_STUDY = REPO / "medcf" / "data" / "sample_study"
BUNDLE_WEIGHTS = REPO / "monai_bundle" / "models" / "anatomy_unet.safetensors"
EDIT = {"finding": "pleural_effusion", "action": "add", "side": "left", "method": "regulated", "seed": 3}


def _server_python() -> Path:
    if not ML_PYTHON.is_file():
        pytest.fail("the MONAI Label environment is missing; run `make monailabel` (make test does)")
    return ML_PYTHON


def _films(folder: Path) -> dict[str, Path]:
    """Three chest films the segmenter is sure of and one upside-down film it is not, as 2D NIfTI."""
    from medcf.io.inputs import radiograph_affine, read_input, write_nifti_2d

    film = read_input(SAMPLE_STUDY).display
    variants = {"a": film[::4, ::4], "b": film[60:-20:3, 30:-30:3], "c": film[::4, ::4] ** 1.6,
                "d": film[::-4, ::4]}
    folder.mkdir(parents=True, exist_ok=True)
    return {name: write_nifti_2d(folder / f"{name}.nii.gz", np.ascontiguousarray(image), radiograph_affine((1.0, 1.0)))
            for name, image in variants.items()}


class Server:
    """``python -m monailabel_app`` in a context: started, waited for, stopped."""

    def __init__(self, studies: str, conf: dict[str, str], log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [str(_server_python()), "-m", "monailabel_app", "--studies", studies, "--host", "127.0.0.1",
                        "--port", str(self.port), "--medcf-python", sys.executable]
        for key, value in conf.items():
            self.command += ["-c", key, value]
        self.env = {**os.environ, "MEDCF_PYTHONPATH": str(REPO), "MONAI_LABEL_DATASTORE_AUTO_RELOAD": "false"}
        self.log = log

    def __enter__(self) -> "Server":
        self.handle = open(self.log, "w")
        self.process = subprocess.Popen(self.command, stdout=self.handle, stderr=subprocess.STDOUT, env=self.env,
                                        stdin=subprocess.DEVNULL, cwd=REPO)  # python -m finds the app package here
        progress = waiting.Watch([self.process.pid], START_CPU_BUDGET, waiting.STALL, "the server's start")
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/info/", timeout=5).read()
                return self
            except OSError:
                why = "it exited" if self.process.poll() is not None else progress.problem()
                if why:
                    self.__exit__()
                    pytest.fail(f"the MONAI Label server did not start ({why}): {self.log.read_text()[-3000:]}")
                time.sleep(0.5)

    def __exit__(self, *_) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.handle.close()

    def http(self, method: str, path: str, fields: dict | None = None, files: dict | None = None,
             body: dict | None = None) -> tuple[int, bytes, str]:
        """Plain HTTP: status, body and content type (a multipart form for fields/files); it waits
        while the server works (no stall, within the CPU budget), not for a fixed time."""
        headers, data = {}, None
        if fields is not None or files is not None:
            boundary = "medcf-test-boundary"
            parts = []
            for name, value in (fields or {}).items():
                parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
            for name, path_ in (files or {}).items():
                parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                             f'filename="{Path(path_).name}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
                             + Path(path_).read_bytes() + b"\r\n")
            data = b"".join(parts) + f"--{boundary}--\r\n".encode()
            headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
        elif body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)

        def call() -> tuple[int, bytes, str]:
            try:
                with urllib.request.urlopen(request) as response:
                    return response.status, response.read(), response.headers.get("Content-Type", "")
            except urllib.error.HTTPError as error:
                return error.code, error.read(), error.headers.get("Content-Type", "")

        return waiting.while_working(call, watch=[self.process.pid], cpu_budget=WORK_CPU_BUDGET,
                                     what=f"{method} {path}")

    def client(self, *args: str) -> dict:
        """One call of MONAI Label's own client (``MONAILabelClient``), in the server's environment."""
        done = waiting.run([str(_server_python()), str(CLIENT), self.url, *map(str, args)],
                           watch=[self.process.pid], cpu_budget=WORK_CPU_BUDGET, what=f"client {args[0]}")
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])


def _label_map(path: Path) -> np.ndarray:
    from medcf.io.inputs import read_nifti_2d

    return np.rint(read_nifti_2d(path)[0]).astype(np.uint8)


def _medcf(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return waiting.run([sys.executable, "-m", "medcf", *map(str, args)], env=env, cpu_budget=WORK_CPU_BUDGET,
                       what=f"medcf {args[0]}")


def test_app_legend_is_medcf_segment_legend() -> None:
    """The server cannot import MedCF; its copy of the legend must be MedCF's."""
    import importlib.util

    from medcf.anatomy.masks import LABEL_LEGEND

    spec = importlib.util.spec_from_file_location("medcf_app_legend", APP / "lib" / "legend.py")
    legend = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(legend)
    assert legend.LABELS == {name: value for name, value in LABEL_LEGEND.items() if value}


@pytest.mark.integration
def test_local_folder_server_annotate_train_and_counterfactual(tmp_path: Path) -> None:
    from medcf.anatomy.outputs import load_segmenter
    from medcf.anatomy.segment import segment
    from medcf.io.inputs import read_input, read_nifti_2d
    from tests import model_fixtures

    films = _films(tmp_path / "studies")
    tiny = model_fixtures.make_default_model(tmp_path / "tiny")
    models = tmp_path / "models"
    bundle_before = sha256_of_file(BUNDLE_WEIGHTS)
    conf = {"models_dir": str(models), "generator": str(tiny), "min_labels": "3"}
    with Server(str(tmp_path / "studies"), conf, tmp_path / "server.log") as server:
        # /info/ lists both models, by plain HTTP and by MONAI Label's client
        status, body, _ = server.http("GET", "/info/")
        info = json.loads(body)
        assert status == 200 and info == server.client("info") | {"datastore": info["datastore"]}
        assert info["models"]["medcf_anatomy"]["type"] == "segmentation"
        assert info["models"]["medcf_anatomy"]["labels"] == {"lung_right": 1, "lung_left": 2, "heart": 3}
        assert info["models"]["medcf_counterfactual"]["type"] == "others"
        assert set(info["models"]["medcf_counterfactual"]["config"]) >= {
            "finding", "action", "side", "zone", "severity", "method", "strength", "seed"}
        # the form MONAI Label's Slicer plugin lists (segmentation), with the same params in its Options
        region_task = info["models"]["medcf_counterfactual_region"]
        assert region_task["type"] == "segmentation" and region_task["labels"] == {"edited_region": 1}
        assert set(region_task["config"]) == set(info["models"]["medcf_counterfactual"]["config"]) - {"series"}
        assert set(info["trainers"]) == {"medcf_anatomy"} and set(info["strategies"]) == {"medcf_least_sure"}
        stats = info["train_stats"]["medcf_anatomy"]
        assert (stats["epoch"], stats["total_epochs"], stats["best_metric"]) == (0, 100, 0.0)

        # the strategy picks the film the segmenter is least sure of: the upside-down one
        picked = server.client("next_sample", "medcf_least_sure")
        assert picked["id"] == "d" and picked["failed_rules"], picked
        assert [r["id"] for r in picked["ranking"]][0] == "d" and len(picked["ranking"]) == 4
        assert picked["scored_now"] == 4
        again = server.client("next_sample", "medcf_least_sure")  # nothing changed: the cached scores
        assert again["scored_now"] == 0 and again["ranking"] == picked["ranking"]

        # anatomy infer returns MedCF's label map for the film (client class), as `medcf segment` draws it
        labels = {}
        for name in ("a", "b"):
            result = server.client("infer", "medcf_anatomy", name, "{}", tmp_path / f"{name}-label.nii.gz")
            labels[name] = Path(result["file"])
            assert result["params"]["label_names"] == {"lung_right": 1, "lung_left": 2, "heart": 3}
            assert result["params"]["plausible"] is True and result["params"]["confidence"] > 0.9
        labels["c"] = labels["a"]  # film c is film a under another gamma: same anatomy, same grid
        image = read_input(films["a"])
        expected = segment(image.display, load_segmenter()).label_map()
        assert np.array_equal(_label_map(labels["a"]), expected)

        # counterfactual infer (MONAI Label's client: image and edit.json) gives the very film `medcf edit`
        # writes for the same seed
        result = server.client("infer", "medcf_counterfactual", "a", json.dumps(EDIT), tmp_path / "cf.nii.gz")
        edit = result["params"]["edit"]
        assert (edit["finding"], edit["action"], edit["side"], edit["seed"]) == ("pleural_effusion", "add", "left", 3)
        done = _medcf("edit", films["a"], *[a for k, v in EDIT.items() for a in (f"--{k}", v)], "--model", tiny,
                      "--quiet", "--out", tmp_path / "edit")
        assert done.returncode == 0, done.stderr
        assert np.array_equal(read_nifti_2d(Path(result["file"]))[0],
                              read_nifti_2d(tmp_path / "edit" / "counterfactual.nii.gz")[0])
        assert edit["weights_sha256"] == json.loads((tmp_path / "edit" / "edit.json").read_text())["weights_sha256"]
        # the same edit as the Slicer plugin runs it: the region it changed, as a label map
        result = server.client("infer", "medcf_counterfactual_region", "a", json.dumps(EDIT),
                               tmp_path / "cf-region.nii.gz")
        assert result["params"]["label_names"] == {"edited_region": 1}
        region = _label_map(Path(result["file"]))
        assert region.any() and np.array_equal(region, _label_map(tmp_path / "edit" / "masks" / "edit_region.nii.gz"))
        # bad params and a client of another MONAI Label release: one clear line each
        status, body, _ = server.http("POST", "/infer/medcf_counterfactual?image=a&output=json",
                                      fields={"params": json.dumps({"finding": "nodule", "action": "add"})})
        assert status == 422 and json.loads(body)["detail"] == "medcf: error: --side is needed for nodule " \
                                                                "(left, right or bilateral)"
        status, body, _ = server.http("POST", "/infer/medcf_anatomy?image=a&output=json",
                                      fields={"params": json.dumps({"client_version": "0.7.0"})})
        assert status == 409 and "this server runs MONAI Label 0.8.5" in json.loads(body)["detail"]

        # one saved label is too few to train: refused, nothing written
        server.client("save_label", "a", labels["a"])
        status, body, _ = server.http("POST", "/train/medcf_anatomy?run_sync=true", body={"max_steps": 2})
        assert status == 409 and "1 saved, at least 3 needed" in json.loads(body)["detail"]
        assert not any((models / "medcf_anatomy").iterdir())
        # ... and as clients start it (in the background): the task's last line says why, no traceback
        refused = server.client("train", "medcf_anatomy", json.dumps({"max_steps": 2}))
        assert refused["status"]["status"] == "ERROR"
        assert refused["status"]["details"][-1] == ("not enough labels to train medcf_anatomy: 1 saved, at least 3 "
                                                    "needed (label more films and submit them)")
        assert not any((models / "medcf_anatomy").iterdir())

        # three labels: a few steps of training (async, as clients start it) give new weights that load
        for name in ("b", "c"):
            server.client("save_label", name, labels[name])
        trained = server.client("train", "medcf_anatomy", json.dumps({"max_steps": 2, "batch": 2}))
        assert trained["status"]["status"] == "DONE", trained
        current = json.loads((models / "medcf_anatomy" / "current.json").read_text())
        stats = json.loads(server.http("GET", "/info/")[1])["train_stats"]["medcf_anatomy"]
        assert (stats["epoch"], stats["total_epochs"], stats["current_run"]) == (2, 2, current["run"])
        assert stats["total_time"] > 0 and stats["best_metric"] == pytest.approx(
            sum(current["labelled_dice_after"].values()) / 3, abs=1e-4)
        assert not (models / "medcf_anatomy" / "progress.json").exists()
        weights = Path(current["weights"])
        assert weights.is_file() and weights.parent.parent.parent == models / "medcf_anatomy"
        record = json.loads(Path(current["training"]).read_text())
        assert record["recipe"]["steps"] == 2 and len(record["labelled"]) == 3 and len(record["loss"]) == 2
        assert record["initialised_from"]["sha256"] == bundle_before
        assert sha256_of_file(weights) != bundle_before and sha256_of_file(BUNDLE_WEIGHTS) == bundle_before
        masks = segment(image.display, load_segmenter(weights=weights), min_confidence=0.0)
        assert masks.label_map().max() == 3
        # the server now segments with them
        status, body, _ = server.http("POST", "/infer/medcf_anatomy?image=b&output=json")
        assert status == 200 and json.loads(body)["weights"]["path"] == str(weights)
        assert json.loads(server.http("GET", "/info/")[1])["medcf"]["anatomy_weights"] == str(weights)


def _store(orthanc: dict, ds, path: Path) -> str:
    """Store one dataset in Orthanc (its REST upload); returns the series UID."""
    from medcf.io.samples import save_sample

    save_sample(ds, path)
    request = urllib.request.Request(f"{orthanc['http']}/instances", data=path.read_bytes(), method="POST",
                                     headers={"Content-Type": "application/dicom"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
    return str(ds.SeriesInstanceUID)


@pytest.mark.integration
def test_dicomweb_server_lists_radiographs_and_segments_them(orthanc, tmp_path: Path) -> None:
    """MONAI Label on a real Orthanc over DICOMweb: CR and DX series are the datastore (CT is
    not), and a CR film is segmented from the archive."""
    from medcf.io.inputs import read_input
    from medcf.io.samples import SampleSpec, make_sample

    film = np.ascontiguousarray(read_input(SAMPLE_STUDY).display[::4, ::4])
    cr, _ = make_sample(SampleSpec(modality="CR", rows=film.shape[0], columns=film.shape[1]), image=film)
    dx, _ = make_sample(SampleSpec(modality="DX", rows=film.shape[0], columns=film.shape[1]), image=film)
    ct, _ = make_sample(SampleSpec(modality="CR", rows=film.shape[0], columns=film.shape[1]), image=film)
    ct.SOPClassUID = ct.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ct.Modality = "CT"
    series = {name: _store(orthanc, ds, tmp_path / f"{name}.dcm") for name, ds in (("cr", cr), ("dx", dx), ("ct", ct))}
    conf = {"models_dir": str(tmp_path / "models")}
    server = Server(orthanc["web"], conf, tmp_path / "server.log")
    server.env["MONAI_LABEL_DICOMWEB_CACHE_PATH"] = str(tmp_path / "cache")
    with server:
        status, body, _ = server.http("GET", "/info/")
        assert status == 200 and json.loads(body)["datastore"]["total"] == 2, body[:500]
        picked = server.client("next_sample", "medcf_least_sure")  # fetches and scores every listed series
        assert {r["id"] for r in picked["ranking"]} == {series["cr"], series["dx"]}, (picked, series)
        result = server.client("infer", "medcf_anatomy", series["cr"], "{}", tmp_path / "cr-label.nii.gz")
        labels = _label_map(Path(result["file"]))
        assert labels.shape == film.shape and set(np.unique(labels)) == {0, 1, 2, 3}
        assert result["params"]["plausible"] is True, result["params"]
