"""How faithfully ``--method insert`` adds a lesion, measured against the world's truth (issue 47).

For each world case (a patient seed, one finding at moderate severity, 512 px PA), the world
renders the counterfactual and the factual film with the same acquisition. The product's
insert (:func:`medcf.editing.methods.insert.insert_lesion`: the lesion bank's canonical
lesion and background, registered onto the film, the mapping fitted on the film, composed
in its attenuation domain) runs on the counterfactual with the world's own anatomy masks
(given masks) and the lesion's true centroid (oracle placement, so that the figures measure
the mapping and the composition, not where placement put it). Inside the union of the
inserted extent and the true lesion (widened by 3 px) it reports:

- ``mean_ratio``: mean change inserted / mean change true (1 is right; the sample study's
  effusion was far above);
- ``rms_error``: RMS(inserted − factual) over the true change's RMS (0 is right; 1 is no
  better than not inserting at all);
- ``saturated``: share of the region at the display's ends (≤ 0.002 or ≥ 0.998) in the
  inserted film but not in the factual one (0 is right).

Two ways the film reaches the product (``--voi``): ``window``, as the sample study does (a
DICOM whose stored values are the processed display under a stated linear window 2048/4096,
so the window is inverted and the processing's tone is left in the values), and ``unknown``
(a render or PNG: the tone curve is fitted on the film).

Usage: python benchmarks/bench_insert_fidelity.py [--range tuning|held_out] [--patients 4] [--voi window|unknown]
       [--size 512] [--json docs/results/insert-fidelity/results.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from medcf.anatomy.masks import AnatomyMasks
from medcf.editing.film import FilmFacts
from medcf.editing.methods.insert import insert_lesion
from medcf.editing.spec import DEFAULT_ZONES, EditSpec
from medcf.errors import InputError
from medcf.io.display import DisplayTransform
from medcf.vocab import FINDING_SIDES, FINDING_ZONES, Finding, Organ, Severity, ViewPosition
from medcf.world.ct import load_chest_ct
from medcf.world.pathology import LesionSpec
from medcf.world.render import World, anatomy_channel, draw_acquisition
from medcf.world.seeds import SeedRange

RANGES = {"tuning": SeedRange.TUNING.start, "held_out": SeedRange.BENCHMARK.start + 90_000}
WINDOW = DisplayTransform("Window Center/Width 2048/4096 (LINEAR)", inverted=False)  # the sample study's
SATURATED = 0.002  # display values this close to 0 or 1 count as saturated


def world_masks(anatomy: np.ndarray) -> AnatomyMasks:
    return AnatomyMasks({Organ.LUNG_RIGHT: anatomy_channel(anatomy, "lung_right"),
                         Organ.LUNG_LEFT: anatomy_channel(anatomy, "lung_left"),
                         Organ.HEART: anatomy_channel(anatomy, "heart")}, "world")


def lesion_of(finding: Finding, index: int, seed: int) -> LesionSpec:
    sides, zones = FINDING_SIDES[finding], FINDING_ZONES[finding]
    side = sides[index % len(sides)] if sides else None
    zone = DEFAULT_ZONES.get(finding) or (zones[index % len(zones)] if zones else None)
    return LesionSpec(finding, side, zone, Severity.MODERATE, seed=seed)


def saturated(image: np.ndarray) -> np.ndarray:
    return (image <= SATURATED) | (image >= 1.0 - SATURATED)


def measure(counterfactual: np.ndarray, factual: np.ndarray, inserted: np.ndarray, region: np.ndarray) -> dict:
    truth = (factual - counterfactual)[region].astype(np.float64)
    change = (inserted - counterfactual)[region].astype(np.float64)
    contrast = float(np.sqrt(np.mean(truth ** 2)))
    mean_true = float(np.mean(truth))
    return {
        "mean_true": round(mean_true, 4), "mean_inserted": round(float(np.mean(change)), 4),
        "mean_ratio": round(float(np.mean(change)) / mean_true, 3) if abs(mean_true) > 1e-6 else None,
        "rms_error": round(float(np.sqrt(np.mean((change - truth) ** 2))) / max(contrast, 1e-9), 3),
        "peak_change": round(float(np.max(np.abs(change))), 3), "peak_true": round(float(np.max(np.abs(truth))), 3),
        "saturated": round(float(np.mean(saturated(inserted[region]) & ~saturated(factual[region]))), 4),
    }


def run(first: int, patients: int, size: int, findings: tuple[Finding, ...],
        transform: DisplayTransform | None) -> list[dict]:
    world = World(load_chest_ct())
    rows = []
    for index in range(patients):
        seed = first + index
        acquisition = draw_acquisition(seed, ViewPosition.PA, size)
        for finding in findings:
            lesion = lesion_of(finding, index, seed)
            rendering = world.render(acquisition, lesion)
            counterfactual, factual = rendering.counterfactual, rendering.factual[Severity.MODERATE]
            true_mask = rendering.lesion_masks[Severity.MODERATE] > 0
            weight = np.abs(factual - counterfactual) * true_mask
            centre = ndimage.center_of_mass(weight if weight.sum() > 0 else true_mask)
            spec = EditSpec(finding.value, "add", lesion.side and lesion.side.value,
                            zone=lesion.zone and lesion.zone.value, severity="moderate", method="insert")
            row = {"seed": seed, "finding": finding.value, "side": lesion.side and lesion.side.value,
                   "zone": lesion.zone and lesion.zone.value}
            started = time.perf_counter()
            try:
                done = insert_lesion(counterfactual, world_masks(rendering.anatomy), spec, centre=centre,
                                     facts=FilmFacts(transform, rendering.pixel_mm))
            except InputError as error:
                rows.append({**row, "refused": str(error)})
                print(f"{seed} {finding.value:17s} refused: {error}", flush=True)
                continue
            region = done.lesion.extent | ndimage.binary_dilation(true_mask, iterations=3)
            row.update(measure(counterfactual, factual, done.image, region))
            row.update({"seconds": round(time.perf_counter() - started, 2),
                        "slope": round(done.mapping["slope"], 4), "r2": round(done.mapping["r2"], 3),
                        "residual": round(done.mapping["residual"], 4), "scatter": done.mapping["scatter"],
                        "tone": done.mapping["tone"]})
            rows.append(row)
            print(f"{seed} {finding.value:17s} ratio {row['mean_ratio']!s:>6} rms {row['rms_error']:.3f} "
                  f"sat {row['saturated']:.4f} peak {row['peak_change']:.2f}/{row['peak_true']:.2f} "
                  f"r2 {row['r2']:.2f} resid {row['residual']:.3f}", flush=True)
    return rows


def summary(rows: list[dict]) -> dict:
    """Per finding: median mean ratio, median RMS error, worst saturated share, refusals, and
    the cases whose inserted film held non-finite pixels (counted apart, not in the medians)."""
    out = {}
    for finding in dict.fromkeys(r["finding"] for r in rows):
        done = [r for r in rows if r["finding"] == finding and "refused" not in r]
        finite = [r for r in done if r["mean_ratio"] is not None and np.isfinite(r["mean_ratio"])]
        ratios = [r["mean_ratio"] for r in finite]
        out[finding] = {
            "n": len(done), "refused": sum("refused" in r for r in rows if r["finding"] == finding),
            "non_finite_cases": len(done) - len(finite),
            "mean_ratio_median": round(float(np.median(ratios)), 3) if ratios else None,
            "mean_ratio_range": [round(min(ratios), 3), round(max(ratios), 3)] if ratios else None,
            "rms_error_median": round(float(np.median([r["rms_error"] for r in finite])), 3) if finite else None,
            "saturated_max": round(max((r["saturated"] for r in done), default=0.0), 4),
        }
    return out


def print_table(title: str, table: dict) -> None:
    print(f"\n{title}\n{'finding':17s} {'n':>2} {'ratio (median, range)':>26} {'rms err':>8} {'sat max':>8}")
    for finding, s in table.items():
        spread = f"{s['mean_ratio_median']} [{s['mean_ratio_range'][0]}, {s['mean_ratio_range'][1]}]" \
            if s["mean_ratio_range"] else "-"
        nan = f"  ({s['non_finite_cases']} with NaN pixels)" if s.get("non_finite_cases") else ""
        print(f"{finding:17s} {s['n']:>2} {spread:>26} {s['rms_error_median']!s:>8} {s['saturated_max']:>8}{nan}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--range", choices=sorted(RANGES), default="tuning")
    parser.add_argument("--patients", type=int, default=4)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--findings", nargs="*", default=[f.value for f in Finding])
    parser.add_argument("--voi", choices=("window", "unknown"), default="window")
    parser.add_argument("--label", default="current", help="the key this run is stored under in --json")
    parser.add_argument("--json", type=Path, default=None, help="results file to add this run to")
    args = parser.parse_args()
    first = RANGES[args.range]
    rows = run(first, args.patients, args.size, tuple(Finding(f) for f in args.findings),
               WINDOW if args.voi == "window" else None)
    table = summary(rows)
    print_table(f"{args.label}: {args.range} seeds {first}..{first + args.patients - 1}, {args.size} px, "
                f"VOI {args.voi}", table)
    if args.json:
        results = json.loads(args.json.read_text()) if args.json.exists() else {}
        results.setdefault("runs", {})[f"{args.label}/{args.range}/{args.voi}"] = {
            "voi": args.voi, "seeds": [first, first + args.patients - 1], "size": args.size, "summary": table, "cases": rows}
        for run_ in results["runs"].values():  # every run summarised by the same rule
            run_["summary"] = summary(run_["cases"])
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
