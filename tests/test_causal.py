"""The causal factor model (docs/methods.md §5, issue 22): attributes, the skewed long-tail
training set, training on exact pairs until the swaps beat doing nothing, and the
``causal`` method end to end (edit and pairs) on a tiny model and on the committed one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from medcf.causal.factors import Attributes, FactorConfig, FactorModel, attribute_tensor, load_factors
from medcf.training.skew import bucket_of, frequencies, skewed_subset
from medcf.training.factors import PairLatents
from medcf.editing.report_mix import Bucket
from medcf.errors import InputError
from tests import model_fixtures, waiting

ROOT = Path(__file__).resolve().parents[1]
BUNDLE_MODELS = ROOT / "monai_bundle" / "models"
needs_factors = pytest.mark.skipif(not (BUNDLE_MODELS / "causal_factors.safetensors").is_file(),
                                   reason="the factor model is not committed in this checkout")


# A limit in CPU seconds (tests/waiting.py), not wall seconds: the factor training here is 200
# steps of a tiny network, well under a CPU minute; the budget allows 20x for a slower CPU.
CPU_BUDGET = 1200.0


def _medcf(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    return waiting.run([sys.executable, "-m", "medcf", *map(str, args)], cwd=ROOT, env=env, cpu_budget=CPU_BUDGET,
                       what=f"medcf {args[0]}")


def test_attributes_validate_and_index():
    a = Attributes("pleural_effusion", "left", "lower", "moderate")
    assert a.present and a.key() == "pleural_effusion/left/lower/moderate"
    assert attribute_tensor([a, Attributes()]).shape == (2, 4)
    assert Attributes.from_record({"finding": "none", "side": None, "zone": None, "severity": None}) == Attributes()
    with pytest.raises(InputError, match="side 'up'"):
        Attributes("nodule", "up")
    with pytest.raises(InputError, match="no side"):
        Attributes("none", "left")


def _pairs(attributes: list[Attributes]) -> PairLatents:
    n = len(attributes)
    return PairLatents(torch.zeros(n, 4, 8, 8), torch.zeros(n, 4, 8, 8), attributes, list(range(n)))


def test_skewed_subset_makes_a_combination_rare_and_buckets_it():
    common = [Attributes("edema", "bilateral", "none", "mild")] * 150
    ptx = [Attributes("pneumothorax", "right", "upper", "moderate")] * 40
    nodule = [Attributes("nodule", "left", "upper", "mild")] * 10
    kept, shares = skewed_subset(_pairs(common + ptx + nodule), {"pneumothorax/right/*": 0.01}, seed=3)
    assert sum(a.finding == "pneumothorax" for a in kept.attributes) == 2  # 1 % of 200 pairs
    assert len(kept) == 162 and shares == frequencies(kept.attributes)
    assert bucket_of(shares["pneumothorax/right/upper"]) is Bucket.MEDIUM
    assert bucket_of(shares["edema/bilateral/none"]) is Bucket.HEAD
    assert bucket_of(0.005) is Bucket.TAIL
    with pytest.raises(InputError, match="no training pair matches"):
        skewed_subset(_pairs(common), {"nodule/right/*": 0.01})


def _blob_world(path: Path, n: int, seed: int, combinations: list[tuple[str, str, str]] | None = None) -> Path:
    """Pairs of a 64² synthetic 'patient' (smooth random background) without and with a
    bright blob in the left or right half, low or high by zone, severity = blob size: the
    exact pairs the factor model learns from, in miniature. ``combinations`` gives each
    pair's (finding, side, zone) label (default: a pleural effusion, sides alternating)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64] / 64.0
    images, records = [], []
    for i in range(n):
        a, b, c = rng.uniform(0.2, 0.5, 3)
        background = a + 0.3 * b * xx + 0.3 * c * yy + 0.05 * np.sin(8 * xx + 10 * a)
        label, side, zone = combinations[i] if combinations else ("pleural_effusion", ["left", "right"][i % 2], "lower")
        severity = ["mild", "moderate", "severe"][(i // 2) % 3]
        cx = 0.72 if side == "left" else 0.28  # the patient's left is the image's right
        cy = 0.3 if zone == "upper" else 0.7
        radius = {"mild": 0.08, "moderate": 0.12, "severe": 0.16}[severity]
        blob = np.exp(-(((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * radius ** 2)))
        factual = np.clip(background + 0.45 * blob, 0, 1)
        for kind, film, finding in (("factual", factual, label), ("counterfactual", background, "none")):
            images.append(np.rint(np.clip(film, 0, 1) * 65535).astype(np.uint16))
            present = finding != "none"
            records.append({"seed": seed + i, "kind": kind, "finding": finding, "side": side if present else None,
                            "zone": zone if present else None, "severity": severity if present else None,
                            "prompt": ""})
    return model_fixtures.write_world_set(path, images, records)


@pytest.fixture(scope="module")
def tiny_factors(tmp_path_factory):
    """A tiny default model with a factor model trained (CLI) on blob pairs and exported beside it."""
    root = tmp_path_factory.mktemp("causal")
    model = model_fixtures.make_default_model(root / "model")
    train, heldout = _blob_world(root / "train.npz", 48, 0), _blob_world(root / "heldout.npz", 12, 5000)
    done = _medcf("train", "factors", "--model", model, "--data", train, "--heldout", heldout, "--steps", "150",
                  "--posterior-steps", "50", "--batch", "8", "--width", "16", "--blocks", "1", "--lr", "3e-3", "--threads", "1", "--quiet",
                  "--out", root / "run", "--export", model)
    assert done.returncode == 0, done.stderr
    return root, model, json.loads(done.stdout.splitlines()[0])


@pytest.mark.slow
def test_training_on_exact_pairs_makes_swaps_beat_doing_nothing(tiny_factors):
    root, model, figures = tiny_factors
    errors = figures["heldout_latent_mse"]
    # held-out patients: anatomy from one film, pathology from the other (or named by the
    # attribute prior) lands nearer the true other film than leaving the film unchanged
    assert errors["prior_swap"] < 0.8 * errors["unchanged"], errors
    assert errors["posterior_swap"] < errors["unchanged"], errors
    factors, record = load_factors(model)
    assert record.recipe["steps"] == 150 and record.figures["heldout_latent_mse"] == errors
    assert len(record.autoencoder_sha256) == 64
    log = [json.loads(line) for line in (root / "run" / "log.jsonl").read_text().splitlines()]
    joint = [entry for entry in log if entry["phase"] == 1]
    assert joint[-1]["swap"] < joint[0]["swap"] and log[-1]["phase"] == 2 and log[-1]["step"] == 199
    assert record.recipe["posterior_steps"] == 50
    # --resume continues from the newest checkpoint; a finished run has nothing left to do
    again = _medcf("train", "factors", "--model", model, "--data", root / "train.npz", "--heldout",
                   root / "heldout.npz", "--steps", "150", "--posterior-steps", "50", "--width", "16", "--blocks", "1", "--quiet", "--resume",
                   "--out", root / "run")
    assert again.returncode == 0, again.stderr
    exists = _medcf("train", "factors", "--model", model, "--data", root / "train.npz", "--steps", "1",
                    "--out", root / "other", "--export", model)
    assert exists.returncode == 2 and "never overwrites" in exists.stderr and "Traceback" not in exists.stderr


@pytest.mark.slow
def test_causal_edit_changes_only_the_region_and_needs_its_factors(tiny_factors, tmp_path):
    from medcf.editing.edit import edit
    from medcf.editing.spec import EditSpec, Method
    from medcf.models.loaders import load_generator
    from medcf.vocab import Action, Finding, Side
    from tests.test_editing import phantom_masks

    _, model, _ = tiny_factors
    generator = load_generator(model)
    film = np.clip(np.random.default_rng(1).uniform(0.3, 0.6, (64, 64)), 0, 1).astype(np.float32)
    spec = EditSpec(Finding.PLEURAL_EFFUSION, Action.ADD, Side.LEFT, method=Method.CAUSAL, steps=6)
    result = edit(film, phantom_masks(), spec, generator, progress=False, check=False)
    outside = result.region.native_weight == 0
    assert np.array_equal(result.image[outside], film[outside])
    assert np.abs(result.image - film)[~outside].max() > 1e-3
    assert result.settings["start_step"] == 6 - round(0.3 * 6) and result.spec.depth == 0.3
    stronger = edit(film, phantom_masks(), EditSpec(Finding.PLEURAL_EFFUSION, Action.ADD, Side.LEFT,
                                                    method=Method.CAUSAL, steps=6, strength=3.0),
                    generator, progress=False, check=False)
    assert not np.array_equal(stronger.image, result.image)
    bare = load_generator(model_fixtures.make_default_model(tmp_path / "bare"))
    with pytest.raises(InputError, match="needs a factor model"):
        edit(film, phantom_masks(), spec, bare, progress=False, check=False)


@needs_factors
@pytest.mark.slow
def test_causal_method_end_to_end_on_the_committed_model(tmp_path):
    from medcf.io.images import read_label_png, read_png

    done = _medcf("edit", ROOT / "medcf" / "data" / "sample_study", "--finding", "pleural_effusion", "--action",
                  "add", "--side", "left", "--method", "causal", "--quiet", "--out", tmp_path / "edit")
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "edit" / "edit.json").read_text())
    assert record["extra"]["spec"]["method"] == "causal" and record["extra"]["settings"]["start_step"] > 0
    done = _medcf("pairs", "--finding", "pneumothorax", "--action", "add", "--side", "right", "--n", "1",
                  "--method", "causal", "--quiet", "--out", tmp_path / "pairs")
    assert done.returncode == 0, done.stderr
    pair = json.loads((tmp_path / "pairs" / "pairs.jsonl").read_text().splitlines()[0])
    factual = read_png(tmp_path / "pairs" / pair["factual"])
    counterfactual = read_png(tmp_path / "pairs" / pair["counterfactual"])
    region = read_label_png(tmp_path / "pairs" / pair["lesion_mask"]) > 0
    assert np.array_equal(factual[~region], counterfactual[~region])
    assert np.abs(factual - counterfactual)[region].max() > 0


def test_long_tail_combinations_come_from_every_bucket():
    from medcf.eval.longtail import choose_combinations

    shares = {"edema/bilateral/none": 0.2, "cardiomegaly/none/none": 0.15, "nodule/left/upper": 0.02,
              "nodule/right/lower": 0.03, "atelectasis/left/middle": 0.04, "pneumothorax/right/upper": 0.008,
              "consolidation/left/none": 0.004, "nodule/left/middle": 0.002}
    chosen = choose_combinations(shares, 2)
    assert chosen["head"] == ["edema/bilateral/none", "cardiomegaly/none/none"]
    assert chosen["tail"] == ["nodule/left/middle", "pneumothorax/right/upper"]  # lobar consolidation left out
    assert chosen["medium"] == ["nodule/left/upper", "atelectasis/left/middle"]  # one per finding, rarest first


def _small_judge():
    from medcf.eval.judge import LABELS, Judge, build_network

    small = {"spatial_dims": 2, "in_channels": 1, "out_channels": len(LABELS), "init_features": 8,
             "growth_rate": 8, "block_config": [2, 2], "bn_size": 2}
    return Judge(build_network(small).eval(), 64)  # untrained: the tests are about the pipelines


@needs_factors
@pytest.mark.slow
def test_swap_suite_compares_swaps_with_the_exact_render(tmp_path):
    from medcf.eval.swap import run_swap_suite
    from medcf.vocab import Finding
    from medcf.world.ct import load_chest_ct

    ct = load_chest_ct(ROOT / "tests" / "data" / "ct_fixture.npz")
    result = run_swap_suite(tmp_path / "swap", n=1, findings=(Finding.PLEURAL_EFFUSION,), judge=_small_judge(),
                            progress=False, ct=ct)
    rows = {r["swap"]: r for r in result["rows"]}
    assert set(rows) == {"posterior", "prior", "autoencoded", "unchanged"}
    assert rows["unchanged"]["truth_gain"] == 0.0  # the input itself reproduces none of the change
    assert rows["unchanged"]["ssim_outside_lesion"] > rows["autoencoded"]["ssim_outside_lesion"]
    assert rows["prior"]["truth_gain"] != 0.0 and 0.0 <= rows["prior"]["dice_lungs"] <= 1.0
    assert "| ALL | prior |" in (tmp_path / "swap" / "results.md").read_text()
    assert (tmp_path / "swap" / "examples.png").is_file()


@pytest.mark.slow
def test_long_tail_suite_writes_bucket_rows(tiny_factors, tmp_path):
    """The suite on the tiny model, with a factor model trained here on a blob world skewed by
    ``--rare`` into a head, a medium and a tail combination (the suite needs its recipe's shares)."""
    from medcf.editing.api import load_editor
    from medcf.eval.longtail import run_longtail_suite
    from medcf.world.ct import load_chest_ct

    root, model, _ = tiny_factors
    # 160 pairs: two common combinations, and two cut down by --rare to 3 pairs (2 %: medium) and
    # 1 pair (0.7 %: tail) of the 144 kept
    combinations = ([("pleural_effusion", "left", "lower"), ("nodule", "right", "lower")] * 70
                    + [("pleural_effusion", "right", "lower"), ("nodule", "left", "upper")] * 10)
    skewed = _blob_world(tmp_path / "skewed.npz", len(combinations), 7000, combinations)
    done = _medcf("train", "factors", "--model", model, "--data", skewed, "--heldout", root / "heldout.npz",
                  "--rare", "pleural_effusion/right/*=0.02", "--rare", "nodule/left/upper=0.005",
                  "--steps", "20", "--posterior-steps", "10", "--batch", "8", "--width", "16", "--blocks", "1",
                  "--threads", "1", "--quiet", "--out", tmp_path / "run", "--export", tmp_path / "factors")
    assert done.returncode == 0, done.stderr
    ct = load_chest_ct(ROOT / "tests" / "data" / "ct_fixture.npz")
    editor = load_editor(model, segmenter=model_fixtures.AtlasSegmenter())  # a random model's films have no anatomy
    result = run_longtail_suite(tmp_path / "tail", tmp_path / "factors", n=1, pair_n=1, per_bucket=1, size=64,
                                methods=("causal", "regulated"), pair_methods=("causal",),
                                judge=_small_judge(), editor=editor, progress=False, ct=ct)
    keys = {"bucket", "method", "noise_optimization", "flip_rate", "fidelity_psnr", "truth_gain"}
    assert all(keys <= set(row) for row in result["rows"])
    assert {r["bucket"] for r in result["summary"]} == {"head", "medium", "tail"}
    assert result["settings"]["combinations"]["tail"] == ["nodule/left/upper"]
    pairs = [r for r in result["rows"] if r["setting"] == "pairs"]
    assert {r["noise_optimization"] for r in pairs} == {False, True} and all(r["truth_gain"] is None for r in pairs)
    edits = [r for r in result["rows"] if r["setting"] == "edit"]
    assert all(r["fidelity_psnr"] is not None and r["noise_optimization"] is False for r in edits)
    with pytest.raises(InputError, match="trained with --rare"):  # the factors beside the model: no skew
        run_longtail_suite(tmp_path / "plain", model, judge=_small_judge(), editor=editor, progress=False, ct=ct)


def test_long_tail_suite_needs_its_factors_named():
    """No factor model for the long-tail suite ships; the CLI says how to train one."""
    done = _medcf("bench", "--suite", "longtail", "--out", "unused-never-written")
    assert done.returncode == 2 and "--suite longtail needs --factors DIR" in done.stderr
    assert "medcf train factors" in done.stderr and "--rare" in done.stderr and "Traceback" not in done.stderr
