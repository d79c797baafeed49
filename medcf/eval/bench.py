"""``medcf bench --suite counterfactual``: MedCF's methods against the baselines on
held-out films of the simulated world, where the true counterfactual is known
(docs/methods.md §7, issue 7).

For every finding, ``n`` patients are rendered with and without it from the same CT, pose
and anatomy; ``add`` edits the film without it, ``remove`` the film with it, and every
method edits the same film with the same seed. Every baseline also runs as ``+mask``: the
same sampling, its change transferred into MedCF's edit region as MedCF's own are — does
the attention method help beyond the compositing? Per (concept, action, method):

- ``flip_rate``: share of edits the judge (:mod:`medcf.eval.judge`, trained on renders only)
  assigns to the target state (add: present, on the asked side; remove: absent);
  ``flip_rate_unedited``: the same for the unedited inputs (the judge's own error, the floor
  an edit must beat); ``truth_flip_rate``: the same for the world's exact counterfactuals
  of the same cases (what the judge reads in the truth: the ceiling an editor can be asked
  to reach); ``model_target_rate``: the same for films the model samples from
  scratch with the counterfactual prompt (same seed) — how often the model draws the target
  state at all, the ceiling an edit that only steers the model can hope for;
- ``ssim_out`` / ``psnr_out``: output vs input outside the edit region (MedCF's region from
  the input's anatomy, the same for every method);
- ``dice_lungs`` / ``dice_heart``: masks segmented on input and output;
- ``fidelity_psnr`` / ``fidelity_ssim``: output vs the true counterfactual;
- ``truth_gain``: inside the true lesion region, 1 − ‖out − truth‖² / ‖in − truth‖² (median
  over films): how much of the true change the edit reproduces (1: all of it, 0: none,
  below 0: it moved away from the truth). It needs no judge;
- ``fid``: Fréchet distance (diagonal covariances: a handful of films cannot estimate a
  full covariance) between the judge's features of the outputs and of the true
  counterfactual renders;
- ``sec_per_edit``.

Beside the rows, ``insertion_shams``: for the ``add`` cases, the judge's flips for changes
with a true lesion's energy but not its shape or density (:mod:`medcf.eval.insertion_shams`):
what an insertion's flip rate must stand clear of.

Seeds: patients from :data:`BENCH_SEED` (apart from every training range and from the
editor benchmark's tuning and report ranges).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medcf.anatomy.segment import segment
from medcf.bundle import bundle_path
from medcf.editing.api import load_editor
from medcf.editing.defaults import auto_choices
from medcf.editing.edit import edit
from medcf.editing.film import edit_prompts
from medcf.editing.methods.baselines import (BASELINES, BASELINE_SETTINGS, MASKED_BASELINES, baseline_edits,
                                             unmasked_name)
from medcf.editing.spec import REMOVING_METHODS, EditSpec, Method
from medcf.errors import InputError
from medcf.eval.insertion_shams import SHAM_WHAT, InsertionSham, sham_film
from medcf.eval.judge import Judge, concept_misses
from medcf.eval.suite_names import BENCH_SEED, METHODS, OUR_SETTINGS, OURS, TUNING_SEED  # noqa: F401
from medcf.io.atomic import new_output_dir, write_new_file, write_new_text
from medcf.metrics import dice, psnr
from medcf.models.sampling import sample
from medcf.viz import Tile, difference, render_grid, save_png
from medcf.vocab import Action, Finding, Organ, Severity, Side, ViewPosition, Zone
from medcf.world.ct import load_chest_ct
from medcf.world.pairs import PhantomRequest, plan_sample
from medcf.world.render import World, draw_acquisition
from medcf.world.seeds import require_held_out

JUDGE_FOLDER = "judge"  # under the bundle's models/
MEASURES = ("flip_rate", "flip_rate_unedited", "truth_flip_rate", "model_target_rate", "ssim_out", "psnr_out", "dice_lungs", "dice_heart",
            "fidelity_psnr", "fidelity_ssim", "truth_gain", "fid", "sec_per_edit")  # the columns of every row, in order
FINDING_SEED_STRIDE = 1000  # each finding's patients start this many seeds after the previous finding's
MEDIAN_MEASURES = ("truth_gain",)  # a ratio with a small denominator on faint lesions: the median, not the mean


def ssim_mean(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> float:
    """Mean of scikit-image's SSIM map, over ``where`` if given (e.g. outside the edit region)."""
    from skimage.metrics import structural_similarity

    _, ssim_map = structural_similarity(a, b, data_range=1.0, full=True)
    return float(ssim_map.mean() if where is None else ssim_map[where].mean())


