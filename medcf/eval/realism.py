"""Can an inserted lesion be told from a real one? The computational analogue of the reader
studies (issue 47, item 2).

Litjens et al. (MICCAI 2010) projected CT nodules onto real chest films; readers could not
tell them from real ones (ROC AUC not different from 0.5), diffuse infiltrates a little
(0.67). Here the "real" lesion is the world's rendered factual film, and the inserted one is
the world's counterfactual (the same film without the lesion) with the world's own projected
lesion channel added by :func:`medcf.insertion.film_domain.compose`, at the true place
(oracle placement: the true centre and the true channel, so that only the composition is
judged, never the placement). The physics of the two differ on purpose: the world adds the
lesion before quantum noise, scatter, detector blur and the display's unsharp mask and tone
curve; composition adds it to the finished film through a mapping it estimates from that
film alone.

A small discriminator (standardised logistic regression on features a reader's eye uses:
the lesion's contrast against its surround, its edge sharpness against its contrast, the
noise and texture inside against outside, the detail's skew and tails) is trained on some
patients and scored on others (:func:`patient_folds`: whole patients per fold, every
severity of one patient on one side of the split); its cross-validated AUC per finding is
reported with a CI from resampling patients (:func:`discriminate`). 0.5: indistinguishable.

A discriminator that reads nothing also scores 0.5, so the same pipeline is run on two crude
pastes (:class:`Paste`): the channel added in display values at twice the gain the film's
mapping gives in the lung (Sorenson 1980: naive pasting changes what is seen), and the
inserted film with the film's noise smoothed away inside the lesion. They must score
clearly higher.

:func:`oracle_rows` measures the same oracle insertion with the counterfactual suite's
judge: truth gain, flip rate, and the judge's flip rate on the world's truth of the same
cases (``truth_flip_rate``) beside it. :func:`oracle_suite_films` gives the oracle film of
each of the counterfactual suite's own ``add`` cases, so the suite can carry an oracle row.

Lab side only (medcf.eval): never imported by the product.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.stats import kurtosis, skew

from medcf.anatomy.masks import AnatomyMasks
from medcf.errors import InputError
from medcf.eval.bench import Case, in_target_state, truth_gain
from medcf.insertion.film_domain import AttenuationMapping, compose, estimate_mapping
from medcf.insertion.placed import PlacedLesion
from medcf.io.atomic import new_output_dir, write_new_text
from medcf.viz import Tile, render_grid, save_png
from medcf.vocab import Action, Finding, Organ, Severity, Side, StrEnum
from medcf.world.ct import load_chest_ct
from medcf.world.pairs import PhantomRequest, plan_sample
from medcf.world.physics import basis_weights
from medcf.world.projector import MM_PER_CM
from medcf.world.render import World, anatomy_channel, draw_acquisition
from medcf.world.seeds import SeedRange, require_held_out

REALISM_SEED = SeedRange.REALISM.start  # the reported figure's patients
REALISM_TUNING_SEED = SeedRange.TUNING.start + 900  # where the discriminator's settings may be tried
FINDING_SEED_STRIDE = 1000  # as the counterfactual suite: each finding's patients in their own block
SEVERITIES = tuple(Severity)  # every patient's lesion at each severity: 3 pairs per patient, one split side
RING_MM = 6.0  # the surround a lesion is compared with
CHANNEL_SUPPORT = 0.02  # the channel's support: |channel| above this share of its peak
FOLDS = 5
BOOTSTRAP = 200  # each draw repeats the whole cross-validation
REPEATS = 5  # fold assignments the reported AUC is averaged over
C_REGULARISATION = 0.5  # logistic regression's inverse penalty (fixed before any run; never tuned on the report seeds)
CRUDE_GAIN = 2.0  # the display paste's gain against the film's own lung slope
NOISELESS_SIGMA_PX = 1.5  # the smoothing that takes the film's noise out of the lesion


class Paste(StrEnum):
    """How the lesion is put on the counterfactual film."""

    INSERTED = "inserted"  # compose() in the film's attenuation domain (the method)
    CRUDE_GAIN = "crude_gain"  # added to display values, twice the film's lung gain (a check)
    CRUDE_NOISELESS = "crude_noiseless"  # the inserted film, its noise smoothed away in the lesion (a check)


PASTE_WHAT = {
    Paste.INSERTED: "world's projected lesion channel composed in the film's attenuation domain (oracle placement)",
    Paste.CRUDE_GAIN: f"the channel added to display values at {CRUDE_GAIN:g}x the film's lung gain, unblurred",
    Paste.CRUDE_NOISELESS: f"the inserted film smoothed (Gaussian {NOISELESS_SIGMA_PX:g} px) inside the lesion: "
                           "the film's noise taken away",
}


@dataclass
class WorldLesion:
    """One world patient's lesion at one severity, with everything insertion needs."""

    finding: Finding
    patient: int  # the patient's seed
    severity: Severity
    drawn: bool  # the severity the patient's lesion was drawn at (the one the suite would use)
    side: Side | None  # as the counterfactual suite asks it (cardiomegaly: None)
    counterfactual: np.ndarray
    factual: np.ndarray
    lesion: np.ndarray  # bool: the true lesion region
    channel: np.ndarray  # water mm the lesion adds
    background: np.ndarray  # the lesion-free line integral, water mm
    masks: AnatomyMasks
    pixel_mm: float


