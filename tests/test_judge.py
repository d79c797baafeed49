"""The benchmark's finding judge: labels, AUC, thresholds, training and saving."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medcf.vocab import Finding
from tests import model_fixtures
from medcf.eval.judge import LABELS, Judge, auc, labels_of, youden_threshold
from medcf.eval.judge_training import JudgeOptions, train_judge


def _small_network(in_channels: int = 3) -> dict:
    """A DenseNet definition small enough to train in seconds (the tests are about the pipeline)."""
    return {"spatial_dims": 2, "in_channels": in_channels, "out_channels": len(LABELS), "init_features": 8,
            "growth_rate": 8, "block_config": [2, 2], "bn_size": 2}


def test_labels_know_presence_and_the_main_finding_side_only():
    target, known = labels_of({"finding": "pleural_effusion", "side": "left", "background": ["nodule"]})
    on = {LABELS[i] for i in np.flatnonzero(target)}
    assert on == {"pleural_effusion", "nodule", "pleural_effusion_left"}
    assert known[LABELS.index("nodule_left")] == 0 and known[LABELS.index("pleural_effusion_right")] == 1
    target, _ = labels_of({"finding": "edema", "side": "bilateral", "background": []})
    assert target[LABELS.index("edema_left")] == 1 and target[LABELS.index("edema_right")] == 1
    target, known = labels_of({"finding": "none", "side": None, "background": []})
    assert target.sum() == 0 and known.all()


def test_auc_and_threshold():
    assert auc(np.array([0.9, 0.8, 0.1, 0.2]), np.array([1, 1, 0, 0])) == 1.0
    assert auc(np.array([0.1, 0.2, 0.9, 0.8]), np.array([1, 1, 0, 0])) == 0.0
    assert auc(np.array([0.5, 0.5, 0.5, 0.5]), np.array([1, 0, 1, 0])) == 0.5
    assert np.isnan(auc(np.array([0.3, 0.4]), np.array([1, 1])))
    assert youden_threshold(np.array([0.9, 0.7, 0.4, 0.1]), np.array([1, 1, 0, 0])) == 0.7


def _blob_set(path: Path, n: int, seed: int, size: int = 64) -> Path:
    """Films with a bright blob low on the image right (the patient's left) for 'effusion'."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    images, records = [], []
    for i in range(n):
        image = 0.3 + 0.05 * rng.standard_normal((size, size))
        effusion = i % 2 == 1
        if effusion:
            image += 0.5 * np.exp(-((xx - 0.75) ** 2 + (yy - 0.75) ** 2) / 0.01)
        images.append(np.rint(np.clip(image, 0, 1) * 65535).astype(np.uint16))
        records.append({"finding": "pleural_effusion" if effusion else "none", "side": "left" if effusion else None,
                        "background": []})
    return model_fixtures.write_world_set(path, images, records)


@pytest.mark.slow
def test_judge_trains_resumes_evaluates_and_reloads(tmp_path):
    small = _small_network()
    options = dict(n_pairs=40, heldout_pairs=20, size=64, steps=60, batch=16, learning_rate=3e-3, threads=1,
                   checkpoint_every=20, progress=False, data=_blob_set(tmp_path / "train.npz", 80, 0),
                   heldout_data=_blob_set(tmp_path / "heldout.npz", 40, 1), network=small,
                   autoencoded=False, reports=False)
    stopped = train_judge(JudgeOptions(out=tmp_path / "run", max_minutes=0.0, **options))
    assert stopped["stopped_at"] == 1
    report = train_judge(JudgeOptions(out=tmp_path / "run", resume=True, **options))
    assert report["auc"]["pleural_effusion"] > 0.9
    assert report["auc"]["pleural_effusion_left"] is None  # every effusion is left: no negatives to rank
    judge = Judge.load(tmp_path / "run" / "judge")
    assert judge.thresholds["pleural_effusion"] == pytest.approx(report["threshold"]["pleural_effusion"], abs=1e-4)
    films = np.load(tmp_path / "heldout.npz")["images"].astype(np.float32) / 65535
    decided = judge.present(judge.probabilities(films), Finding.PLEURAL_EFFUSION)
    truth = np.arange(len(films)) % 2 == 1
    assert (decided == truth).mean() > 0.85
    assert judge.features(films[:3]).shape[0] == 3


def test_coordinate_channels_tell_left_from_right():
    import torch

    from medcf.eval.judge import _prepare

    films = np.zeros((2, 32, 32), np.float32)
    x = _prepare(films, 16, channels=3)
    assert x.shape == (2, 3, 16, 16)
    assert float(x[0, 1, 0, 0]) == -1.0 and float(x[0, 1, 0, -1]) == 1.0  # columns: image left to right
    assert float(x[0, 2, 0, 0]) == -1.0 and float(x[0, 2, -1, 0]) == 1.0  # rows: top to bottom
    assert torch.equal(_prepare(films, 16), x[:, :1])  # one-channel judges see the film alone


ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not (ROOT / "monai_bundle" / "models" / "unet.safetensors").is_file(),
                    reason="the default model's weights are not committed in this checkout")