def psnr_capped(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB, 100 for identical images (JSON has no infinity)."""
    return min(100.0, psnr(np.asarray(a), np.asarray(b)))


def frechet_diagonal(a: np.ndarray, b: np.ndarray) -> float:
    """‖μa − μb‖² + Σ(σa² + σb² − 2σaσb): the Fréchet distance of diagonal Gaussians."""
    mean = float(((a.mean(0) - b.mean(0)) ** 2).sum())
    sa, sb = a.std(0), b.std(0)
    return mean + float((sa ** 2 + sb ** 2 - 2 * sa * sb).sum())


@dataclass
class Case:
    finding: Finding
    action: Action
    side: Side | None
    zone: object
    severity: object
    seed: int
    view: object
    source: np.ndarray
    truth: np.ndarray
    masks: object
    lesion: np.ndarray  # the true lesion region (bool), where truth and source differ by design


def suite_seeds(first_seed: int, n: int) -> range:
    """The patient seeds a suite of ``n`` cases per finding renders from ``first_seed``
    (every finding's block), refused when any lies in a training range."""
    if n > FINDING_SEED_STRIDE:
        raise InputError(f"--n {n}: at most {FINDING_SEED_STRIDE} patients per finding (their seeds would overlap)")
    seeds = range(first_seed, first_seed + FINDING_SEED_STRIDE * (len(Finding) - 1) + n)
    require_held_out(seeds.start, seeds.stop - 1, "counterfactual suite")
    return seeds


def render_cases(findings, n: int, size: int, first_seed: int, segmenter, ct=None) -> list[Case]:
    suite_seeds(first_seed, n)
    world = World(ct or load_chest_ct())
    cases = []
    for finding in findings:
        request = PhantomRequest(n=n, size=size, seed=first_seed + FINDING_SEED_STRIDE * list(Finding).index(finding),
                                 findings=(finding,))
        for index in range(n):
            seed, view, lesion = plan_sample(request, index)
            rendering = world.render(draw_acquisition(seed, view, size), lesion)
            with_finding, without = rendering.factual[lesion.severity], rendering.counterfactual
            side = None if finding is Finding.CARDIOMEGALY else (lesion.side or Side.BILATERAL)
            zone = None if finding is Finding.CARDIOMEGALY else lesion.zone
            for action in Action:  # a world film is a chest film: a large finding may lower the
                # segmenter's confidence, which must not stop the benchmark (min_confidence 0)
                source, truth = (without, with_finding) if action is Action.ADD else (with_finding, without)
                cases.append(Case(finding, action, side, zone, lesion.severity, seed, view, source, truth,
                                  segment(source, segmenter, min_confidence=0.0),
                                  rendering.lesion_masks[lesion.severity] > 0))
    return cases


def truth_gain(source: np.ndarray, output: np.ndarray, truth: np.ndarray, region: np.ndarray) -> float:
    """1 − ‖out − truth‖² / ‖in − truth‖² inside ``region``; NaN where the truth does not
    differ from the input there (nothing to reproduce)."""
    before = float(((source[region] - truth[region]) ** 2).sum())
    if before <= 1e-12:
        return float("nan")
    return 1.0 - float(((output[region] - truth[region]) ** 2).sum()) / before


def _measures(case: Case, result, seconds: float, segmenter) -> dict[str, float]:
    """Preservation, anatomy and fidelity of one edit (``result``: a ``Counterfactual``)."""
    outside = ~result.region.native_region
    masks_out = segment(result.image, segmenter, min_confidence=0.0)
    return {
        "ssim_out": ssim_mean(case.source, result.image, outside),
        "psnr_out": psnr_capped(case.source[outside], result.image[outside]),
        "dice_lungs": dice(case.masks.lung(Side.BILATERAL), masks_out.lung(Side.BILATERAL)),
        "dice_heart": dice(case.masks.organs[Organ.HEART], masks_out.organs[Organ.HEART]),
        "fidelity_psnr": psnr_capped(result.image, case.truth),
        "fidelity_ssim": ssim_mean(result.image, case.truth),
        "truth_gain": truth_gain(case.source, result.image, case.truth, case.lesion),
        "sec_per_edit": seconds,
    }


def _spec(case: Case, method: Method, ours: dict):
    return EditSpec(case.finding, case.action, case.side, case.zone, case.severity, method, seed=case.seed, **ours)


@dataclass
class SuiteFilms:
    """What the suite's edits produced, before any judge looks at them: per (finding,
    action, method) the cases, output films and judge-free measures; per (finding, action)
    the films the model samples from scratch with the counterfactual prompt."""

    cases: list[Case]
    outputs: dict[tuple, list]  # (finding, action, method) -> [(case, image, measures)]
    drawn: dict[tuple, np.ndarray]  # (finding, action) -> sampled films, one per case
    methods: tuple[str, ...]
    settings: dict


FILMS_FILE = "suite-films.npz"  # what --keep-films writes and --films reads
FILMS_FORMAT = 1


def _enum_value(member) -> str | None:
    return None if member is None else member.value


def save_suite_films(films: SuiteFilms, folder: str | Path) -> Path:
    """Keep the suite's films, judge-free, in ``folder/suite-films.npz``, so that another
    judge can score the same edits: an n = 10 run's edits take about 45 min on two CPU
    cores, scoring them about one minute. Films are kept exactly as made (the judge sees what
    the run made); the cases' anatomy masks are not kept (scoring does not use them)."""
    out = new_output_dir(folder)
    position = {id(case): i for i, case in enumerate(films.cases)}
    arrays = {name: np.stack([getattr(case, name) for case in films.cases]) for name in ("source", "truth", "lesion")}
    outputs, drawn = [], []
    for k, ((finding, action, method), items) in enumerate(films.outputs.items()):
        arrays[f"output_{k}"] = np.stack([image for _, image, _ in items])
        outputs.append({"finding": finding.value, "action": action.value, "method": method,
                        "cases": [position[id(case)] for case, _, _ in items], "measures": [m for _, _, m in items]})
    for k, ((finding, action), images) in enumerate(films.drawn.items()):
        arrays[f"drawn_{k}"] = np.asarray(images)
        drawn.append({"finding": finding.value, "action": action.value})
    cases = [{"finding": c.finding.value, "action": c.action.value, "side": _enum_value(c.side),
              "zone": _enum_value(c.zone), "severity": _enum_value(c.severity), "seed": c.seed,
              "view": _enum_value(c.view)} for c in films.cases]
    record = {"format": FILMS_FORMAT, "cases": cases, "outputs": outputs, "drawn": drawn,
              "methods": list(films.methods), "settings": films.settings}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, record=np.array(json.dumps(record)), **arrays)

    return write_new_file(out / FILMS_FILE, write)


def load_suite_films(folder: str | Path) -> SuiteFilms:
    """The films :func:`save_suite_films` kept (``masks`` of every case is ``None``)."""
    path = Path(folder) / FILMS_FILE
    if not path.is_file():
        raise InputError(f"{folder}: no {FILMS_FILE} (make one with medcf bench --keep-films)")
    with np.load(path) as data:
        record = json.loads(str(data["record"]))
        if record.get("format") != FILMS_FORMAT:
            raise InputError(f"{path}: format {record.get('format')}, this MedCF reads {FILMS_FORMAT}")
        arrays = {name: data[name] for name in data.files if name != "record"}

    def member(kind, value):
        return None if value is None else kind(value)

    cases = [Case(Finding(c["finding"]), Action(c["action"]), member(Side, c["side"]), member(Zone, c["zone"]),
                  member(Severity, c["severity"]), c["seed"], member(ViewPosition, c["view"]),
                  arrays["source"][i], arrays["truth"][i], None, arrays["lesion"][i])
             for i, c in enumerate(record["cases"])]
    outputs = {(Finding(o["finding"]), Action(o["action"]), o["method"]):
               [(cases[i], image, measures)
                for i, image, measures in zip(o["cases"], arrays[f"output_{k}"], o["measures"])]
               for k, o in enumerate(record["outputs"])}
    drawn = {(Finding(d["finding"]), Action(d["action"])): arrays[f"drawn_{k}"] for k, d in enumerate(record["drawn"])}
    return SuiteFilms(cases, outputs, drawn, tuple(record["methods"]), record["settings"])


def _check_suite_options(n: int, methods, ours: dict, first_seed: int) -> None:
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise InputError(f"unknown method(s) {', '.join(unknown)}; choose from: {', '.join(METHODS)}")
    if n < 1:
        raise InputError("--n must be at least 1")
    unknown = sorted(set(ours) - set(OUR_SETTINGS))
    if unknown:
        raise InputError(f"cannot set {', '.join(unknown)} for MedCF's methods here ({', '.join(OUR_SETTINGS)})")
    EditSpec(Finding.EDEMA, Action.ADD, **ours)  # validates before any work
    suite_seeds(first_seed, n)


def make_suite_edits(n: int, methods=METHODS, findings=tuple(Finding), size: int = 256, first_seed: int = BENCH_SEED,
                     editor=None, ct=None, progress: bool = True, ours: dict | None = None,
                     placement=None, actions=tuple(Action)) -> SuiteFilms:
    """Every method's edit of every case, measured as it is made (only the output film is
    kept), and the model's own films from the counterfactual prompts. A baseline asked for
    in both forms is sampled once and finished twice. ``actions``: add, remove or both (a
    sweep that only needs one need not make the other)."""
    from tqdm import tqdm


    ours = dict(ours or {})
    _check_suite_options(n, methods, ours, first_seed)
    chosen = EditSpec(Finding.EDEMA, Action.ADD, **ours)  # defaults where not set
    editor = editor or load_editor(placement=placement)
    cases = [case for case in render_cases(findings, n, size, first_seed, editor.segmenter, ct)
             if case.action in actions]
    baselines = {base: tuple(m for m in methods if unmasked_name(m) == base) for base in BASELINES}
    outputs: dict[tuple, list] = {}
    for case in tqdm(cases, desc="counterfactual bench", unit="film", disable=not progress):
        for method in methods:
            if case.action is Action.REMOVE and method in OURS and method not in REMOVING_METHODS:
                continue  # a method that only adds (insert) has no remove row
            spec = _spec(case, method if method in OURS else Method.STEER, ours)
            tick = time.perf_counter()
            if method in OURS:
                results = {method: edit(case.source, case.masks, spec, editor.generator, editor.vectors, case.view,
                                        False, check=spec.passes > 1)}  # one pass: the check changes nothing
            elif method == baselines[unmasked_name(method)][0]:  # the first form asked runs the sampling
                results = baseline_edits(unmasked_name(method), case.source, case.masks, spec, editor.generator,
                                         case.view, forms=baselines[unmasked_name(method)])
            else:
                continue
            seconds = time.perf_counter() - tick
            for name, result in results.items():  # measure now and keep only the output film
                outputs.setdefault((case.finding, case.action, name), []).append(
                    (case, result.image, _measures(case, result, seconds, editor.segmenter)))
    drawn = {}
    for key in dict.fromkeys((case.finding, case.action) for case in cases):
        mine = [case for case in cases if (case.finding, case.action) == key]
        drawn[key] = np.stack([sample(editor.generator, [edit_prompts(_spec(case, Method.STEER, {}), case.view)["target"]],
                                      seed=case.seed, progress=False).images[0] for case in mine])
    settings = {"n": n, "size": size, "first_seed": first_seed, "methods": list(methods),
                "findings": [f.value for f in findings], "actions": [a.value for a in actions],
                "baselines": {m: {**BASELINE_SETTINGS[unmasked_name(m)], "region": m in MASKED_BASELINES}
                              for m in methods if m not in OURS},
                "ours": {k: getattr(chosen, k) for k in OUR_SETTINGS}, "placement": editor.generator.placement()}
    if Method.AUTO.value in methods:
        settings["auto_choices"] = auto_choices(editor.generator)
    return SuiteFilms(cases, outputs, drawn, tuple(methods), settings)


def in_target_state(judge, films: np.ndarray, cases: list[Case]) -> list[bool]:
    """Judge: add → present on the asked side; remove → absent anywhere."""
    found = []
    for case, p in zip(cases, judge.probabilities(films)):
        if case.action is Action.ADD:
            found.append(bool(judge.present(p[None], case.finding, case.side)[0]))
        else:
            found.append(not bool(judge.present(p[None], case.finding)[0]))
    return found


def _aggregate(values: list[float], median: bool) -> float:
    values = np.asarray(values, np.float64)
    if np.isnan(values).all():
        return float("nan")
    return float(np.nanmedian(values) if median else np.nanmean(values))


def aggregate_or_none(values: list[float | None], median: bool = False) -> float | None:
    """:func:`_aggregate` for suites that write nulls: ``None`` where nothing was measured
    (no values, or only NaN / ``None``), else the mean (median) to 4 decimals."""
    value = _aggregate([np.nan if v is None else v for v in values], median)
    return None if np.isnan(value) else round(value, 4)


def markdown_rows(head: tuple[str, ...], rows: list[dict]) -> list[str]:
    """A results table's header, rule and rows: ``–`` for ``None``, floats to 4 significant digits."""
    def cell(value) -> str:
        return "–" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)

    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
            *("| " + " | ".join(cell(row[k]) for k in head) + " |" for row in rows)]


