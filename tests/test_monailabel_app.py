"""The MONAI Label app's parts without a server: the trainer's ``stats()`` (what the Slicer plugin
reads), the least-sure strategy's score cache, the worker's streaming and Windows paths, and the
``python -m monailabel_app`` launcher.

The app runs in the server's environment (``.venv-monailabel``, which ``make test`` builds), so
each check is a short script run there with the app folder on ``sys.path``; it prints one JSON
line that the test reads. The whole server is tests/test_monailabel.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Every test here runs in the MONAI Label environment (.venv-monailabel): `make test` builds it and
# runs them (CI); `make test-fast`, which does not build it, leaves them out.
pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "monailabel_app"
ML_PYTHON = REPO / ".venv-monailabel" / "bin" / "python"
TIMEOUT_S = 300  # one short script: imports of monailabel and torch, tens of seconds on a busy machine


def _in_server_env(script: str, cwd: Path, env: dict | None = None) -> dict:
    if not ML_PYTHON.is_file():
        pytest.fail("the MONAI Label environment is missing; run `make monailabel` (make test does)")
    prelude = f"import json, sys\nsys.path.insert(0, {str(APP)!r})\n"
    done = subprocess.run([str(ML_PYTHON), "-c", prelude + textwrap.dedent(script)], cwd=cwd, capture_output=True,
                          text=True, timeout=TIMEOUT_S, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_trainer_stats_hold_what_the_slicer_plugin_reads(tmp_path: Path) -> None:
    """epoch / total_epochs while a run is going (no total_time), total_time and best_metric
    (mean Dice on the labelled films) once one is current; a dead run's progress is ignored."""
    out = _in_server_env("""
        import subprocess
        from lib.models import ModelStore
        from lib.trainers.anatomy import AnatomyTrain
        store = ModelStore("models", "medcf_anatomy")
        trainer = AnatomyTrain(worker=None, store=store)
        before = trainer.stats()
        store.write_progress("run-1", 7, 20, 1000.0)
        running = trainer.stats()
        weights = store.new_run(0) / "weights" / "anatomy_unet.safetensors"
        weights.parent.mkdir()
        weights.write_bytes(b"w")
        store.publish(weights.parent.parent, weights, {"steps": 20, "train_seconds": 12.5,
                      "labelled_dice_after": {"lung_right": 0.9, "lung_left": 0.8, "heart": 0.7}})
        store.clear_progress()
        done = trainer.stats()
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        (store.folder / "progress.json").write_text(json.dumps({"run": "x", "step": 1, "steps": 2, "start_ts": 0,
                                                                "pid": dead.pid}))
        print(json.dumps({"before": before, "running": running, "done": done, "after_dead": trainer.stats()}))
    """, cwd=tmp_path)
    assert out["before"]["epoch"] == 0 and out["before"]["total_epochs"] == 100 and out["before"]["best_metric"] == 0.0
    running = out["running"]
    assert (running["epoch"], running["total_epochs"], running["best_metric"]) == (7, 20, 0.0)
    assert "total_time" not in running  # the plugin counts epochs until total_time appears
    done = out["done"]
    assert (done["epoch"], done["total_epochs"], done["total_time"]) == (20, 20, 12.5)
    assert done["best_metric"] == pytest.approx(0.8)
    assert out["after_dead"] == done