@pytest.mark.slow
def test_counterfactual_suite_writes_the_issue_schema(tmp_path):
    from medcf.errors import InputError
    from medcf.eval.bench import rescore_suite, run_counterfactual_suite
    from medcf.eval.judge import build_network
    from medcf.world.ct import load_chest_ct

    small = _small_network(1)
    judge = Judge(build_network(small).eval(), 64)  # an untrained judge: the test is about the pipeline
    ct = load_chest_ct(ROOT / "tests" / "data" / "ct_fixture.npz")
    result = run_counterfactual_suite(1, tmp_path / "bench", methods=["sdedit", "sdedit+mask", "steer"],
                                      findings=(Finding.PLEURAL_EFFUSION,), judge=judge, ct=ct, progress=False,
                                      keep_films=tmp_path / "films")
    data = json.loads((tmp_path / "bench" / "results.json").read_text())
    keys = {"concept", "action", "method", "flip_rate", "ssim_out", "psnr_out", "dice_lungs", "dice_heart",
            "fidelity_psnr", "fidelity_ssim", "truth_gain", "fid", "sec_per_edit"}
    assert len(data["rows"]) == 6 and all(keys <= set(row) for row in data["rows"])
    by = {(r["action"], r["method"]): r for r in data["rows"]}
    assert by[("add", "steer")]["psnr_out"] == 100.0  # MedCF leaves the outside exactly as it was
    assert by[("add", "sdedit")]["psnr_out"] < 100.0  # a baseline without a region does not
    assert by[("add", "sdedit+mask")]["psnr_out"] == 100.0  # ... until it is composited into MedCF's region
    assert by[("add", "sdedit+mask")]["sec_per_edit"] == by[("add", "sdedit")]["sec_per_edit"]  # one sampling
    assert by[("add", "sdedit+mask")]["fidelity_psnr"] != by[("add", "sdedit")]["fidelity_psnr"]
    assert all(r["truth_gain"] <= 1.0 for r in data["rows"])
    assert data["settings"]["baselines"]["sdedit+mask"]["region"] is True
    assert all(0.0 <= r[k] <= 1.0 for r in data["rows"] for k in ("flip_rate", "flip_rate_unedited",
                                                                     "model_target_rate"))
    assert all(r["fid"] >= 0 for r in data["rows"])
    assert by[("add", "steer")]["flip_rate_unedited"] == by[("add", "sdedit")]["flip_rate_unedited"]  # same inputs
    assert "| ALL | add | steer |" in (tmp_path / "bench" / "results.md").read_text()
    assert "AUC not measured" in data["rows"][0]["judge_caveats"]  # an untrained judge is not trusted
    assert (tmp_path / "bench" / "examples.png").is_file() and result["settings"]["baselines"]["sdedit"]
    # the kept films, scored again by the same judge without editing, give the same rows
    again = rescore_suite(tmp_path / "films", tmp_path / "again", judge)
    assert json.dumps(again["rows"]) == json.dumps(data["rows"]) and again["settings"] == data["settings"]
    with pytest.raises(InputError, match="no suite-films.npz"):
        rescore_suite(tmp_path / "bench", tmp_path / "third", judge)
    with pytest.raises(InputError, match="folder of its own"):
        run_counterfactual_suite(1, tmp_path / "same", keep_films=tmp_path / "same", judge=judge, ct=ct)