def score_suite(films: SuiteFilms, judge, out_dir: str | Path | None = None) -> dict:
    """The judge's verdicts on ``films`` and one row per (concept, action, method); writes
    ``results.json``, ``results.md`` and ``examples.png`` into ``out_dir`` if given."""
    out = new_output_dir(out_dir) if out_dir is not None else None
    rows = []
    # per concept, the same question asked of the unedited inputs (how often the judge already
    # says "done": the floor) and of the model's own films (the ceiling)
    # and the judge's features of the true counterfactuals, shared by every method of a concept
    floor, ceiling, truth_features, truth_rate = {}, {}, {}, {}
    for key, drawn in films.drawn.items():
        mine = [case for case in films.cases if (case.finding, case.action) == key]
        floor[key] = float(np.mean(in_target_state(judge, np.stack([case.source for case in mine]), mine)))
        truth_rate[key] = float(np.mean(in_target_state(judge, np.stack([case.truth for case in mine]), mine)))
        ceiling[key] = float(np.mean(in_target_state(judge, drawn, mine)))
        truth_features[key] = {id(case): f for case, f in zip(mine, judge.features(np.stack([c.truth for c in mine])))}
    for (finding, action, method), items in films.outputs.items():
        images = np.stack([image for _, image, _ in items])
        flips = in_target_state(judge, images, [case for case, _, _ in items])
        measures = [m for _, _, m in items]
        truths = np.stack([truth_features[(finding, action)][id(case)] for case, _, _ in items])
        row = {"concept": finding.value, "action": action.value, "method": method, "n": len(items),
               "flip_rate": float(np.mean(flips)), "flip_rate_unedited": floor[(finding, action)],
               "truth_flip_rate": truth_rate[(finding, action)],
               "model_target_rate": ceiling[(finding, action)],
               **{k: _aggregate([m[k] for m in measures], k in MEDIAN_MEASURES) for k in measures[0]},
               "fid": frechet_diagonal(judge.features(images), truths)}
        row["judge_caveats"] = concept_misses(judge.record, finding, action)
        rows.append(row)
    rows.sort(key=lambda r: (r["concept"], r["action"], METHODS.index(r["method"])))
    settings = {**films.settings,
                "judge": {"auc": judge.record.get("heldout_report", {}).get("auc"), "thresholds": judge.thresholds,
                          "side_margins": judge.side_margins,
                          "recipe": judge.record.get("recipe", {"autoencoded": False, "look_augmentation": False}),
                          "steps": judge.record.get("steps")}}
    shams = insertion_sham_flip_rates(judge, [case for case in films.cases if case.action is Action.ADD])
    if out is not None:
        write_new_text(out / "results.json", json.dumps({"rows": rows, "settings": settings,
                                                         "insertion_shams": shams}, indent=1) + "\n")
        write_new_text(out / "results.md", results_table(rows, settings) + shams_table(shams))
        _figure(films.outputs, films.methods, out / "examples.png")
    return {"rows": rows, "settings": settings, "insertion_shams": shams, "out": str(out) if out is not None else None}


