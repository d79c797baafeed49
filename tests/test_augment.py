"""The augmentation suite of `medcf bench` (issue 7): pair planning, prompt labels, and a
small end-to-end run on the test CT with the committed default model."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from medcf.editing.spec import Method
from medcf.errors import InputError
from medcf.eval.augment import AugmentOptions, arm_folder, film_record, plan_pair_specs
from medcf.eval.judge import LABELS, labels_of
from medcf.vocab import Action, Finding, Side

ROOT = Path(__file__).resolve().parents[1]


def test_pair_plans_cover_every_finding_alternate_actions_and_are_seeded():
    plans = plan_pair_specs(28, Method.STEER)
    assert [spec.finding for spec, _ in plans[:7]] == list(Finding)
    assert {spec.action for spec, _ in plans[:7]} == {Action.ADD}
    assert {spec.action for spec, _ in plans[7:14]} == {Action.REMOVE}
    assert len({spec.seed for spec, _ in plans}) == 28
    assert [(s.side, s.severity, v) for s, v in plans] == [(s.side, s.severity, v)
                                                           for s, v in plan_pair_specs(28, Method.STEER)]
    assert all(spec.side is None for spec, _ in plans if spec.finding is Finding.CARDIOMEGALY)


def test_generated_films_are_labelled_by_their_prompts():
    spec, view = plan_pair_specs(1, Method.STEER)[0]  # add a pleural effusion
    present = film_record(spec, view, True, "counterfactual")
    target, known = labels_of(present)
    assert target[LABELS.index("pleural_effusion")] == 1 and target.sum() == 1 + (2 if spec.side is Side.BILATERAL else 1)
    assert known.all()
    absent, _ = labels_of(film_record(spec, view, False, "factual"))
    assert absent.sum() == 0


def test_options_fail_early():
    with pytest.raises(InputError, match="--generated must be at least 1"):
        AugmentOptions(out=Path("x"), generated=0)
    with pytest.raises(InputError, match="--size"):
        AugmentOptions(out=Path("x"), size=8)
    with pytest.raises(InputError, match="--pair-methods is empty"):
        AugmentOptions(out=Path("x"), methods=())
    options = AugmentOptions(out=Path("x"), n=5, methods=("steer", "regulated+steer", "steer"))
    assert options.generated == 5
    assert options.arms == ("rendered", "+medcf/steer", "+medcf/regulated+steer", "+reprompt")
    assert arm_folder("+medcf/regulated+steer") == "medcf-regulated-steer"


def test_cli_bad_option_is_one_line(tmp_path):
    run = subprocess.run([sys.executable, "-m", "medcf", "bench", "--suite", "augmentation", "--n", "0",
                          "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and "--n must be at least 1" in run.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not (ROOT / "monai_bundle" / "models" / "unet.safetensors").is_file(),
                    reason="the default model's weights are not committed in this checkout")
@pytest.mark.slow
def test_augmentation_suite_end_to_end(tmp_path, monkeypatch):
    from medcf.eval.augment import run_augmentation_suite
    from medcf.world.ct import load_chest_ct

    small = {"spatial_dims": 2, "in_channels": 1, "out_channels": len(LABELS), "init_features": 8,
             "growth_rate": 8, "block_config": [2, 2], "bn_size": 2}
    options = AugmentOptions(out=tmp_path / "aug", n=4, generated=3, heldout=7, steps=3, size=32, repeats=1,
                             first_seed=2, methods=("steer", "regulated", "causal", "auto"), network=small,
                             progress=False)
    result = run_augmentation_suite(options, ct=load_chest_ct(ROOT / "tests" / "data" / "ct_fixture.npz"))
    out = tmp_path / "aug"
    data = json.loads((out / "results.json").read_text())
    arms = options.arms
    assert {r["arm"] for r in data["rows"]} == set(arms) and len(data["rows"]) == len(arms) * len(Finding)
    assert data["settings"]["train_films"] == {"rendered": 8, "+medcf/steer": 14, "+medcf/regulated": 14,
                                               "+medcf/causal": 14, "+medcf/auto": 14, "+reprompt": 14}
    assert list(result["summary"]) == list(arms)
    medcf, regulated, causal, auto, reprompt = (np.load(out / "data" / f"generated-{k}.npz") for k in
                                                ("medcf-steer", "medcf-regulated", "medcf-causal", "medcf-auto", "reprompt"))
    assert np.array_equal(medcf["images"][0::2], reprompt["images"][0::2])  # the same factual films
    assert np.array_equal(medcf["images"][0::2], regulated["images"][0::2])
    assert np.array_equal(medcf["images"][0::2], causal["images"][0::2])  # causal re-draws a steer pair's factual
    assert np.array_equal(medcf["images"][0::2], auto["images"][0::2])
    # auto is the model's measured choice per finding and action, recorded with the run
    from medcf.bundle import bundle_path
    from medcf.editing.defaults import DEFAULTS_FILE

    shipped = json.loads(bundle_path("models", DEFAULTS_FILE).read_text())["choices"]
    assert data["settings"]["auto_choices"] == shipped
    assert not np.array_equal(medcf["images"][1::2], regulated["images"][1::2])  # two methods, two edits
    assert not np.array_equal(causal["images"][1::2], causal["images"][0::2])
    factual = medcf["images"][0::2].astype(np.float32) / 65535
    change = {k: np.abs(d["images"][1::2].astype(np.float32) / 65535 - factual) for k, d in
              (("medcf", medcf), ("reprompt", reprompt))}
    # MedCF holds everything outside the edit region; re-prompting redraws the film
    assert (change["medcf"] > 1e-3).mean() < 0.5 * (change["reprompt"] > 1e-3).mean()
    records = json.loads(str(medcf["records"]))
    assert [r["finding"] for r in records[:2]] == ["none", "pleural_effusion"]  # add: factual without it
    assert "| +medcf/regulated |" in (out / "results.md").read_text() and (out / "examples.png").is_file()
    assert (out / "classifiers" / "medcf-regulated-seed2" / "judge" / "judge.json").is_file()
    assert {r["repeat"] for r in data["rows"]} == {2} and data["settings"]["classifier_seeds"] == [2]
    # the data each arm trained on is recorded by content, so runs adding seeds can be pooled
    from medcf.eval.augment import world_set_digest

    digests = data["settings"]["data_sha256"]
    assert set(digests) == {"heldout", *arms}
    assert digests["+reprompt"] == world_set_digest(out / "data" / "generated-reprompt.npz")
    assert len(set(digests.values())) == len(digests)
    # what the pairs hold: labels the benchmark's judge agrees with, and how much each changes
    report = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "augmentation_pairs.py"), str(out),
                             "--out", str(tmp_path / "pairs.md"), "--model-check"], capture_output=True, text=True)
    assert report.returncode == 0, report.stderr
    labels, check_table = report.stdout.split("Would the model's own check")
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in labels.splitlines()
            if line.startswith("| +")}
    assert set(rows) == set(arms[1:])
    assert float(rows["+medcf/steer"][4]) < float(rows["+reprompt"][4])  # MedCF holds the film outside the region
    assert (tmp_path / "pairs.md").read_text() == report.stdout
    # the model's own check per arm and finding: the pairs it passes, the judge's agreement either side
    checks = [line.split(" | ") for line in check_table.splitlines() if line.startswith("| +") and " | all | " in line]
    assert [c[0].strip("| ") for c in checks] == list(arms[1:]) and all(c[3] == "3" for c in checks)
    assert all(0.0 <= float(c[4]) <= 1.0 for c in checks)
    # a second run over the same data, for two arms, trains only the classifiers the first did not
    again = run_augmentation_suite(replace(options, out=tmp_path / "again", methods=("steer",), repeats=2,
                                           reuse=(out,), train_arms=("+reprompt", "+medcf/steer")),
                                   ct=load_chest_ct(ROOT / "tests" / "data" / "ct_fixture.npz"))
    settings = again["settings"]
    assert settings["data_sha256"] == {k: digests[k] for k in settings["data_sha256"]}
    assert set(settings["data_sha256"]) == {"heldout", "rendered", "+medcf/steer", "+reprompt"}
    assert settings["arms"] == ["+medcf/steer", "+reprompt"] and list(again["summary"]) == settings["arms"]
    assert settings["reused_classifiers"]["seeds"] == {"+medcf/steer": [2], "+reprompt": [2]}
    assert [r for r in again["rows"] if r["repeat"] == 2] == [r for r in data["rows"] if r["repeat"] == 2
                                                              and r["arm"] in settings["arms"]]
    trained = sorted(p.name for p in (tmp_path / "again" / "classifiers").iterdir())
    assert trained == ["medcf-steer-seed3", "reprompt-seed3"]
    table = (tmp_path / "again" / "results.md").read_text()
    assert "Classifiers taken from" in table and "| rendered |" not in table
    # a run is written after every seed: one stopped part-way keeps the seeds it finished
    import medcf.eval.augment

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(medcf.eval.augment, "train_judge", stopped)
    with pytest.raises(KeyboardInterrupt):
        run_augmentation_suite(replace(options, out=tmp_path / "stopped", methods=("steer",), repeats=2,
                                       reuse=(out,), train_arms=("+reprompt", "+medcf/steer")),
                               ct=load_chest_ct(ROOT / "tests" / "data" / "ct_fixture.npz"))
    kept = json.loads((tmp_path / "stopped" / "results.json").read_text())
    assert kept["settings"]["classifier_seeds"] == [2] and "1 of 2 classifier seeds" in kept["settings"]["partial"]
    assert kept["rows"] == again["rows"][:len(kept["rows"])] and {r["repeat"] for r in kept["rows"]} == {2}
    assert "Partial: written after 1 of 2" in (tmp_path / "stopped" / "results.md").read_text()
    assert "partial" not in settings and settings["machine"]
    with pytest.raises(InputError, match=r"--train-arms \+medcf/auto: not an arm"):
        replace(options, methods=("steer",), train_arms=("+medcf/auto",))


def _fake_run(seeds: list[int], auc: dict[str, float], digest: str = "d1", **changes) -> dict:
    """A results.json as the suite writes it: every arm and finding per classifier seed, the
    macro AUC of arm A at seed k being auc[A] + k / 100."""
    arms = ["rendered", "+medcf/auto", "+reprompt"]
    rows = [{"arm": arm, "repeat": seed, "finding": f.value, "auc": auc[arm] + seed / 100}
            for seed in seeds for arm in arms for f in Finding]
    settings = {"n": 100, "generated": 100, "heldout": 300, "steps": 2000, "size": 128, "batch": 16, "network": None,
                "methods": ["auto"], "arms": arms, "train_films": {a: 400 for a in arms}, "heldout_films": 600,
                "seeds": {"pairs": 1_600_000}, "auto_choices": [], "repeats": len(seeds),
                "classifier_seeds": seeds, "data_sha256": {"+reprompt": digest}, "train_s": 1.0}
    from medcf.eval.augment import summarize

    return {"rows": rows, "summary": summarize(rows, tuple(arms)), "settings": {**settings, **changes}}


def test_combining_runs_pools_disjoint_seeds_over_the_same_data_and_refuses_the_rest():
    from medcf.eval.augment import combine_runs

    auc = {"rendered": 0.60, "+medcf/auto": 0.70, "+reprompt": 0.65}
    pooled = combine_runs([_fake_run([0, 1], auc), _fake_run([2, 3, 4], auc)])
    assert pooled["settings"]["classifier_seeds"] == [0, 1, 2, 3, 4] and pooled["settings"]["repeats"] == 5
    auto = pooled["summary"]["+medcf/auto"]
    assert auto["macro_per_repeat"] == pytest.approx([0.70, 0.71, 0.72, 0.73, 0.74])
    assert auto["macro_auc"] == pytest.approx(0.72)
    # a run made before seeds and digests were recorded: seeds 0..repeats-1, trusted on its settings
    legacy = _fake_run([0, 1], auc)
    del legacy["settings"]["classifier_seeds"], legacy["settings"]["data_sha256"]
    assert combine_runs([legacy, _fake_run([2], auc)])["settings"]["classifier_seeds"] == [0, 1, 2]
    with pytest.raises(InputError, match=r"repeats classifier seeds \[1\]"):
        combine_runs([_fake_run([0, 1], auc), _fake_run([1, 2], auc)])
    with pytest.raises(InputError, match="other data"):
        combine_runs([_fake_run([0], auc), _fake_run([1], auc, digest="d2")])
    with pytest.raises(InputError, match="'steps'"):
        combine_runs([_fake_run([0], auc), _fake_run([1], auc, steps=500)])
    # another machine renders the same sets with other bits: pooled only when asked, and only
    # runs whose every seed trained every arm (each seed's paired difference on one machine)
    elsewhere = _fake_run([1, 2], auc, digest="d2", machine="CPU B, 16 CPUs")
    across = combine_runs([_fake_run([0], auc, machine="CPU A, 2 CPUs"), elsewhere], across_machines=True)
    assert across["settings"]["classifier_seeds"] == [0, 1, 2] and "data_sha256" not in across["settings"]
    assert [e["machine"] for e in across["settings"]["combined_from"]] == ["CPU A, 2 CPUs", "CPU B, 16 CPUs"]
    assert across["settings"]["combined_from"][1]["data_sha256"] == {"+reprompt": "d2"}
    assert "like for like" in across["settings"]["across_machines"]
    one_arm = _fake_run([3], auc, digest="d3")
    one_arm["rows"] = [r for r in one_arm["rows"] if r["arm"] != "+reprompt"]
    with pytest.raises(InputError, match=r"lacks \+reprompt seed 3"):
        combine_runs([_fake_run([0], auc), one_arm], across_machines=True)
    with pytest.raises(InputError, match="at least two"):
        combine_runs([_fake_run([0], auc)])


@pytest.mark.integration  # a chain of medcf subprocesses
def test_combine_script_writes_the_pooled_table_and_a_paired_comparison(tmp_path):
    auc = {"rendered": 0.60, "+medcf/auto": 0.70, "+reprompt": 0.65}
    for name, seeds in (("a", [0, 1]), ("b", [2, 3]), ("c", [3])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(_fake_run(seeds, auc)))
    script = [sys.executable, str(ROOT / "benchmarks" / "combine_augmentation.py")]
    run = subprocess.run([*script, str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "pooled"),
                          "--compare", "+medcf/auto", "+reprompt"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    table = (tmp_path / "pooled" / "results.md").read_text()
    assert "4 seeds" in table and "| +medcf/auto | 0.715 |" in table
    assert "| difference | +0.050 | +0.050 | +0.050 | +0.050 | +0.050 |" in table
    assert "ahead on 4 of 4 seeds" in table
    pooled = json.loads((tmp_path / "pooled" / "results.json").read_text())
    assert [e["run"] for e in pooled["settings"]["combined_from"]] == [str(tmp_path / "a"), str(tmp_path / "b")]
    bad = subprocess.run([*script, str(tmp_path / "b"), str(tmp_path / "c"), "--out", str(tmp_path / "bad")],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "repeats classifier seeds [3]" in bad.stderr
    assert not (tmp_path / "bad").exists()
    alone = subprocess.run([*script, str(tmp_path / "b"), "--out", str(tmp_path / "alone"), "--compare", "+reprompt",
                            "rendered"], capture_output=True, text=True)
    assert alone.returncode == 0, alone.stderr
    assert "2 seeds" in alone.stdout and "| difference | +0.050 | +0.050 | +0.050 | 0.000 |" in alone.stdout
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "results.json").write_text(json.dumps(_fake_run([4], auc, digest="d2", machine="CPU B, 2 CPUs")))
    refused = subprocess.run([*script, str(tmp_path / "a"), str(tmp_path / "d"), "--out", str(tmp_path / "no")],
                             capture_output=True, text=True)
    assert refused.returncode != 0 and "--across-machines" in refused.stderr and not (tmp_path / "no").exists()
    across = subprocess.run([*script, str(tmp_path / "a"), str(tmp_path / "d"), "--out", str(tmp_path / "across"),
                             "--across-machines", "--compare", "+medcf/auto", "+reprompt"], capture_output=True, text=True)
    assert across.returncode == 0, across.stderr
    assert "Machines: seeds 0, 1 on a machine not recorded; seeds 4 on CPU B, 2 CPUs." in across.stdout
    assert "Pooled across machines" in across.stdout and "ahead on 3 of 3 seeds" in across.stdout


def test_a_run_reuses_only_classifiers_it_would_train_identically():
    from medcf.eval.augment import reusable_rows

    auc = {"rendered": 0.60, "+medcf/auto": 0.70, "+reprompt": 0.65}
    digests = {"heldout": "h", "rendered": "r", "+medcf/auto": "new pairs", "+reprompt": "p"}
    earlier = _fake_run([0, 1], auc, data_sha256={"heldout": "h", "rendered": "r", "+medcf/auto": "old pairs",
                                                  "+reprompt": "p"})
    options = {"steps": 2000, "size": 128, "batch": 16, "network": None}
    found = reusable_rows([earlier], options, digests)
    # the arm whose pairs changed is trained again; the others are taken, one row per finding
    assert set(found) == {("rendered", 0), ("rendered", 1), ("+reprompt", 0), ("+reprompt", 1)}
    assert [r["auc"] for r in found["+reprompt", 1]] == [0.66] * len(Finding)
    # a seed held by two runs is taken from the first
    other = _fake_run([1], {k: 0.5 for k in auc}, data_sha256=earlier["settings"]["data_sha256"])
    assert reusable_rows([earlier, other], options, digests)["+reprompt", 1][0]["auc"] == 0.66
    # other classifier settings, other held-out films, other rendered films or no digests: nothing
    assert reusable_rows([earlier], {**options, "steps": 500}, digests) == {}
    assert reusable_rows([earlier], options, {**digests, "heldout": "h2"}) == {}
    assert reusable_rows([earlier], options, {**digests, "rendered": "r2"}) == {}
    legacy = _fake_run([0], auc)
    del legacy["settings"]["data_sha256"]
    assert reusable_rows([legacy], options, digests) == {}