def test_truth_gain_measures_the_share_of_the_true_change():
    from medcf.eval.bench import truth_gain

    source = np.zeros((8, 8), np.float32)
    truth = source.copy()
    truth[2:4, 2:4] = 1.0
    region = truth > 0
    assert truth_gain(source, truth, truth, region) == 1.0  # the whole true change
    assert truth_gain(source, source, truth, region) == 0.0  # nothing
    assert truth_gain(source, source + 0.5 * truth, truth, region) == pytest.approx(0.75)  # half the step: 1 - 1/4
    assert truth_gain(source, source - truth, truth, region) == pytest.approx(-3.0)  # away from the truth
    assert np.isnan(truth_gain(source, source, source, region))  # no true change to reproduce


def test_look_augmentation_changes_the_look_not_the_layout():
    import torch

    from medcf.eval.judge_training import _look

    yy = torch.linspace(0, 1, 64)[None, None, :, None].expand(16, 1, 64, 64)
    x = 0.2 + 0.6 * yy
    changed = _look(x.clone(), torch.Generator().manual_seed(0))
    assert changed.shape == x.shape and 0.0 <= float(changed.min()) and float(changed.max()) <= 1.0
    differs = (changed - x).abs().flatten(1).amax(1) > 1e-4
    assert 0 < int(differs.sum()) < 16  # some films change, not all
    # the layout stays: each film's row means still rise top to bottom
    rows = changed.mean(dim=3)[:, 0]
    assert bool((rows[:, -8:].mean(1) > rows[:, :8].mean(1) + 0.3).all())


def test_sham_films_change_only_the_region():
    from medcf.eval.judge_report import SHAMS, sham_film
    from medcf.models.loaders import load_generator
    from tests.model_fixtures import make_default_model

    rng = np.random.default_rng(0)
    source = (0.3 + 0.2 * rng.random((64, 64))).astype(np.float32)
    weight = np.zeros((64, 64), np.float32)
    weight[20:40, 10:30] = 1.0

    class Tiny:  # only the autoencoder sham uses the generator
        image_size = (64, 64)

    for sham in SHAMS:
        if sham.name == "autoencoder":
            continue
        film = sham_film(sham.name, source, weight, Tiny(), seed=1)
        assert np.array_equal(film[weight == 0], source[weight == 0]), sham.name
        assert np.abs(film - source)[weight == 1].mean() > 1e-3, sham.name


@pytest.mark.skipif(not (ROOT / "monai_bundle" / "models" / "unet.safetensors").is_file(),
                    reason="the default model's weights are not committed in this checkout")