def insertion_sham_flip_rates(judge, cases: list[Case]) -> dict:
    """Per insertion sham and finding, over ``add`` cases the judge does not already call
    done: the share a sham puts in the target state (``flip``) and how many could flip
    (``n``); the same count as the judge's own shams (:mod:`medcf.eval.judge_report`)."""
    cases = [case for case in cases if case.action is Action.ADD]
    if not cases:
        return {"shams": {}, "rates": {}}
    before = in_target_state(judge, np.stack([case.source for case in cases]), cases)
    rates: dict[str, dict[str, dict]] = {}
    for sham in InsertionSham:
        films = np.stack([sham_film(sham, case.source, case.truth, case.lesion, case.seed) for case in cases])
        after = in_target_state(judge, films, cases)
        counts: dict[str, list[int]] = {}
        for case, was, now in zip(cases, before, after):
            entry = counts.setdefault(case.finding.value, [0, 0])
            if not was:
                entry[0] += int(now)
                entry[1] += 1
        rates[sham.value] = {finding: {"flip": round(flips / total, 4) if total else None, "n": total}
                             for finding, (flips, total) in counts.items()}
    return {"shams": {sham.value: what for sham, what in SHAM_WHAT.items()}, "rates": rates}


def shams_table(shams: dict) -> str:
    """The insertion shams' flip rates as a Markdown section (empty without ``add`` cases)."""
    if not shams.get("rates"):
        return ""
    findings = sorted({finding for rates in shams["rates"].values() for finding in rates})
    lines = ["", "Insertion shams (add cases; a flip rate well above 0 means the judge counts added contrast, "
             "not the finding):", "", "| sham | " + " | ".join(findings) + " |", "|---|" + "---|" * len(findings)]
    for sham, rates in shams["rates"].items():
        cells = [rates.get(f, {}).get("flip") for f in findings]
        lines.append(f"| {sham} | " + " | ".join("–" if c is None else f"{c:.2f}" for c in cells) + " |")
    return "\n".join(lines) + "\n"


