"""``medcf bench --suite longtail``: does disentanglement plus initial-noise optimisation
lift the tail? (the second source paper's claim; docs/methods.md §5, issue 22)

The factor model under test was trained on a world set in which some (finding, side,
zone) combinations were made deliberately rare (``medcf train factors --rare``); its
recipe keeps every combination's share of the training findings, and that share puts the
combination in a bucket (``head`` ≥ 5 %, ``tail`` < 1 %, ``medium`` between: the
thresholds of :mod:`medcf.editing.report_mix`). For ``per_bucket`` combinations of each
bucket (:func:`choose_combinations`):

- ``setting = edit``: ``n`` held-out world patients without the finding get it added by
  each method; the world's render with it is the truth (``flip_rate`` by the judge,
  ``fidelity_psnr``, ``truth_gain``). Noise optimisation does not apply to a given film
  (its noise is its inversion), so these rows have ``noise_optimization`` false;
- ``setting = pairs``: ``pair_n`` factual/counterfactual pairs from scratch per method,
  with and without InitNO (``noise_optimization``); the judge reads the film that should
  carry the finding (``flip_rate``). There is no true counterfactual of a sampled film,
  so ``fidelity_psnr`` and ``truth_gain`` are empty.

Only the factor model saw the skewed set: the denoiser (used by every method, ``causal``
included, for its re-drawing) is the shipped one, trained on the world's natural mix.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from medcf.anatomy.segment import segment
from medcf.editing.api import load_editor
from medcf.editing.edit import edit
from medcf.editing.methods.causal import use_factors
from medcf.editing.pairs import generate_pair
from medcf.editing.plan import load_planned, plan_edit
from medcf.editing.spec import EditSpec, Method
from medcf.errors import InputError
from medcf.eval.bench import aggregate_or_none, bundle_judge, markdown_rows, psnr_capped, truth_gain
from medcf.io.atomic import new_output_dir, write_new_text
from medcf.training.skew import bucket_of
from medcf.viz import Tile, render_grid, save_png
from medcf.vocab import Action, Finding, Severity, Side, Zone
from medcf.world.ct import load_chest_ct
from medcf.world.pairs import PhantomRequest, plan_sample
from medcf.world.pathology import FINDING_ZONES
from medcf.world.render import World, draw_acquisition
from medcf.world.seeds import SeedRange

LONGTAIL_SEED = SeedRange.LONGTAIL.start
DEFAULT_METHODS = ("causal", "steer", "regulated")
DEFAULT_PAIR_METHODS = ("causal", "steer")
COLUMNS = ("bucket", "combination", "setting", "method", "noise_optimization", "n", "training_share", "flip_rate",
           "fidelity_psnr", "truth_gain", "sec_per_item")


def choose_combinations(frequencies: dict[str, float], per_bucket: int) -> dict[str, list[str]]:
    """Per bucket, up to ``per_bucket`` combinations of *different* findings (so that a
    bucket is not one finding the model cannot draw): the commonest of the head, the
    rarest of the medium bucket and of the tail. Combinations the world cannot render as
    asked are left out (a zone-less combination of a zoned finding is lobar consolidation)."""
    chosen: dict[str, list[str]] = {"head": [], "medium": [], "tail": []}
    for bucket in chosen:
        keys = [k for k in frequencies if bucket_of(frequencies[k]).value == bucket]
        keys.sort(key=lambda k: (-frequencies[k] if bucket == "head" else frequencies[k], k))
        seen: set[str] = set()
        for key in keys:
            finding, _, zone = key.split("/")
            if finding in seen or (FINDING_ZONES[Finding(finding)] is not None and zone == "none"):
                continue
            if len(chosen[bucket]) < per_bucket:
                chosen[bucket].append(key)
                seen.add(finding)
    return chosen


def _parts(key: str) -> tuple[Finding, Side | None, Zone | None]:
    finding, side, zone = key.split("/")
    return Finding(finding), None if side == "none" else Side(side), None if zone == "none" else Zone(zone)


def _cases(key: str, index: int, n: int, size: int, world, segmenter):
    finding, side, zone = _parts(key)
    request = PhantomRequest(n=n, size=size, seed=LONGTAIL_SEED + 1000 * index, findings=(finding,), side=side,
                             zone=zone)
    for i in range(n):
        seed, view, lesion = plan_sample(request, i)
        rendering = world.render(draw_acquisition(seed, view, size), lesion)
        source = rendering.counterfactual
        yield (seed, view, lesion, source, rendering.factual[lesion.severity],
               rendering.lesion_masks[lesion.severity] > 0, segment(source, segmenter, min_confidence=0.0))


def _row(bucket, key, setting, method, optimized, share, flips, fidelity, gains, seconds) -> dict:
    return {"bucket": bucket, "combination": key, "setting": setting, "method": method,
            "noise_optimization": optimized, "n": len(flips), "training_share": share,
            "flip_rate": aggregate_or_none(flips), "fidelity_psnr": aggregate_or_none(fidelity),
            "truth_gain": aggregate_or_none(gains, median=True), "sec_per_item": aggregate_or_none(seconds)}


def run_longtail_suite(out_dir: str | Path, factors_folder: str | Path, n: int = 4, pair_n: int = 2,
                       per_bucket: int = 3, methods=DEFAULT_METHODS, pair_methods=DEFAULT_PAIR_METHODS,
                       size: int = 256, judge=None, editor=None, progress: bool = True, ct=None) -> dict:
    """Run the suite; writes ``results.json``, ``results.md`` and ``examples.png``."""
    from tqdm import tqdm


    out = new_output_dir(out_dir)
    editor = editor or load_editor()
    generator = editor.generator
    factors = use_factors(generator, factors_folder)
    rare = factors.record.recipe.get("rare")
    if not rare or not rare.get("frequencies"):
        raise InputError(f"{factors_folder}: the long-tail suite needs a factor model trained with --rare "
                         "(its recipe keeps the skewed set's frequencies)")
    frequencies = rare["frequencies"]
    judge = judge or bundle_judge()
    world = World(ct or load_chest_ct())
    combinations = choose_combinations(frequencies, per_bucket)
    work = [(bucket, key) for bucket, keys in combinations.items() for key in keys]
    rows, examples = [], []
    for index, (bucket, key) in enumerate(tqdm(work, desc="long-tail suite", unit="combination",
                                               disable=not progress)):
        finding, side, zone = _parts(key)
        judged_side = None if finding is Finding.CARDIOMEGALY else (side or Side.BILATERAL)
        results = {m: ([], [], [], []) for m in methods}
        first: dict[str, np.ndarray] = {}  # each method's edit of the combination's first patient
        for i, (seed, view, lesion, source, truth, lesion_mask, masks) in enumerate(
                _cases(key, index, n, size, world, editor.segmenter)):
            if i == 0:
                examples.append((key, bucket, source, truth, first))
            for method in methods:
                spec = EditSpec(finding, Action.ADD, lesion.side, lesion.zone, lesion.severity, Method(method),
                                seed=seed)
                tick = time.perf_counter()
                result = edit(source, masks, spec, generator, editor.vectors, view, progress=False, check=False)
                flips, fidelity, gains, seconds = results[method]
                seconds.append(time.perf_counter() - tick)
                flips.append(float(judge.present(judge.probabilities(result.image[None]), finding, judged_side)[0]))
                fidelity.append(psnr_capped(result.image, truth))
                gains.append(truth_gain(source, result.image, truth, lesion_mask))
                first.setdefault(method, result.image)
        for method in methods:
            rows.append(_row(bucket, key, "edit", method, False, frequencies[key], *results[method]))
        for method in pair_methods:
            for optimized in (False, True):
                flips, seconds = [], []
                for k in range(pair_n):
                    spec = EditSpec(finding, Action.ADD, side, zone, Severity.MODERATE, Method(method),
                                    seed=LONGTAIL_SEED + 1000 * index + 500 + k, optimize_noise=optimized)
                    plan = plan_edit(spec, generator)
                    model = load_planned(plan, generator, editor.vectors)
                    tick = time.perf_counter()
                    pair = generate_pair(model.generator, plan.spec, editor.segmenter, model.vectors)
                    seconds.append(time.perf_counter() - tick)
                    flips.append(float(judge.present(judge.probabilities(pair.counterfactual[None]), finding,
                                                     judged_side)[0]))
                rows.append(_row(bucket, key, "pairs", method, optimized, frequencies[key], flips, [], [], seconds))
    summary = summarize(rows)
    settings = {"n": n, "pair_n": pair_n, "per_bucket": per_bucket, "size": size, "first_seed": LONGTAIL_SEED,
                "methods": list(methods), "pair_methods": list(pair_methods), "factors": _shown(factors.path),
                "rare": rare.get("shares"), "combinations": combinations}
    write_new_text(out / "results.json", json.dumps({"rows": rows, "summary": summary, "settings": settings},
                                                    indent=1) + "\n")
    write_new_text(out / "results.md", _table(summary, rows, settings))
    _figure(examples, methods, out / "examples.png")
    return {"rows": rows, "summary": summary, "settings": settings, "out": str(out)}


def _shown(path: Path) -> str:
    """``path`` relative to the working folder when it lies inside it (results stay portable)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def summarize(rows: list[dict]) -> list[dict]:
    """One row per (bucket, setting, method, noise_optimization): means over its combinations."""
    grouped: dict[tuple, list[dict]] = {}
    for row in rows:
        grouped.setdefault((row["bucket"], row["setting"], row["method"], row["noise_optimization"]), []).append(row)
    order = {"head": 0, "medium": 1, "tail": 2}
    result = []
    for (bucket, setting, method, optimized), members in sorted(grouped.items(),
                                                                key=lambda kv: (order[kv[0][0]], kv[0][1:])):
        entry = {"bucket": bucket, "combination": "ALL", "setting": setting, "method": method,
                 "noise_optimization": optimized, "n": sum(r["n"] for r in members),
                 "training_share": round(float(np.mean([r["training_share"] for r in members])), 5)}
        for measure in ("flip_rate", "fidelity_psnr", "truth_gain", "sec_per_item"):
            entry[measure] = aggregate_or_none([r[measure] for r in members])
        result.append(entry)
    return result


def _table(summary: list[dict], rows: list[dict], settings: dict) -> str:
    lines = [f"# MedCF long-tail suite (edits: n = {settings['n']} held-out patients per combination; pairs: "
             f"{settings['pair_n']} per method and noise setting; seeds from {settings['first_seed']})", "",
             f"Factor model: {settings['factors']}, trained with these combinations made rare: "
             f"{settings['rare']}. Only the factor model saw the skewed set; the denoiser is the shipped one. "
             "Simulated films; research only, never for diagnosis.", "", *markdown_rows(COLUMNS, summary + rows)]
    return "\n".join(lines) + "\n"


def _figure(examples, methods, path: Path) -> None:
    tiles = []
    for key, bucket, source, truth, outputs in examples:
        finding, side, zone = key.split("/")
        where = " ".join(w for w in (side, zone) if w != "none")
        tiles += [Tile(source, f"{finding} ({bucket})\n{where + ', ' if where else ''}input"),
                  Tile(truth, "true counterfactual")]
        tiles += [Tile(outputs[m], m) for m in methods if outputs.get(m) is not None]
    save_png(render_grid(tiles, "MedCF long-tail suite: first patient per combination (simulated; research only)",
                         tile_size=180, columns=2 + len(methods)), path)