@pytest.mark.slow
def test_judge_reports_count_false_alarms_and_sham_flips(tmp_path):
    from medcf.anatomy.outputs import load_segmenter
    from medcf.bundle import bundle_root
    from medcf.eval.bench import BENCH_SEED, render_cases
    from medcf.eval.judge import build_network
    from medcf.eval.judge_report import (SHAMS, normal_sample_false_alarms, report_markdown, sham_flip_rates,
                                         targets_met)
    from medcf.models.loaders import load_generator
    from medcf.world.ct import load_chest_ct

    small = _small_network()
    judge = Judge(build_network(small).eval(), 64, thresholds={f.value: 0.0 for f in Finding})  # says "present"
    generator = load_generator(bundle_root())
    alarms = normal_sample_false_alarms(judge, generator, n=2, progress=False)
    assert alarms["n"] == 2 and alarms["guidance"] == generator.guidance_scale
    assert all(rate == 1.0 for rate in alarms["rates"].values())  # threshold 0: every normal film alarms
    ct = load_chest_ct(ROOT / "tests" / "data" / "ct_fixture.npz")
    cases = render_cases((Finding.PLEURAL_EFFUSION,), 1, 256, BENCH_SEED, load_segmenter(), ct)
    shams = sham_flip_rates(judge, generator, cases=cases, progress=False)
    assert set(shams["rates"]) == {s.name for s in SHAMS}
    for sham in shams["rates"].values():
        entry = sham["pleural_effusion"]
        assert entry["remove"] == {"flip": 0.0, "n": 1}  # an always-present judge never calls "removed"
        assert entry["add"]["n"] in (0, 1)  # add counts only inputs the judge did not already call done
    record = {"heldout_report": {"auc": {"pleural_effusion": 0.99, "nodule": 0.9, "nodule_left": 0.95}},
              "normal_sample_false_alarms": alarms, "sham_flip_rate": shams}
    misses = targets_met(record)
    assert misses["heldout_report"] == ["nodule 0.9"] and len(misses["normal_sample_false_alarms"]) == 7
    assert "| pleural_effusion |" in report_markdown(record)


def test_concept_misses_name_what_the_judge_misses_for_one_row():
    from medcf.eval.judge import concept_misses
    from medcf.vocab import Action

    auc = {"pleural_effusion": 0.99, "pleural_effusion_left": 0.95, "pleural_effusion_right": 0.85, "nodule": 0.6}
    record = {"heldout_report": {"auc": auc}, "heldout_report_autoencoded": {"auc": dict(auc, pleural_effusion=0.97)},
              "normal_sample_false_alarms": {"rates": {"pleural_effusion": 0.03, "nodule": 0.6}},
              "sham_flip_rate": {"rates": {"noise": {"pleural_effusion": {"add": {"flip": 0.0},
                                                                          "remove": {"flip": 0.2}}}}}}
    assert concept_misses(record, Finding.PLEURAL_EFFUSION, Action.ADD) == ["side AUC 0.85",
                                                                            "side AUC autoencoded 0.85"]
    assert concept_misses(record, Finding.PLEURAL_EFFUSION, Action.REMOVE) == ["noise sham 0.20"]
    assert concept_misses(record, Finding.NODULE, Action.REMOVE) == ["AUC 0.60", "AUC autoencoded 0.60",
                                                                     "false alarms 0.60"]
    assert concept_misses({}, Finding.NODULE, Action.ADD)[0] == "AUC not measured"


def _sided_probabilities(rows: list[dict]) -> np.ndarray:
    """Probabilities with the given labels set (everything else 0.01)."""
    p = np.full((len(rows), len(LABELS)), 0.01, np.float32)
    for i, row in enumerate(rows):
        for label, value in row.items():
            p[i, LABELS.index(label)] = value
    return p


