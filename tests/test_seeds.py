"""Seed ranges: every suite's patients come from where it is told, never from training seeds."""

from __future__ import annotations

import pytest

import medcf.eval.bench as bench
from medcf.cli import main
from medcf.errors import InputError
from medcf.vocab import Finding
from medcf.world.seeds import HELD_OUT_START, SeedRange, require_held_out


def test_ranges_are_distinct_and_on_their_side_of_the_held_out_boundary():
    starts = [r.start for r in SeedRange]
    assert len(set(starts)) == len(starts)
    for name in ("GENERATOR_TRAIN", "SEGMENTER_TRAIN", "JUDGE_TRAIN", "AUGMENT_TRAIN"):
        assert not SeedRange[name].held_out
    for name in ("TUNING", "BENCHMARK", "PLAUSIBILITY", "AUGMENT_HELD_OUT", "SWAP", "LONGTAIL"):
        assert SeedRange[name].held_out
    assert bench.BENCH_SEED == SeedRange.BENCHMARK.start != bench.TUNING_SEED == SeedRange.TUNING.start


def test_require_held_out_refuses_training_seeds():
    require_held_out(HELD_OUT_START, HELD_OUT_START + 10, "x")
    with pytest.raises(InputError, match="reach into the training seeds"):
        require_held_out(HELD_OUT_START - 1, HELD_OUT_START + 10, "x")


def test_suite_seeds_span_every_finding_block():
    seeds = bench.suite_seeds(6_000_000, 3)
    assert seeds.start == 6_000_000
    assert seeds.stop - 1 == 6_000_000 + bench.FINDING_SEED_STRIDE * (len(Finding) - 1) + 2
    with pytest.raises(InputError):
        bench.suite_seeds(0, 3)


def test_cli_first_seed_reaches_the_counterfactual_suite(tmp_path, monkeypatch, capsys):
    """`medcf bench --suite counterfactual --first-seed S` renders its patients from S (it once
    reached the augmentation suite's option instead and rendered training patients)."""
    seen = {}

    def stop_before_editing(n, methods, findings, size, first_seed, *rest):
        seen["first_seed"], seen["n"] = first_seed, n
        raise InputError("stopped by the test before any edit")

    monkeypatch.setattr(bench, "bundle_judge", lambda: object())
    monkeypatch.setattr(bench, "make_suite_edits", stop_before_editing)
    code = main(["bench", "--suite", "counterfactual", "--first-seed", "6000000", "--n", "1", "--quiet",
                 "--out", str(tmp_path / "run")])
    assert code == 2 and "stopped by the test" in capsys.readouterr().err
    assert seen == {"first_seed": 6_000_000, "n": 1}


def test_cli_refuses_a_training_first_seed_in_one_line(tmp_path, capsys):
    code = main(["bench", "--suite", "counterfactual", "--first-seed", "5", "--n", "1", "--quiet",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "reach into the training seeds" in err
    assert not (tmp_path / "run").exists()