def world_masks(anatomy_bits: np.ndarray) -> AnatomyMasks:
    """The world's own lungs and heart (the masks a film's segmenter would give)."""
    return AnatomyMasks({Organ.LUNG_RIGHT: anatomy_channel(anatomy_bits, "lung_right"),
                         Organ.LUNG_LEFT: anatomy_channel(anatomy_bits, "lung_left"),
                         Organ.HEART: anatomy_channel(anatomy_bits, "heart")}, "world")


def render_lesions(world: World, finding: Finding, request: PhantomRequest, index: int,
                   severities: tuple[Severity, ...] = SEVERITIES) -> list[WorldLesion]:
    """Patient ``index`` of ``request`` (seeded as the counterfactual suite seeds its cases),
    its lesion rendered at each of ``severities`` with the line integrals kept."""
    seed, view, spec = plan_sample(request, index)
    acquisition = draw_acquisition(seed, view, request.size)
    chosen = tuple(dict.fromkeys((*severities,)))
    rendering = world.render(acquisition, spec, severities=chosen, keep_line_integrals=True)
    water = basis_weights(acquisition.exposure.energy_kev)[0] / MM_PER_CM  # line integral per water mm
    background = rendering.line_integrals["counterfactual"] / water
    masks = world_masks(rendering.anatomy)
    side = None if finding is Finding.CARDIOMEGALY else (spec.side or Side.BILATERAL)
    return [WorldLesion(finding, seed, severity, severity is spec.severity, side, rendering.counterfactual,
                        rendering.factual[severity], rendering.lesion_masks[severity] > 0,
                        rendering.line_integrals[severity.value] / water - background, background, masks,
                        rendering.pixel_mm)
            for severity in chosen]


@dataclass
class OracleInsertion:
    """The inserted film and how it was made."""

    film: np.ndarray
    extent: np.ndarray
    mapping: AttenuationMapping


def film_mapping(lesion: WorldLesion) -> AttenuationMapping:
    """The mapping estimated from the counterfactual film alone (its VOI unknown to the
    estimate, as a PNG's would be); one per patient, whatever the severity."""
    return estimate_mapping(lesion.counterfactual, lesion.masks, lesion.background, None, pixel_mm=lesion.pixel_mm)


def oracle_insert(lesion: WorldLesion, seed: int, mapping: AttenuationMapping | None = None) -> OracleInsertion:
    """The counterfactual film with the world's own projected lesion channel composed at the
    true place, through the film's estimated mapping (:func:`film_mapping`, unless given)."""
    mapping = mapping or film_mapping(lesion)
    channel = lesion.channel.astype(np.float32)
    peak = float(np.abs(channel).max())
    support = lesion.lesion | (np.abs(channel) > CHANNEL_SUPPORT * peak if peak > 0 else lesion.lesion)
    reach = int(np.ceil(3.0 * max(mapping.sharpness_px, 1.0))) + 2
    extent = ndimage.binary_dilation(support, iterations=reach)
    # The world's channel already is the change of density (a consolidation's delta takes the
    # lung's own markings away): nothing of the film's texture is replaced besides it.
    placed = PlacedLesion(channel, extent, np.zeros(channel.shape, np.float32), lesion.background.astype(np.float32),
                          {"placement": "oracle", "finding": lesion.finding.value, "patient": lesion.patient})
    return OracleInsertion(compose(lesion.counterfactual, placed, mapping, seed), extent, mapping)


