"""The MedCF side of the MONAI Label app, in MedCF's environment: fine-tuning on labelled
films (reproducible, refused with too few labels, never over its start weights) and the
least-sure ranking the active-learning strategy uses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medcf.io.atomic import sha256_of_file
from tests import waiting
from tests.test_monailabel import BUNDLE_WEIGHTS, REPO, _films


def _labelled(tmp_path: Path) -> tuple[dict[str, Path], list[dict]]:
    from medcf.anatomy.outputs import load_segmenter
    from medcf.anatomy.segment import segment
    from medcf.io.inputs import radiograph_affine, read_input, write_nifti_2d

    films = _films(tmp_path / "films")
    segmenter = load_segmenter()
    items = []
    for name in ("a", "b", "c"):
        image = read_input(films[name])
        label = segment(image.display, segmenter).label_map()
        path = write_nifti_2d(tmp_path / "labels" / f"{name}.nii.gz", label, radiograph_affine((1.0, 1.0)))
        items.append({"image": str(films[name]), "label": str(path)})
    return films, items


def _medcf(*args) -> subprocess.CompletedProcess:
    return waiting.run([sys.executable, "-m", "medcf", *map(str, args)], env={**os.environ, "PYTHONPATH": str(REPO)},
                       cpu_budget=600, what=f"medcf {args[0]}")  # CPU s, not wall s (tests/waiting.py)


@pytest.mark.slow
def test_finetune_is_reproducible_and_keeps_its_start(tmp_path: Path) -> None:
    from medcf.training.segmenter_labels import FinetuneConfig, finetune_segmenter

    _, items = _labelled(tmp_path)
    before = sha256_of_file(BUNDLE_WEIGHTS)
    runs = [finetune_segmenter(items, FinetuneConfig(out_dir=tmp_path / f"run{i}", steps=2, batch=2, seed=7))
            for i in range(2)]
    assert sha256_of_file(runs[0]) == sha256_of_file(runs[1]) != before
    assert sha256_of_file(BUNDLE_WEIGHTS) == before
    record = json.loads((runs[0].parent / "training.json").read_text())
    assert record["initialised_from"]["sha256"] == before and record["recipe"]["seed"] == 7
    assert [i["label_sha256"] for i in record["labelled"]] == [sha256_of_file(Path(i["label"])) for i in items]
    assert len(record["loss"]) == 2 and set(record["labelled_dice_after"]) == {"lung_right", "lung_left", "heart"}
    other = finetune_segmenter(items, FinetuneConfig(out_dir=tmp_path / "seed8", steps=2, batch=2, seed=8))
    assert sha256_of_file(other) != sha256_of_file(runs[0])


def test_finetune_refuses_too_few_labels_in_one_line(tmp_path: Path) -> None:
    _, items = _labelled(tmp_path)
    manifest = tmp_path / "pairs.json"
    manifest.write_text(json.dumps(items[:2]))
    done = _medcf("train", "segmenter-labels", "--pairs", manifest, "--out", tmp_path / "out")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "2 labelled film(s); fine-tuning needs at least 3" in done.stderr
    assert not (tmp_path / "out").exists()


def test_anatomy_score_ranks_least_sure_first(tmp_path: Path) -> None:
    films = _films(tmp_path / "films")
    missing = tmp_path / "gone.nii.gz"
    done = _medcf("anatomy-score", films["a"], films["d"], films["b"], missing)
    assert done.returncode == 0, done.stderr
    ranked = json.loads(done.stdout)
    assert [Path(r["input"]) for r in ranked][:2] == [missing, films["d"]] and len(ranked) == 4
    assert "no such file" in ranked[0]["error"] and ranked[1]["failed"] and not ranked[1]["plausible"]
    sure = [r for r in ranked if r["plausible"]]
    assert len(sure) == 2 and all(r["confidence"] > 0.9 for r in sure)
    assert sure[0]["confidence"] <= sure[1]["confidence"] and np.isfinite(sure[0]["confidence"])
