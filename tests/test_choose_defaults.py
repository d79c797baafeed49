"""benchmarks/choose_edit_defaults.py: the rule that picks ``--method auto``'s settings, and
``--supersede`` (a later sweep, scored by a re-calibrated judge, decides the cells it holds)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def chooser():
    spec = importlib.util.spec_from_file_location("choose_edit_defaults", ROOT / "benchmarks" / "choose_edit_defaults.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(folder: Path, depth: float, rows: list[tuple], strength: float = 1.0) -> None:
    from medcf.eval.bench import TUNING_SEED

    folder.mkdir(parents=True)
    result = {"settings": {"first_seed": TUNING_SEED, "ours": {"depth": depth, "strength": strength,
                                                                "energy": False, "passes": 1, "guidance": 4.0}},
              "rows": [{"concept": c, "action": a, "method": m, "n": 6, "flip_rate": f, "fidelity_psnr": p}
                       for c, a, m, f, p in rows]}
    (folder / "results.json").write_text(json.dumps(result))


def test_highest_flip_wins_ties_go_to_fidelity_and_a_later_sweep_decides_its_cells(chooser, tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    _run(old / "d05", 0.5, [("nodule", "add", "steer", 0.0, 40.0), ("edema", "add", "steer", 1.0, 30.0),
                            ("edema", "add", "reprompt", 1.0, 50.0)])  # a baseline never counts
    _run(old / "d03", 0.3, [("nodule", "add", "causal", 0.0, 45.0), ("edema", "add", "causal", 1.0, 31.0)])
    _run(old / "strong", 0.3, [("edema", "add", "causal", 1.0, 60.0)], strength=1.5)  # a choice cannot hold it
    rows = chooser.candidates(old)
    chosen = chooser.choose(rows)
    assert chosen["edema"]["add"]["method"] == "causal" and chosen["edema"]["add"]["fidelity_psnr"] == 31.0
    assert chosen["nodule"]["add"]["method"] == "causal"  # 0 flips everywhere: the more faithful
    _run(new / "a" / "d05", 0.5, [("nodule", "add", "steer", 0.5, 38.0)])
    merged = chooser.superseded(rows, chooser.candidates(new))
    chosen = chooser.choose(merged)
    assert chosen["nodule"]["add"]["method"] == "steer" and chosen["nodule"]["add"]["flip_rate"] == 0.5
    assert chosen["edema"]["add"]["method"] == "causal"  # cells the later sweep lacks keep the first's rows
    assert {r["run"] for r in merged if r["concept"] == "nodule"} == {"new/a/d05"}