def run_counterfactual_suite(n: int, out_dir: str | Path, methods=METHODS, findings=tuple(Finding), size: int = 256,
                             first_seed: int = BENCH_SEED, judge=None, editor=None, ct=None,
                             progress: bool = True, ours: dict | None = None,
                             keep_films: str | Path | None = None, placement=None, actions=tuple(Action)) -> dict:
    """Run the suite and write ``results.json``, ``results.md`` and ``examples.png`` into ``out_dir``.
    ``placement`` (:class:`medcf.devices.Placement`): where the editor runs when ``editor`` is None.

    ``ours``: :class:`EditSpec` fields (``depth``, ``strength``, ``energy``) for MedCF's
    methods instead of ``medcf edit``'s defaults; the baselines keep their settings.
    ``keep_films``: a folder where the films are also kept for :func:`rescore_suite`."""
    _check_suite_options(n, methods, dict(ours or {}), first_seed)
    if keep_films is not None and Path(keep_films).resolve() == Path(out_dir).resolve():
        raise InputError("--keep-films needs a folder of its own, not --out")
    for folder in (out_dir, keep_films):  # fail early, before any work, if a folder is not new or empty
        if folder is not None:
            new_output_dir(folder)
    judge = judge or bundle_judge()
    films = make_suite_edits(n, methods, findings, size, first_seed, editor, ct, progress, ours, placement, actions)
    if keep_films is not None:
        save_suite_films(films, keep_films)
    return score_suite(films, judge, out_dir)


