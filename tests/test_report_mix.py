"""``medcf pairs --from-reports``: the (finding, side, zone, severity) mix of a report corpus,
read as ``--from-report`` reads one report, and pairs drawn with its frequencies."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from medcf.editing.report_mix import Bucket, Combination, mix_of
from medcf.editing.spec import EditSpec
from medcf.errors import InputError
from medcf.text.corpus import read_corpus
from medcf.vocab import Action, Finding, Side

ROOT = Path(__file__).resolve().parents[1]
needs_weights = pytest.mark.skipif(not (ROOT / "monai_bundle" / "models" / "unet.safetensors").is_file(),
                                   reason="the committed default model is missing")
BASE = EditSpec(Finding.PLEURAL_EFFUSION, Action.ADD, Side.LEFT, seed=7)
EFFUSION = Combination("pleural_effusion", "left", "-", "mild")
HEART = Combination("cardiomegaly", "-", "-", "moderate")
PNEUMOTHORAX = Combination("pneumothorax", "right", "upper", "severe")


def _medcf(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medcf", *map(str, args)], capture_output=True, text=True)


def write_corpus(path: Path, rows: list[tuple[str, str]], columns=("id", "report")) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(rows)
    return path


@pytest.fixture
def corpus(tmp_path) -> Path:
    """90 effusions, 9 enlarged hearts, one pneumothorax and 20 normal reports (one hedged)."""
    rows = [(f"e{i}", "FINDINGS: Small left pleural effusion.") for i in range(90)]
    rows += [(f"h{i}", "IMPRESSION: The heart is enlarged.") for i in range(9)]
    rows += [("p", "Large right apical pneumothorax.")]
    rows += [(f"n{i}", "No acute cardiopulmonary abnormality.") for i in range(19)]
    rows += [("q", "Possible small right effusion.")]
    return write_corpus(tmp_path / "reports.csv", rows)


def test_the_mix_counts_what_the_editor_would_make_and_buckets_the_tail(corpus):
    mix = mix_of(read_corpus(corpus), Action.ADD, BASE)
    assert (mix.reports, mix.without, mix.stated) == (120, 20, 100)  # the hedged report states nothing to add
    assert mix.counts == Counter({EFFUSION: 90, HEART: 9, PNEUMOTHORAX: 1})  # no severity stated: the base's
    assert [mix.bucket(c) for c in (EFFUSION, HEART, PNEUMOTHORAX)] == [Bucket.HEAD, Bucket.HEAD, Bucket.MEDIUM]
    drawn = mix.draw(4000, BASE)
    made = Counter(Combination.of(s) for s in drawn)
    assert abs(made[EFFUSION] / 4000 - 0.90) < 0.02 and abs(made[HEART] / 4000 - 0.09) < 0.02 and made[PNEUMOTHORAX]
    assert [s.seed for s in drawn[:3]] == [7, 8, 9] and all(s.action is Action.ADD for s in drawn)
    assert mix.draw(50, BASE) == drawn[:50]  # the same seed draws the same pairs
    facts = mix.to_dict(drawn)
    assert [c["pairs"] for c in facts["combinations"]] == [made[EFFUSION], made[HEART], made[PNEUMOTHORAX]]
    assert "| pneumothorax | right | upper | severe | 1 | 0.010 | medium |" in mix.to_markdown(drawn)


def test_bad_corpora_are_one_line_errors(tmp_path):
    for source, words in ((tmp_path / "none.csv", "no such file"),
                          (write_corpus(tmp_path / "cols.csv", [("1", "x")], ("id", "body")), "no 'report' column"),
                          (write_corpus(tmp_path / "blank.csv", [("1", " ")]), "no report text"),
                          (tmp_path / "reports.txt", "give a .csv")):
        if source.suffix == ".txt":
            source.write_text("Small left effusion.")
        with pytest.raises(InputError, match=words):
            read_corpus(source)
    (tmp_path / "folder").mkdir()
    with pytest.raises(InputError, match="no .txt report"):
        read_corpus(tmp_path / "folder")
    (tmp_path / "folder" / "a.txt").write_text("Normal chest.")
    with pytest.raises(InputError, match="none of the 1 report"):
        mix_of(read_corpus(tmp_path / "folder"), Action.ADD, BASE).draw(3, BASE)


def test_the_default_corpus_is_iu_reports_1_to_1000_only(tmp_path, monkeypatch):
    from medcf.text.iu import installed_archive

    assert installed_archive() is not None  # make install puts torchxrayvision (its data only) in MedCF's environment
    monkeypatch.setenv("MEDCF_CACHE", str(tmp_path))  # extracted here from the installed package, nothing fetched
    corpus = read_corpus(None)
    ids = [int(i) for i, _ in corpus.reports]
    assert len(ids) == 989 and min(ids) >= 1 and max(ids) <= 1000
    assert sorted(int(p.stem) for p in (tmp_path / "iu-reports").glob("*.xml")) == sorted(ids)


@needs_weights
@pytest.mark.slow
def test_pairs_from_reports_follow_the_corpus_and_say_its_mix(corpus, tmp_path):
    out = tmp_path / "pairs"
    done = _medcf("pairs", "--from-reports", corpus, "--action", "add", "--n", "3", "--method", "regulated",
                  "--steps", "6", "--seed", "3", "--quiet", "--out", out)
    assert done.returncode == 0, done.stderr
    assert "120 reports, 100 editable findings in 3 combinations (20 reports state none)" in done.stderr
    records = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    mix = json.loads((out / "report_mix.json").read_text())
    from dataclasses import replace

    expected = mix_of(read_corpus(corpus), Action.ADD, BASE).draw(3, replace(BASE, seed=3))
    assert [(r["finding"], r["side"], r["seed"]) for r in records] == \
        [(s.finding.value, s.side.value if s.side else None, s.seed) for s in expected]
    assert sum(c["pairs"] for c in mix["combinations"]) == 3 and mix["reports_without_editable_finding"] == 20
    assert (out / "report_mix.md").is_file() and (out / "panel.png").is_file()
    bad = _medcf("pairs", "--from-reports", corpus, "--action", "add", "--finding", "nodule", "--side", "left",
                 "--out", tmp_path / "bad")
    assert bad.returncode == 2 and "exclude each other" in bad.stderr and bad.stderr.count("\n") == 1
    assert not (tmp_path / "bad").exists()