def test_training_streams_progress_and_clears_it(tmp_path: Path) -> None:
    """The trainer turns the worker's ``step k/N`` lines into progress.json while it runs, and
    removes it when the run ends, published or failed."""
    out = _in_server_env("""
        from lib.models import ModelStore
        from lib.trainers.anatomy import AnatomyTrain
        store = ModelStore("models", "medcf_anatomy")
        seen = []

        class Worker:
            def stream(self, args, kind, on_line):
                out = __import__("pathlib").Path(args[args.index("--out") + 1])
                for line in ("loading", "step 1/2: loss 0.5", "step 2/2: loss 0.4"):
                    on_line(line)
                    seen.append(store.progress())
                out.mkdir(parents=True)
                (out / "anatomy_unet.safetensors").write_bytes(b"w")
                (out / "training.json").write_text(json.dumps({"recipe": {"steps": 2}, "train_seconds": 3.0,
                    "labelled_dice_before": {"heart": 0.5}, "labelled_dice_after": {"heart": 0.75},
                    "initialised_from": {"path": "bundle"}}))
                return ""

        class Datastore:
            def datalist(self):
                return [{"image": f"{n}.nii.gz", "label": f"{n}-label.nii.gz"} for n in "abc"]

        trainer = AnatomyTrain(Worker(), store, min_labels=3)
        trainer({"max_steps": 2}, Datastore())
        print(json.dumps({"seen": [None if s is None else [s["step"], s["steps"]] for s in seen],
                          "left": (store.folder / "progress.json").exists(), "stats": trainer.stats()}))
    """, cwd=tmp_path)
    assert out["seen"] == [[0, 2], [1, 2], [2, 2]] and out["left"] is False
    assert (out["stats"]["epoch"], out["stats"]["total_epochs"], out["stats"]["best_metric"]) == (2, 2, 0.75)


STRATEGY_SCRIPT = """
    from pathlib import Path
    from lib.models import ModelStore
    from lib.strategies.least_sure import LeastSure

    store = ModelStore("models", "medcf_anatomy")
    calls, fetched = [], []
    CONFIDENCE = {"a": 0.99, "b": 0.95, "c": 0.97, "d": 0.5}

    class Worker:
        def run(self, args, kind):
            paths = [str(a) for a in args[1:] if str(a).endswith(".nii.gz")]
            calls.append(sorted(Path(p).stem.split(".")[0] for p in paths))
            return json.dumps([{"input": p, "confidence": CONFIDENCE[Path(p).name[0]], "plausible": True,
                                "failed": [], "error": None} for p in paths])

    class Datastore:
        labelled = set()
        def get_unlabeled_images(self):
            return [i for i in "abcd" if i not in self.labelled]
        def get_labeled_images(self):
            return sorted(self.labelled)
        def get_image_uri(self, image):
            fetched.append(image)  # on DICOMweb: downloads the series
            return str(Path(f"{image}.nii.gz").resolve())

    strategy, datastore = LeastSure(Worker(), store), Datastore()
    picks = [strategy({}, datastore)["id"]]
    picks.append(strategy({}, datastore)["id"])         # nothing changed: no scoring, no fetching
    steps = [(list(calls), list(fetched))]
    datastore.labelled = {"d"}                           # d labelled: out of the pool, nothing re-scored
    picks.append(strategy({}, datastore)["id"])
    datastore.labelled = set()                           # d's label removed: d scored again, alone
    picks.append(strategy({}, datastore)["id"])
    steps.append((list(calls), list(fetched)))
    weights = store.new_run(0) / "weights" / "anatomy_unet.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"w")
    store.publish(weights.parent.parent, weights, {"steps": 1})   # new weights: every film scored again
    result = strategy({}, datastore)
    picks.append(result["id"])
    steps.append((list(calls), list(fetched)))
    print(json.dumps({"picks": picks, "steps": steps, "ranking": [r["id"] for r in result["ranking"]],
                      "scored_now": result["scored_now"]}))
"""


def test_least_sure_scores_each_film_once_until_labels_or_weights_change(tmp_path: Path) -> None:
    out = _in_server_env(STRATEGY_SCRIPT, cwd=tmp_path)
    assert out["picks"] == ["d", "d", "b", "d", "d"]
    first, relabelled, retrained = out["steps"]
    assert first == [[["a", "b", "c", "d"]], ["a", "b", "c", "d"]]  # the second "next sample" re-scored nothing
    assert relabelled == [[["a", "b", "c", "d"], ["d"]], ["a", "b", "c", "d", "d"]]
    assert retrained[0][-1] == ["a", "b", "c", "d"] and len(retrained[0]) == 3
    assert out["ranking"] == ["d", "b", "c", "a"] and out["scored_now"] == 4