def rescore_suite(films_dir: str | Path, out_dir: str | Path, judge=None) -> dict:
    """Score films kept by ``--keep-films`` with ``judge`` (default: the bundle's), without
    editing again; writes the same three files as :func:`run_counterfactual_suite`."""
    new_output_dir(out_dir)
    films = load_suite_films(films_dir)
    return score_suite(films, judge or bundle_judge(), out_dir)


def bundle_judge():
    return Judge.load(bundle_path("models", JUDGE_FOLDER))


def summary_rows(rows: list[dict]) -> list[dict]:
    """Means over concepts per (action, method)."""
    grouped: dict[tuple, list[dict]] = {}
    for row in rows:
        grouped.setdefault((row["action"], row["method"]), []).append(row)
    return [{"concept": "ALL", "action": action, "method": method, "n": sum(r["n"] for r in members),
             **{k: _aggregate([r[k] for r in members], k in MEDIAN_MEASURES) for k in MEASURES}}
            for (action, method), members in sorted(grouped.items(), key=lambda kv: (kv[0][0], METHODS.index(kv[0][1])))]


def _our_setting(name: str, value) -> str:
    """One of MedCF's settings for the table's header; ``None`` is settled per edit."""
    if value is not None:
        return f"{name} {value}"
    generic = {"depth": "0.5", "guidance": "the model's"}.get(name, "default")
    return f"{name} per finding for auto (edit_defaults.json), {generic} for the named methods"