def crude_paste(kind: Paste, lesion: WorldLesion, inserted: OracleInsertion) -> np.ndarray:
    """One of the crude pastes the discriminator must catch (:data:`PASTE_WHAT`)."""
    if kind is Paste.INSERTED:
        return inserted.film
    film = lesion.counterfactual.astype(np.float64)
    if kind is Paste.CRUDE_GAIN:
        lungs = lesion.masks.lung(Side.BILATERAL)
        mapping = inserted.mapping
        # The display's change per water mm at the lungs' median value (the mapping's slope
        # through its VOI), used everywhere: no VOI curve, no scatter, no blur.
        u = float(mapping.from_display(np.array([np.median(film[lungs])]))[0])
        gain = float(np.diff(mapping.to_display(np.array([u, u + mapping.slope])))[0])
        out = film + CRUDE_GAIN * gain * lesion.channel
        return np.where(inserted.extent, np.clip(out, 0.0, 1.0), film).astype(np.float32)
    if kind is Paste.CRUDE_NOISELESS:
        smooth = ndimage.gaussian_filter(inserted.film.astype(np.float64), NOISELESS_SIGMA_PX)
        return np.where(lesion.lesion, smooth, inserted.film).astype(np.float32)
    raise ValueError(kind)


# --- the discriminator -----------------------------------------------------------------

FEATURES = ("contrast", "noise_in", "noise_out", "noise_ratio", "texture_in", "texture_out", "texture_ratio",
            "edge_per_contrast", "gradient_ratio", "detail_skew", "detail_kurtosis", "level_in", "level_out",
            "spread_in")


def _robust_std(values: np.ndarray) -> float:
    return float(1.4826 * np.median(np.abs(values - np.median(values)))) if values.size else 0.0


def patch_features(film: np.ndarray, lesion: np.ndarray, pixel_mm: float) -> np.ndarray:
    """What a reader compares (:data:`FEATURES`): inside the lesion against a ring around it
    of :data:`RING_MM`. Real and inserted films of one case share ``lesion``, so the region
    tells the two apart not at all; only the pixels in it do."""
    x = np.asarray(film, np.float64)
    inside = np.asarray(lesion, bool)
    ring_px = max(2, int(round(RING_MM / pixel_mm)))
    ring = ndimage.binary_dilation(inside, iterations=ring_px) & ~inside
    if inside.sum() < 4 or ring.sum() < 4:
        raise ValueError("lesion region too small for features")
    fine = ndimage.gaussian_filter(x, 1.0)
    detail = x - fine
    texture = fine - ndimage.gaussian_filter(x, 3.0)
    gradient = np.hypot(*np.gradient(fine))
    edge = ndimage.binary_dilation(inside, iterations=1) & ~ndimage.binary_erosion(inside, iterations=1)
    contrast = float(x[inside].mean() - x[ring].mean())
    noise_in, noise_out = _robust_std(detail[inside]), _robust_std(detail[ring])
    texture_in, texture_out = float(texture[inside].std()), float(texture[ring].std())
    eps = 1e-6
    return np.array([
        contrast, noise_in, noise_out, np.log((noise_in + eps) / (noise_out + eps)),
        texture_in, texture_out, np.log((texture_in + eps) / (texture_out + eps)),
        float(gradient[edge].mean()) / (abs(contrast) + 0.01),
        np.log((gradient[inside].mean() + eps) / (gradient[ring].mean() + eps)),
        float(skew(detail[inside])), float(np.clip(kurtosis(detail[inside]), -10, 50)),
        float(x[inside].mean()), float(x[ring].mean()),
        float(np.percentile(x[inside], 95) - np.percentile(x[inside], 5)),
    ])