def test_least_sure_orders_as_medcf_anatomy_score(tmp_path: Path) -> None:
    """The app cannot import MedCF: its copy of the ranking rule must order as MedCF's does."""
    from medcf.anatomy.score import sureness

    records = [{"input": "/f/a", "confidence": 0.9, "failed": [], "error": None},
               {"input": "/f/b", "confidence": 0.99, "failed": ["heart_between_lungs"], "error": None},
               {"input": "/f/c", "confidence": 0.0, "failed": [], "error": "no heart found"},
               {"input": "/f/d", "confidence": None, "failed": [], "error": None},
               {"input": "/f/e", "confidence": 0.9, "failed": [], "error": None},
               {"input": "/f/f", "confidence": 0.95, "failed": ["a", "b"], "error": None}]
    out = _in_server_env(f"""
        from lib.strategies.least_sure import sureness
        records = {records!r}
        print(json.dumps([r["input"] for r in sorted(records, key=sureness)]))
    """, cwd=tmp_path)
    assert out == [r["input"] for r in sorted(records, key=sureness)]


def test_worker_streams_lines_and_keeps_medcf_errors_and_timeouts(tmp_path: Path) -> None:
    """``stream`` hands over each line as printed, ends in MedCF's last stderr line on failure
    (422 for exit 2) and in 504 past its timeout; the default Python is Windows-aware."""
    fake = tmp_path / "fake" / "medcf"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "__main__.py").write_text(textwrap.dedent("""
        import sys, time
        if sys.argv[1] == "steps":
            for k in (1, 2):
                print(f"step {k}/2: loss 0.1", flush=True)
        elif sys.argv[1] == "bad":
            print("noise", file=sys.stderr)
            print("medcf: error: --steps must be at least 1", file=sys.stderr)
            sys.exit(2)
        else:
            time.sleep(30)
    """))
    out = _in_server_env("""
        from pathlib import Path
        from fastapi import HTTPException
        from lib.worker import MedCFWorker, default_python
        worker = MedCFWorker(python=sys.executable, timeouts={"train": 2.0})
        lines = []
        stdout = worker.stream(["steps"], "train", lines.append)
        errors = []
        for args in (["bad"], ["sleep"]):
            try:
                worker.stream(args, "train", lines.append)
            except HTTPException as error:
                errors.append([error.status_code, error.detail])
        print(json.dumps({"lines": lines, "stdout": stdout, "errors": errors,
                          "windows": str(default_python(Path("R"), windows=True).relative_to("R").as_posix()),
                          "posix": str(default_python(Path("R"), windows=False).relative_to("R").as_posix())}))
    """, cwd=tmp_path, env={"MEDCF_PYTHONPATH": str(tmp_path / "fake")})
    assert out["lines"] == ["step 1/2: loss 0.1", "step 2/2: loss 0.1"]
    assert out["stdout"] == "step 1/2: loss 0.1\nstep 2/2: loss 0.1\n"
    assert out["errors"] == [[422, "medcf: error: --steps must be at least 1"],
                             [504, "MedCF train took longer than 2 s (raise it with -c timeout_train SECONDS)"]]
    assert (out["windows"], out["posix"]) == (".venv/Scripts/python.exe", ".venv/bin/python")