def results_table(rows: list[dict], settings: dict) -> str:
    head = ("concept", "action", "method", "n", *MEASURES)
    recipe = settings.get("judge", {}).get("recipe") or {}
    trained_on = ("renders and their autoencoded copies, look augmentation" if recipe.get("autoencoded")
                  else "renders only")
    lines = [f"# MedCF counterfactual benchmark (n = {settings['n']} held-out patients per finding, seeds from "
             f"{settings['first_seed']})", "",
             f"Simulated films; the judge was trained on {trained_on}. Research only, never for diagnosis.", "",
             "MedCF's methods: " + ", ".join(_our_setting(k, v) for k, v in settings["ours"].items()) + ".", "",
             "Judge caveats: the targets of issue 15 the judge misses for that concept and action "
             "(AUC < 0.95, side AUC < 0.90, false alarms on normal samples > 0.10, sham flips > 0.05); "
             "a flip rate with caveats is the judge's verdict, not a fact about the film.", "",
             "| " + " | ".join(head) + " | judge caveats |", "|" + "---|" * (len(head) + 1)]
    for row in summary_rows(rows) + rows:
        caveats = "; ".join(row["judge_caveats"]) if "judge_caveats" in row else ""
        lines.append("| " + " | ".join(f"{row[k]:.4g}" if isinstance(row[k], float) else str(row[k]) for k in head)
                     + f" | {caveats or ('–' if row['concept'] == 'ALL' else 'none')} |")
    return "\n".join(lines) + "\n"


def _figure(outputs: dict, methods, path: Path) -> None:
    tiles = []
    firsts: dict[tuple, dict] = {}
    for (finding, action, method), items in outputs.items():
        case, image, _ = items[0]
        firsts.setdefault((finding, action), {"case": case})[method] = image
    for (finding, action), entry in firsts.items():
        case = entry["case"]
        tiles += [Tile(case.source, f"{action.value} {finding.value}\ninput"), Tile(case.truth, "true counterfactual")]
        tiles += [Tile(difference(entry[m], case.source, 4.0), f"{m}: change x4") for m in methods if m in entry]
    save_png(render_grid(tiles, "MedCF counterfactual benchmark: first patient per concept", tile_size=150,
                         columns=2 + len(methods)), path)