def patient_folds(patients: np.ndarray, folds: int = FOLDS, seed: int = 0) -> list[np.ndarray]:
    """Test-sample indices of each fold: whole patients, shuffled with ``seed``, dealt into
    ``folds`` groups, so that no patient is both trained on and tested on."""
    patients = np.asarray(patients)
    unique = np.unique(patients)
    if unique.size < 2:
        raise ValueError("at least two patients are needed for a patient-level split")
    order = np.random.default_rng(seed).permutation(unique)
    groups = np.array_split(order, min(folds, unique.size))
    return [np.flatnonzero(np.isin(patients, group)) for group in groups]


def auc_of(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney AUC (ties count half); NaN without both classes."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels, bool)
    pos, neg = scores[labels], scores[~labels]
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (pos.size * neg.size))


def cross_validated_auc(features: np.ndarray, labels: np.ndarray, patients: np.ndarray, seed: int = 0) -> float:
    """Mean over patient-level folds of the AUC on each fold's test patients, for a model
    trained on the other folds' patients. Per fold, not pooled: each fold's model scores on
    its own scale, and pooling scores across models moved a null discriminator's AUC to
    0.30-0.69 on 12 synthetic patients (the per-fold mean stays near 0.5)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features = np.nan_to_num(np.asarray(features, np.float64))
    labels = np.asarray(labels, bool)
    values, weights = [], []
    for test in patient_folds(patients, seed=seed):
        train = np.setdiff1d(np.arange(len(labels)), test)
        if np.unique(labels[train]).size < 2 or np.unique(labels[test]).size < 2:
            continue
        model = make_pipeline(StandardScaler(), LogisticRegression(C=C_REGULARISATION, max_iter=5000))
        model.fit(features[train], labels[train])
        values.append(auc_of(model.decision_function(features[test]), labels[test]))
        weights.append(test.size)
    return float(np.average(values, weights=weights)) if values else float("nan")


def discriminate(features: np.ndarray, labels: np.ndarray, patients: np.ndarray, seed: int = 0,
                 bootstrap: int = BOOTSTRAP) -> dict:
    """The discriminator's AUC (real = 1, pasted = 0: 0.5 is indistinguishable, 1 means the
    real lesion always looks the more real), the mean of :func:`cross_validated_auc` over
    :data:`REPEATS` fold assignments, with a 95% CI from resampling patients and repeating
    the whole cross-validation (so the CI holds the training's variance too; a resampled
    patient's copies stay in one fold, never on both sides of a split)."""
    features, labels, patients = np.asarray(features, np.float64), np.asarray(labels, bool), np.asarray(patients)
    value = float(np.nanmean([cross_validated_auc(features, labels, patients, seed + r) for r in range(REPEATS)]))
    unique = np.unique(patients)
    rng = np.random.default_rng(seed + 1)
    index = {p: np.flatnonzero(patients == p) for p in unique}
    draws = []
    for b in range(bootstrap):
        chosen = rng.choice(unique, unique.size)
        if np.unique(chosen).size < 2:
            continue
        rows = np.concatenate([index[p] for p in chosen])
        draws.append(cross_validated_auc(features[rows], labels[rows], patients[rows], seed + b))
    draws = np.asarray(draws)
    low, high = np.nanpercentile(draws, [2.5, 97.5]) if np.isfinite(draws).any() else (np.nan, np.nan)
    return {"auc": round(value, 4), "ci95": [round(float(low), 4), round(float(high), 4)],
            "n_patients": int(unique.size), "n_films": int(len(labels))}


# --- the study -------------------------------------------------------------------------


def finding_request(finding: Finding, n: int, size: int, first_seed: int) -> PhantomRequest:
    """The finding's patients, seeded as the counterfactual suite seeds its own."""
    return PhantomRequest(n=n, size=size, seed=first_seed + FINDING_SEED_STRIDE * list(Finding).index(finding),
                          findings=(finding,))


def realism_seeds(first_seed: int, n: int) -> range:
    """Every patient seed a study of ``n`` per finding renders; refused in training ranges."""
    seeds = range(first_seed, first_seed + FINDING_SEED_STRIDE * (len(Finding) - 1) + n)
    require_held_out(seeds.start, seeds.stop - 1, "realism study")
    return seeds


@dataclass
class FindingFilms:
    """Per finding: every lesion, its oracle insertion and each paste's film."""

    lesions: list[WorldLesion]
    insertions: list[OracleInsertion]
    pastes: dict[Paste, list[np.ndarray]]


def make_films(world: World, finding: Finding, n: int, size: int, first_seed: int,
               severities: tuple[Severity, ...] = SEVERITIES) -> FindingFilms:
    """Render ``n`` patients with ``finding`` at each severity and make every paste."""
    request = finding_request(finding, n, size, first_seed)
    films = FindingFilms([], [], {paste: [] for paste in Paste})
    for index in range(n):
        lesions = render_lesions(world, finding, request, index, severities)
        mapping = film_mapping(lesions[0])
        for lesion in lesions:
            inserted = oracle_insert(lesion, seed=lesion.patient, mapping=mapping)
            films.lesions.append(lesion)
            films.insertions.append(inserted)
            for paste in Paste:
                films.pastes[paste].append(crude_paste(paste, lesion, inserted))
    return films


def discriminator_report(films: FindingFilms, seed: int = 0, bootstrap: int = BOOTSTRAP) -> dict:
    """Per paste: the discriminator's AUC, real vs pasted, on these films (patient-level folds)."""
    report = {}
    real = [patch_features(lesion.factual, lesion.lesion, lesion.pixel_mm) for lesion in films.lesions]
    patients = np.array([lesion.patient for lesion in films.lesions] * 2)
    labels = np.array([True] * len(real) + [False] * len(real))
    for paste, pasted in films.pastes.items():
        fake = [patch_features(film, lesion.lesion, lesion.pixel_mm) for film, lesion in zip(pasted, films.lesions)]
        report[paste.value] = discriminate(np.stack(real + fake), labels, patients, seed, bootstrap)
    return report


def oracle_rows(films: FindingFilms, judge) -> dict:
    """The judge on the oracle insertion of each patient's drawn-severity lesion: truth gain
    (median, as the suite), flip rate, and beside it the same judge on the world's truth
    (``truth_flip_rate``) and on the unedited film (``flip_rate_unedited``)."""
    chosen = [(lesion, inserted) for lesion, inserted in zip(films.lesions, films.insertions) if lesion.drawn]
    cases = [Case(lesion.finding, Action.ADD, lesion.side, None, lesion.severity, lesion.patient, None,
                  lesion.counterfactual, lesion.factual, None, lesion.lesion) for lesion, _ in chosen]
    inserted = np.stack([insertion.film for _, insertion in chosen])
    gains = [truth_gain(case.source, film, case.truth, case.lesion) for case, film in zip(cases, inserted)]
    flips = in_target_state(judge, inserted, cases)
    truth = in_target_state(judge, np.stack([case.truth for case in cases]), cases)
    floor = in_target_state(judge, np.stack([case.source for case in cases]), cases)
    finite = [g for g in gains if np.isfinite(g)]
    return {"n": len(cases), "truth_gain": round(float(np.median(finite)), 4) if finite else None,
            "flip_rate": round(float(np.mean(flips)), 4), "truth_flip_rate": round(float(np.mean(truth)), 4),
            "flip_rate_unedited": round(float(np.mean(floor)), 4),
            "mapping_residual": round(float(np.median([i.mapping.residual for _, i in chosen])), 5)}


def oracle_suite_films(cases: list, world: World, size: int) -> list[np.ndarray]:
    """The oracle insertion of each of the counterfactual suite's ``add`` cases
    (:func:`medcf.eval.bench.render_cases`, at the suite's ``size``): the row that measures
    the lesion and its composition, never the placement. A patient is its seed (the view and
    lesion are drawn from it alone, :func:`medcf.world.pairs.plan_sample`); the suite renders
    without line integrals, so each is rendered again with them, and a case whose film is not
    that render (another size, another world) is refused."""
    out = []
    for case in cases:
        if case.action is not Action.ADD:
            raise ValueError("oracle insertion is an add: pass the suite's add cases")
        request = PhantomRequest(n=1, size=size, seed=case.seed, findings=(case.finding,))
        lesion, = render_lesions(world, case.finding, request, 0, (case.severity,))
        if lesion.counterfactual.shape != case.source.shape or not np.allclose(lesion.counterfactual, case.source,
                                                                               atol=1e-5):
            raise ValueError(f"case {case.seed} is not the suite's patient at {size} px in this world")
        out.append(oracle_insert(lesion, seed=case.seed).film)
    return out


def patch_crop(film: np.ndarray, lesion: np.ndarray, minimum: int = 48, margin: int = 10) -> np.ndarray:
    """A square crop around the lesion (for the panel)."""
    rows, cols = np.nonzero(lesion)
    side = max(minimum, int(np.ptp(rows)) + 1 + 2 * margin, int(np.ptp(cols)) + 1 + 2 * margin)
    side = min(side, *film.shape)
    r0 = int(np.clip((rows.min() + rows.max()) // 2 - side // 2, 0, film.shape[0] - side))
    c0 = int(np.clip((cols.min() + cols.max()) // 2 - side // 2, 0, film.shape[1] - side))
    return film[r0:r0 + side, c0:c0 + side]


TARGET_AUC = 0.65  # issue 47: Litjens 2010 readers at 0.5 (nodules) and 0.67 (diffuse infiltrates)
PANEL_TILE = 160


def run_realism_study(n: int, out_dir, findings=tuple(Finding), size: int = 256, first_seed: int = REALISM_SEED,
                      judge=None, ct=None, progress: bool = True, bootstrap: int = BOOTSTRAP) -> dict:
    """Render ``n`` patients per finding, make every paste, score the discriminator and
    (with a ``judge``) the oracle rows; write ``results.json`` and ``panel.png`` into
    ``out_dir`` (new or empty) when given."""
    if n < 2:
        raise InputError("--n must be at least 2 (the discriminator is trained and tested on different patients)")
    realism_seeds(first_seed, n)
    out = new_output_dir(out_dir) if out_dir is not None else None
    world = World(ct or load_chest_ct())
    per_finding, tiles = {}, []
    started = time.time()
    for finding in findings:
        begun = time.time()
        films = make_films(world, finding, n, size, first_seed)
        entry = {"discriminator": discriminator_report(films, bootstrap=bootstrap)}
        if judge is not None:
            entry["oracle"] = oracle_rows(films, judge)
        entry["seconds"] = round(time.time() - begun, 1)
        per_finding[finding.value] = entry
        if progress:
            print(f"{finding.value}: " + ", ".join(f"{p} AUC {r['auc']:.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]"
                                                   for p, r in entry["discriminator"].items())
                  + (f"; oracle truth gain {entry['oracle']['truth_gain']}, flip {entry['oracle']['flip_rate']} "
                     f"(truth {entry['oracle']['truth_flip_rate']})" if "oracle" in entry else "")
                  + f" ({entry['seconds']} s)", flush=True)
        # The panel: the first patient's drawn severity, real beside each paste.
        first = next(i for i, lesion in enumerate(films.lesions) if lesion.drawn)
        lesion = films.lesions[first]
        crops = [("real (world render)", lesion.factual)] + [(paste.value, films.pastes[paste][first]) for paste in Paste]
        for caption, film in crops:
            crop = patch_crop(film, lesion.lesion)
            scale = max(1, PANEL_TILE // crop.shape[0])
            tiles.append(Tile(np.kron(crop, np.ones((scale, scale), np.float32)),
                              f"{finding.value} {lesion.severity.value}\n{caption}"))
    report = {
        "what": "discriminator AUC, world-rendered lesion (real) vs pasted at the same place; 0.5 = indistinguishable",
        "target_auc": TARGET_AUC,
        "settings": {"n_patients_per_finding": n, "size": size, "first_seed": first_seed,
                     "severities": [s.value for s in SEVERITIES], "features": list(FEATURES), "folds": FOLDS,
                     "classifier": f"standardised logistic regression, C={C_REGULARISATION}", "bootstrap": bootstrap,
                     "ring_mm": RING_MM, "pastes": {p.value: what for p, what in PASTE_WHAT.items()},
                     "oracle": "compose() of the world's own channel at the true place; the judge is the bundle's"
                               if judge is not None else None},
        "findings": per_finding,
        "seconds": round(time.time() - started, 1),
    }
    if out is not None:
        write_new_text(Path(out) / "results.json", json.dumps(report, indent=1) + "\n")
        save_png(render_grid(tiles, "Real (world) vs inserted lesions at the same place; crude pastes as checks",
                             tile_size=PANEL_TILE, columns=len(Paste) + 1), Path(out) / "panel.png")
        report["out"] = str(out)
    return report