def test_side_is_decided_by_the_calibrated_margin_not_a_fixed_half():
    from medcf.eval.judge import build_network, calibrate_sides
    from medcf.vocab import Side

    small = _small_network()
    # side heads that never reach 0.5 but whose difference tells the side: the first judge's consolidation
    rng = np.random.default_rng(0)
    rows, records = [], []
    for i in range(40):
        side = ("left", "right", "bilateral")[i % 3]
        low, high = rng.uniform(0.02, 0.1), rng.uniform(0.15, 0.3)
        left, right = {"left": (high, low), "right": (low, high), "bilateral": (high, high)}[side]
        rows.append({"consolidation": 0.9, "consolidation_left": left, "consolidation_right": right})
        records.append({"finding": "consolidation", "side": side, "background": []})
    rows.append({"edema": 0.9, "edema_left": 0.8, "edema_right": 0.8})
    records.append({"finding": "edema", "side": "bilateral", "background": []})
    p = _sided_probabilities(rows)
    judge = Judge(build_network(small).eval(), 64, thresholds={f.value: 0.5 for f in Finding})
    legacy = judge.present(p, Finding.CONSOLIDATION, Side.LEFT)
    assert not legacy.any()  # a fixed 0.5 per head never finds a side here
    report = calibrate_sides(judge, p, records)
    assert report["side_margin_auc"]["consolidation"] == 1.0 and report["side_accuracy"]["consolidation"] == 1.0
    assert "edema" not in judge.side_margins  # never one-sided in the world: nothing to calibrate on
    truth = np.array([r["side"] if r["finding"] == "consolidation" else "none" for r in records])
    on_left = judge.present(p, Finding.CONSOLIDATION, Side.LEFT)
    on_right = judge.present(p, Finding.CONSOLIDATION, Side.RIGHT)
    assert on_left[truth == "left"].all() and not on_left[truth == "right"].any()
    assert on_right[truth == "right"].all() and not on_right[truth == "left"].any()
    both = judge.present(p, Finding.CONSOLIDATION, Side.BILATERAL)  # each head against its own threshold
    assert both[truth == "bilateral"].all() and not both[(truth == "left") | (truth == "right")].any()
    assert not judge.present(p, Finding.NODULE, Side.LEFT).any()  # presence still comes first
    held = calibrate_sides(Judge(judge.network, 64, side_margins={"consolidation": 10.0}), p, records, fit=False)
    assert held["side_margin"]["consolidation"] == 10.0 and held["side_accuracy"]["consolidation"] == 0.5


@pytest.mark.slow
def test_a_judge_is_recalibrated_without_training(tmp_path):
    from medcf.eval.judge_training import recalibrate_judge

    small = _small_network()
    options = dict(n_pairs=40, heldout_pairs=20, size=64, steps=20, batch=16, threads=1, progress=False,
                   data=_blob_set(tmp_path / "train.npz", 40, 0),
                   heldout_data=_blob_set(tmp_path / "heldout.npz", 40, 1), network=small, autoencoded=False,
                   reports=False)
    train_judge(JudgeOptions(out=tmp_path / "run", **options))
    trained = Judge.load(tmp_path / "run" / "judge")
    record = json.loads((tmp_path / "run" / "judge" / "judge.json").read_text())
    record.pop("side_margins"), record.pop("side_thresholds")  # a judge saved before the side calibration
    record["thresholds"] = {f.value: 0.5 for f in Finding}
    (tmp_path / "run" / "judge" / "judge.json").write_text(json.dumps(record))
    report = recalibrate_judge(tmp_path / "run" / "judge", tmp_path / "again", reports=False, progress=False)
    again = Judge.load(tmp_path / "again")
    assert again.thresholds == pytest.approx(trained.thresholds)  # same weights, same held-out films
    assert report["auc"] == trained.record["heldout_report"]["auc"]
    assert again.record["steps"] == 20 and (tmp_path / "again" / "judge.safetensors").is_file()
    with pytest.raises(Exception, match="not empty"):
        recalibrate_judge(tmp_path / "run" / "judge", tmp_path / "again", reports=False, progress=False)


def test_concept_misses_read_the_side_margin_where_the_judge_has_one():
    from medcf.eval.judge import concept_misses
    from medcf.eval.judge_report import report_markdown
    from medcf.vocab import Action

    auc = {"consolidation": 0.96, "consolidation_left": 0.42, "consolidation_right": 0.74}
    record = {"heldout_report": {"auc": auc, "side_margin_auc": {"consolidation": 0.78},
                                 "side_accuracy": {"consolidation": 0.75}},
              "normal_sample_false_alarms": {"rates": {"consolidation": 0.0}},
              "sham_flip_rate": {"rates": {"noise": {}}}}
    assert concept_misses(record, Finding.CONSOLIDATION, Action.ADD)[:1] == ["side AUC 0.78"]  # not the 0.42 head
    record["heldout_report"]["side_margin_auc"]["consolidation"] = 0.95
    assert not any(m.startswith("side AUC ") for m in concept_misses(record, Finding.CONSOLIDATION, Action.ADD))
    assert "| 0.950 / – | 0.750 / – |" in report_markdown(record)
