"""The counterfactual suite's judge ceiling (``truth_flip_rate``) and the insertion shams
(medcf.eval.bench, medcf.eval.insertion_shams), scored by a judge whose rule is known."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from medcf.eval.bench import Case, SuiteFilms, insertion_sham_flip_rates, score_suite
from medcf.eval.insertion_shams import InsertionSham, lesion_support, sham_change
from medcf.eval.judge import LABELS
from medcf.vocab import Action, Finding, Severity, Side

SIZE = 64


class BrightSpotJudge:
    """Calls every finding present when some 3 x 3 neighbourhood of the film is brighter than
    ``level`` (sides are not asked); features are a few image statistics."""

    record: dict = {}
    thresholds: dict = {}
    side_margins: dict = {}

    def __init__(self, level: float = 0.75):
        self.level = level

    def probabilities(self, films: np.ndarray) -> np.ndarray:
        peak = np.array([ndimage.uniform_filter(f.astype(np.float64), 3).max() for f in films])
        return np.repeat((peak >= self.level).astype(np.float32)[:, None], len(LABELS), axis=1)

    def present(self, probabilities: np.ndarray, finding: Finding, side: Side | None = None) -> np.ndarray:
        return probabilities[:, LABELS.index(finding.value)] >= 0.5

    def features(self, films: np.ndarray) -> np.ndarray:
        return np.stack([films.mean(axis=(1, 2)), films.std(axis=(1, 2))], axis=1)


def disc(centre: tuple[int, int], radius: float) -> np.ndarray:
    r, c = np.mgrid[:SIZE, :SIZE]
    return (r - centre[0]) ** 2 + (c - centre[1]) ** 2 <= radius * radius


def cases(n: int = 4, contrast: float = 0.4) -> list[Case]:
    """Per patient an add and a remove case: a round bright lesion on a noisy grey film."""
    out = []
    for seed in range(n):
        rng = np.random.default_rng(seed)
        plain = (0.4 + 0.02 * rng.standard_normal((SIZE, SIZE))).astype(np.float32)
        lesion = disc((20 + 4 * seed, 30), 5)
        with_finding = np.clip(plain + contrast * ndimage.gaussian_filter(lesion.astype(np.float32), 1.0), 0, 1)
        for action in Action:
            source, truth = (plain, with_finding) if action is Action.ADD else (with_finding, plain)
            out.append(Case(Finding.NODULE, action, Side.RIGHT, None, Severity.MODERATE, seed, None, source, truth,
                            None, lesion))
    return out


def suite(all_cases: list[Case]) -> SuiteFilms:
    """Films of a method that changes nothing (the output is the input)."""
    measures = {"ssim_out": 1.0, "psnr_out": 100.0, "dice_lungs": 1.0, "dice_heart": 1.0, "fidelity_psnr": 20.0,
                "fidelity_ssim": 0.9, "truth_gain": 0.0, "sec_per_edit": 0.0}
    outputs = {(Finding.NODULE, action, "steer"): [(c, c.source, measures) for c in all_cases if c.action is action]
               for action in Action}
    drawn = {(Finding.NODULE, action): np.stack([c.source for c in all_cases if c.action is action])
             for action in Action}
    return SuiteFilms(all_cases, outputs, drawn, ("steer",), {"n": 4, "first_seed": 0, "ours": {}})


def test_truth_flip_rate_is_the_judge_on_the_true_counterfactuals(tmp_path):
    result = score_suite(suite(cases()), BrightSpotJudge(), tmp_path / "out")
    by = {row["action"]: row for row in result["rows"]}
    # The truth of an add shows the lesion, of a remove does not: the judge reads both.
    assert by["add"]["truth_flip_rate"] == 1.0 and by["remove"]["truth_flip_rate"] == 1.0
    # A method that changes nothing flips nothing, and its inputs are not done already.
    assert by["add"]["flip_rate"] == 0.0 and by["add"]["flip_rate_unedited"] == 0.0
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["rows"][0]["truth_flip_rate"] == 1.0 and "insertion_shams" in saved
    table = (tmp_path / "out" / "results.md").read_text()
    assert "truth_flip_rate" in table and "Insertion shams" in table
    # A faint truth the judge cannot read: the ceiling falls, whatever any editor does.
    faint = score_suite(suite(cases(contrast=0.2)), BrightSpotJudge())
    assert {row["action"]: row for row in faint["rows"]}["add"]["truth_flip_rate"] == 0.0


@pytest.mark.parametrize("sham", list(InsertionSham))
def test_shams_keep_the_true_changes_energy_but_not_its_shape(sham):
    case = cases(1)[0]
    change = sham_change(sham, case.source, case.truth, case.lesion, seed=3)
    support = lesion_support(case.lesion)
    delta = np.where(support, case.truth - case.source.astype(np.float64), 0.0)
    assert (change ** 2).sum() == pytest.approx((delta ** 2).sum(), rel=1e-6)
    correlation = float((change * delta).sum() / np.sqrt((change ** 2).sum() * (delta ** 2).sum()))
    assert correlation < 0.75  # not the lesion again
    if sham is InsertionSham.TEXTURE:
        assert abs(change[support].mean()) < 1e-9 and not change[~support].any()  # no added density, in place
    else:
        rows, cols = np.nonzero(change > 0.5 * change.max())
        assert np.ptp(cols) >= 2.5 * np.ptp(rows)  # a spindle across the film, not a round nodule
    assert np.array_equal(change, sham_change(sham, case.source, case.truth, case.lesion, seed=3))


def test_sham_flips_count_only_inputs_not_already_done():
    all_cases = cases()
    judge = BrightSpotJudge()
    rates = insertion_sham_flip_rates(judge, all_cases)
    assert set(rates["rates"]) == {"blob", "texture"} and set(rates["shams"]) == {"blob", "texture"}
    entry = rates["rates"]["texture"]["nodule"]
    assert entry["n"] == 4 and 0.0 <= entry["flip"] <= 1.0  # the four add inputs; removes are not asked
    # The blob carries the lesion's energy on a thinner spindle: brighter, and this judge flips.
    assert rates["rates"]["blob"]["nodule"]["flip"] == 1.0
    # Inputs the judge already calls done cannot flip.
    done = [Case(c.finding, c.action, c.side, c.zone, c.severity, c.seed, c.view, c.truth, c.truth, c.masks, c.lesion)
            for c in all_cases if c.action is Action.ADD]
    assert insertion_sham_flip_rates(judge, done)["rates"]["blob"]["nodule"] == {"flip": None, "n": 0}
    assert insertion_sham_flip_rates(judge, [c for c in all_cases if c.action is Action.REMOVE])["rates"] == {}