def test_python_m_monailabel_app_prepares_the_server(tmp_path: Path) -> None:
    """``python -m monailabel_app`` (any system) gives MONAI Label the app folder, the studies, the
    film extensions with DICOM and the raised infer timeout; without MedCF's Python it says so."""
    if not ML_PYTHON.is_file():
        pytest.fail("the MONAI Label environment is missing; run `make monailabel` (make test does)")
    env = {k: v for k, v in os.environ.items()
           if k not in ("MEDCF_PYTHON", "MONAI_LABEL_DATASTORE_FILE_EXT", "MONAI_LABEL_INFER_TIMEOUT")}
    env["PYTHONPATH"] = str(REPO)
    studies = tmp_path / "studies"
    command = [str(ML_PYTHON), "-m", "monailabel_app", "--studies", str(studies), "--port", "8123",
               "-c", "min_labels", "5", "--dryrun"]
    done = subprocess.run(command + ["--medcf-python", sys.executable], cwd=tmp_path, capture_output=True, text=True,
                          timeout=TIMEOUT_S, env=env, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    settings = dict(line.removeprefix("export ").split("=", 1) for line in (tmp_path / ".env").read_text().splitlines()
                    if "=" in line)
    assert Path(settings["MONAI_LABEL_APP_DIR"]) == APP and Path(settings["MONAI_LABEL_STUDIES"]) == studies
    assert "*.dcm" in settings["MONAI_LABEL_DATASTORE_FILE_EXT"] and settings["MONAI_LABEL_INFER_TIMEOUT"] == "1900"
    assert json.loads(settings["MONAI_LABEL_APP_CONF"].strip("'")) == {"min_labels": "5"}
    missing = subprocess.run(command + ["--medcf-python", str(tmp_path / "no-python")], cwd=tmp_path,
                             capture_output=True, text=True, timeout=TIMEOUT_S, env=env, stdin=subprocess.DEVNULL)
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [
        f"monailabel_app: MedCF's Python not found at {tmp_path / 'no-python'}: run `make install` in {REPO}, or pass "
        "--medcf-python (or set MEDCF_PYTHON) to the python of an environment where MedCF is installed"]


def _domain_refusal() -> str:
    """``medcf edit``'s own line for a film far outside the model's domain, as the worker gets it."""
    from medcf.domain.assess import DomainStatus, DomainVerdict, refusal_line

    verdict = DomainVerdict(DomainStatus.OUTSIDE, {"reconstruction_error": 3.0}, {"reconstruction_error": 1.0})
    return "medcf: error: " + refusal_line(verdict)


def test_a_domain_refusal_reaches_the_client_as_one_line_with_its_ways_on_as_params(tmp_path: Path) -> None:
    """Both counterfactual tasks: a worker that fails as ``medcf edit`` does outside the model's
    domain (exit 2, HTTP 422) becomes one 422 line that keeps MedCF's reason and names the ways on
    as the client's params; allow_out_of_domain and method insert reach ``medcf edit`` as options;
    any other refusal goes through as MedCF wrote it."""
    out = _in_server_env(f"""
        from fastapi import HTTPException
        from lib.infers.counterfactual import CounterfactualInfer
        from lib.infers.counterfactual_region import CounterfactualRegionInfer
        from lib.models import ModelStore

        class Refusing:
            def __init__(self, detail):
                self.detail, self.args = detail, []
            def run(self, args, kind):
                self.args.append([str(a) for a in args])
                raise HTTPException(status_code=422, detail=self.detail)

        store = ModelStore("models", "medcf_anatomy")
        answers = {{}}
        for task in (CounterfactualInfer, CounterfactualRegionInfer):
            for name, detail in (("domain", {_domain_refusal()!r}), ("other", "medcf: error: --side is needed")):
                worker = Refusing(detail)
                infer = task(worker, store, "0.8.5")
                for params in ({{}}, {{"allow_out_of_domain": True, "method": "insert"}},
                               {{"allow_out_of_domain": "false"}}):
                    try:
                        infer({{"image": "film.dcm", "finding": "pleural_effusion", "action": "add", **params}})
                    except HTTPException as error:
                        answers.setdefault(task.__name__ + "/" + name, []).append([error.status_code, error.detail])
                answers[task.__name__ + "/" + name + "/args"] = worker.args
        print(json.dumps({{"answers": answers, "config": CounterfactualRegionInfer(None, store, "0.8.5")._config}}))
    """, cwd=tmp_path)
    answers = out["answers"]
    reason = _domain_refusal()[len("medcf: error: "):].split(" Ways on: ")[0]
    for task in ("CounterfactualInfer", "CounterfactualRegionInfer"):
        for status, line in answers[f"{task}/domain"]:
            assert status == 422 and "\n" not in line and line.startswith(reason), line
            assert '"method": "insert"' in line and '"allow_out_of_domain": true' in line and "-c generator" in line
            assert "--allow-out-of-domain" not in line  # the client sets params, not flags
        assert [status for status, _ in answers[f"{task}/other"]] == [422] * 3
        assert {line for _, line in answers[f"{task}/other"]} == {"medcf: error: --side is needed"}
        plain, allowed, not_allowed = answers[f"{task}/domain/args"]
        assert "--allow-out-of-domain" not in plain and "--method" not in plain
        assert "--allow-out-of-domain" in allowed and allowed[allowed.index("--method") + 1] == "insert"
        assert "--allow-out-of-domain" not in not_allowed
    assert out["config"]["allow_out_of_domain"] is False and out["config"]["method"] == ""
