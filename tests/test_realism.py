"""The realism discriminator (medcf.eval.realism): it catches a crude paste, it is fair to a
faithful one, its splits keep every patient on one side, and the oracle insertion on the
fixture world leaves the film alone outside the lesion and reproduces most of the true change."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from medcf.eval import realism
from medcf.vocab import Finding, Severity

SIDE = 64
PATIENTS = 12
PER_PATIENT = 3


def synthetic_film(rng: np.random.Generator, centre: tuple[int, int], peak: float, noise: float,
                   noiseless_lesion: bool) -> tuple[np.ndarray, np.ndarray]:
    """A smooth background, a Gaussian lesion and white noise; ``noiseless_lesion`` smooths
    the noise away inside the lesion, as a paste that forgot the film's noise would."""
    rows, cols = np.mgrid[:SIDE, :SIDE]
    background = 0.4 + 0.2 * rows / SIDE + 0.05 * ndimage.gaussian_filter(rng.standard_normal((SIDE, SIDE)), 6.0)
    lesion = peak * np.exp(-((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2) / (2 * 5.0 ** 2))
    mask = lesion > 0.3 * peak
    film = background + lesion + noise * rng.standard_normal((SIDE, SIDE))
    if noiseless_lesion:
        film = np.where(mask, ndimage.gaussian_filter(film, 1.5), film)
    return film.astype(np.float32), mask


def synthetic_features(noiseless_fake: bool, seed: int = 0, n_patients: int = PATIENTS):
    """Real and pasted films of the same lesion at the same place, several per patient."""
    rng = np.random.default_rng(seed)
    features, labels, patients = [], [], []
    for patient in range(n_patients):
        for _ in range(PER_PATIENT):
            centre = (int(rng.integers(20, 44)), int(rng.integers(20, 44)))
            peak, noise = float(rng.uniform(0.05, 0.2)), float(rng.uniform(0.01, 0.03))
            for real in (True, False):
                film, mask = synthetic_film(rng, centre, peak, noise, noiseless_lesion=noiseless_fake and not real)
                features.append(realism.patch_features(film, mask, pixel_mm=1.0))
                labels.append(real)
                patients.append(patient)
    return np.stack(features), np.array(labels), np.array(patients)


def test_the_discriminator_catches_a_paste_without_the_films_noise():
    features, labels, patients = synthetic_features(noiseless_fake=True)
    report = realism.discriminate(features, labels, patients, bootstrap=200)
    assert report["auc"] > 0.9 and report["ci95"][0] > 0.75
    assert report["n_patients"] == PATIENTS and report["n_films"] == 2 * PATIENTS * PER_PATIENT


def test_the_discriminator_is_near_chance_when_both_come_from_one_process():
    """Real and "pasted" drawn alike: near 0.5, and the CI (which resamples patients and
    repeats the training) holds 0.5. At 12 patients such null AUCs spread 0.37-0.70 over
    data seeds (measured): the reason every reported AUC carries its CI."""
    features, labels, patients = synthetic_features(noiseless_fake=False, seed=1, n_patients=24)
    report = realism.discriminate(features, labels, patients, bootstrap=100)
    assert abs(report["auc"] - 0.5) < 0.15
    assert report["ci95"][0] < 0.5 < report["ci95"][1]


def test_folds_keep_every_patient_on_one_side():
    patients = np.repeat(np.arange(9), 4)
    folds = realism.patient_folds(patients, folds=5, seed=3)
    assert sorted(np.concatenate(folds).tolist()) == list(range(patients.size))  # every sample tested once
    for test in folds:
        train = np.setdiff1d(np.arange(patients.size), test)
        assert not set(patients[test]) & set(patients[train])
    with pytest.raises(ValueError, match="two patients"):
        realism.patient_folds(np.zeros(6, int))


def test_a_patient_memorised_in_training_cannot_lift_the_auc():
    """Each patient's real/pasted direction is its own (random) and its features name it: a
    split that let a patient into both train and test would learn it (AUC near 1); the
    patient-level folds cannot (AUC near 0.5)."""
    rng = np.random.default_rng(5)
    patients = np.repeat(np.arange(20), 6)
    labels = np.tile([True, False], 60)
    direction = rng.choice([-1.0, 1.0], 20)[patients]
    identity = np.eye(20)[patients] * 3.0
    features = np.column_stack([identity, identity * (direction * np.where(labels, 1.0, -1.0))[:, None]])
    report = realism.discriminate(features, labels, patients, bootstrap=50)
    assert abs(report["auc"] - 0.5) < 0.2
    # The same data split by film, not by patient (each film its own "patient"), memorises.
    assert realism.cross_validated_auc(features, labels, np.arange(labels.size)) > 0.9


@pytest.fixture(scope="module")
def fixture_films():
    from medcf.world.ct import load_chest_ct
    from medcf.world.render import World

    world = World(load_chest_ct(Path(__file__).parent / "data" / "ct_fixture.npz"))
    return realism.make_films(world, Finding.NODULE, 2, 128, realism.REALISM_TUNING_SEED,
                              severities=(Severity.MODERATE, Severity.SEVERE))


def test_oracle_insertion_on_the_fixture_world(fixture_films):
    from medcf.eval.bench import truth_gain

    assert len(fixture_films.lesions) == 4 and len({lesion.patient for lesion in fixture_films.lesions}) == 2
    for lesion, inserted in zip(fixture_films.lesions, fixture_films.insertions):
        film = inserted.film
        assert np.array_equal(film[~inserted.extent], lesion.counterfactual[~inserted.extent])
        assert inserted.extent[lesion.lesion].all()
        assert truth_gain(lesion.counterfactual, film, lesion.factual, lesion.lesion) > 0.5
    # The crude pastes differ from the insertion inside the lesion, and only inside its extent.
    for paste in (realism.Paste.CRUDE_GAIN, realism.Paste.CRUDE_NOISELESS):
        for lesion, inserted, crude in zip(fixture_films.lesions, fixture_films.insertions,
                                           fixture_films.pastes[paste]):
            assert not np.allclose(crude[lesion.lesion], inserted.film[lesion.lesion])
            assert np.array_equal(crude[~inserted.extent], lesion.counterfactual[~inserted.extent])


def test_the_report_pairs_every_patient_on_both_classes(fixture_films):
    report = realism.discriminator_report(fixture_films, bootstrap=20)
    assert set(report) == {paste.value for paste in realism.Paste}
    for entry in report.values():
        assert entry["n_patients"] == 2 and entry["n_films"] == 8 and 0.0 <= entry["auc"] <= 1.0


def test_oracle_films_for_the_suites_own_add_cases():
    """The suite's add case (seeded as medcf.eval.bench.render_cases) gets its oracle film;
    a case rendered at another size is refused rather than given a lesion that is not its own."""
    from medcf.eval.bench import Case, truth_gain
    from medcf.vocab import Action
    from medcf.world.ct import load_chest_ct
    from medcf.world.pairs import plan_sample
    from medcf.world.render import World, draw_acquisition

    world = World(load_chest_ct(Path(__file__).parent / "data" / "ct_fixture.npz"))
    first = realism.REALISM_TUNING_SEED
    request = realism.finding_request(Finding.NODULE, 1, 128, first)
    seed, view, spec = plan_sample(request, 0)
    rendering = world.render(draw_acquisition(seed, view, 128), spec)
    case = Case(Finding.NODULE, Action.ADD, spec.side, spec.zone, spec.severity, seed, view,
                rendering.counterfactual, rendering.factual[spec.severity], None,
                rendering.lesion_masks[spec.severity] > 0)
    film, = realism.oracle_suite_films([case], world, 128)
    changed = film != case.source
    assert changed.any() and changed[case.lesion].any()
    assert truth_gain(case.source, film, case.truth, case.lesion) > 0.5
    with pytest.raises(ValueError, match="not the suite's patient"):
        realism.oracle_suite_films([case], world, 96)


def _bench_script():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_realism.py"
    spec = importlib.util.spec_from_file_location("bench_realism", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("argv, message", [
    (["--findings", "mole", "--no-judge"], "--findings"),
    (["--n", "1", "--no-judge"], "--n must be at least 2"),
    (["--first-seed", "5", "--no-judge"], "reach into the training seeds"),
])
def test_bench_script_refuses_bad_input_in_one_line(tmp_path, capsys, argv, message):
    code = _bench_script().main([*argv, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "run").exists()
