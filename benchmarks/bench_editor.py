"""Editor: quality on the simulated world (held-out seeds) and speed ratios, in one run.

Quality (issue 6; [bench] will make it formal with a judge classifier): for each finding,
held-out patients are rendered with and without the finding from the same CT, pose and
anatomy. ``add`` edits the film without it, ``remove`` the film with it, and the true
counterfactual is the other rendering. Per edit:

- ``outside_max``: largest |output - input| outside the edit region (0 by construction);
- ``ssim_out``: SSIM of output vs input averaged outside the region;
- ``dice_lungs`` / ``dice_heart``: masks segmented on input vs output;
- ``toward_truth``: 1 - |out - truth|² / |in - truth|² inside the region (0 = no progress,
  1 = the true counterfactual, < 0 = further away);
- ``fidelity_psnr``: PSNR of output vs the true counterfactual, with ``input_psnr`` (input vs
  truth, the do-nothing baseline) beside it.

Speed (ratios measured interleaved in one run, same seed, default model, 25 steps):
steered vs unsteered sampling, regulation vs plain, regulation + energy vs plain; and the
whole ``medcf edit`` on a 2800 x 2300 DICOM (wall time and peak RSS of the process).

Usage: python benchmarks/bench_editor.py [--patients 3] [--methods regulated steer regulated+steer]
       [--speed-only | --quality-only] [--out build/bench-editor]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from medcf.metrics import dice
from medcf.eval.bench import TUNING_SEED, psnr_capped, ssim_mean

# Held out from every training set (generator 0..2399, segmenter 100000.., 9x0000..). Defaults
# were chosen on TUNING_SEED; the figures in docs/editing.md are on BENCH_SEED, seen by nothing else.
BENCH_SEED = 1_200_000


def quality(patients: int, methods: list[str], size: int, out: Path | None, depth: float = 0.5,
            strength: float = 1.0, first_seed: int = BENCH_SEED) -> list[dict]:
    from medcf.anatomy.segment import segment
    from medcf.editing.api import load_editor
    from medcf.editing.edit import edit
    from medcf.editing.spec import EditSpec
    from medcf.eval.bench import render_cases
    from medcf.viz import Tile, difference, render_grid, save_png
    from medcf.vocab import Finding, Organ, Side

    editor = load_editor()
    rows, tiles, seen = [], [], set()
    for case in render_cases(tuple(Finding), patients, size, first_seed, editor.segmenter):
        source, truth = case.source, case.truth
        first = (case.finding, case.action) not in seen
        seen.add((case.finding, case.action))
        if first:
            tiles += [Tile(source, f"{case.action.value} {case.finding.value}\ninput"),
                      Tile(truth, "true counterfactual"), Tile(difference(truth, source, 4.0), "true change x4")]
        for method in methods:
            spec = EditSpec(case.finding, case.action, case.side, case.zone, case.severity, method, seed=case.seed,
                            depth=depth, strength=strength)
            tick = time.perf_counter()
            cf = edit(source, case.masks, spec, editor.generator, editor.vectors, case.view, progress=False)
            seconds = time.perf_counter() - tick
            masks_out = segment(cf.image, editor.segmenter, min_confidence=0.0)
            region = cf.region.native_region
            before = float(np.sum((source - truth)[region] ** 2))
            after = float(np.sum((cf.image - truth)[region] ** 2))
            rows.append({
                "finding": case.finding.value, "action": case.action.value, "method": method, "seed": case.seed,
                "view": case.view.value, "severity": case.severity.value,
                "outside_max": float(np.abs(cf.image - source)[~region].max()),
                "ssim_out": ssim_mean(source, cf.image, ~region),
                "dice_lungs": dice(case.masks.lung(Side.BILATERAL), masks_out.lung(Side.BILATERAL)),
                "dice_heart": dice(case.masks.organs[Organ.HEART], masks_out.organs[Organ.HEART]),
                "toward_truth": 1 - after / before if before > 0 else 0.0,
                "fidelity_psnr": psnr_capped(cf.image, truth), "input_psnr": psnr_capped(source, truth),
                "psnr_gain": psnr_capped(cf.image, truth) - psnr_capped(source, truth),
                "seconds": seconds,
            })
            if first:
                tiles.append(Tile(difference(cf.image, source, 4.0), f"{method}: change x4"))
    if out is not None and tiles:
        out.mkdir(parents=True, exist_ok=True)
        (out / "quality.png").unlink(missing_ok=True)
        save_png(render_grid(tiles, "MedCF editor on held-out simulated films: input, truth, true change, "
                             "each method's change (first patient per finding)", tile_size=160,
                             columns=3 + len(methods)), out / "quality.png")
        (out / "quality.json").write_text(json.dumps(rows, indent=1))
    return rows


def summarize(rows: list[dict], overall_only: bool = False) -> None:
    """Means per (method, action, finding); ``outside_max`` is the largest, ``toward_truth``
    the median (a finding the input barely shows makes its ratio explode either way)."""
    keys = ("outside_max", "ssim_out", "dice_lungs", "dice_heart", "toward_truth", "psnr_gain", "fidelity_psnr",
            "input_psnr", "seconds")
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if not overall_only:
            groups.setdefault((row["method"], row["action"], row["finding"]), []).append(row)
        groups.setdefault((row["method"], row["action"], "ALL"), []).append(row)
    print("| method | action | finding | n | " + " | ".join(keys) + " |")
    print("|---" * (4 + len(keys)) + "|")
    for (method, action, finding), members in sorted(groups.items()):
        values = [statistics.mean(m[k] for m in members) for k in keys]
        values[0] = max(m["outside_max"] for m in members)
        values[4] = statistics.median(m["toward_truth"] for m in members)
        print(f"| {method} | {action} | {finding} | {len(members)} | " + " | ".join(f"{v:.4g}" for v in values) + " |")


def _time(fn, repeats: int) -> float:
    best = []
    for _ in range(repeats):
        tick = time.perf_counter()
        fn()
        best.append(time.perf_counter() - tick)
    return statistics.median(best)


def speed(repeats: int) -> None:
    from medcf.editing.api import load_editor
    from medcf.editing.control import AttentionController
    from medcf.editing.energy import ConcentrationEnergy
    from medcf.editing.regions import EditRegion
    from medcf.editing.regulation import PATHOLOGY_WORDS, AnatomyRegulation, PathologyEnhancement, word_tokens
    from medcf.editing.spec import EditSpec
    from medcf.editing.steering import Steering
    from medcf.anatomy.segment import segment
    from medcf.models.sampling import sample
    from medcf.text.prompts import prompt
    from medcf.vocab import Action, Finding, Side, ViewPosition

    editor = load_editor()
    g = editor.generator
    text = prompt(ViewPosition.PA, Finding.PLEURAL_EFFUSION, Side.LEFT)
    base = sample(g, [prompt(ViewPosition.PA)], seed=3, progress=False)
    masks = segment(base.images[0], editor.segmenter)
    spec = EditSpec(Finding.PLEURAL_EFFUSION, Action.ADD, Side.LEFT)
    region = EditRegion.build(masks, spec, g.image_size)
    encoded = g.encode_text([text])
    tokens = word_tokens(encoded, PATHOLOGY_WORDS[Finding.PLEURAL_EFFUSION])

    def run(methods):
        def go():
            if not methods:
                return sample(g, [text], seed=5, progress=False, decode=False)
            with AttentionController(g, methods(), steps=25) as controller:
                return sample(g, [text], seed=5, progress=False, decode=False, observer=controller)
        return go

    vectors = editor.vectors.for_finding(Finding.PLEURAL_EFFUSION)
    variants = {
        "plain": run(None),
        "controller, no method": run(lambda: []),
        "steering (anatomy-gated)": run(lambda: [Steering(vectors, editor.vectors.timesteps, Action.ADD, region=region)]),
        "regulation (no energy)": run(lambda: [AnatomyRegulation(region, encoded), PathologyEnhancement(region, tokens)]),
        "regulation + energy": run(lambda: [AnatomyRegulation(region, encoded), PathologyEnhancement(region, tokens),
                                            ConcentrationEnergy(g, encoded, region=region, tokens=tokens)]),
    }
    for fn in variants.values():
        fn()  # warm up
    times = {name: [] for name in variants}
    for _ in range(repeats):  # interleaved, so that load changes hit every variant alike
        for name, fn in variants.items():
            times[name].append(_time(fn, 1))
    plain = statistics.median(times["plain"])
    print(f"\nsampling speed, 25 steps, guided, {torch.get_num_threads()} thread(s), median of {repeats}:")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:28s} {median:6.3f} s   ratio {median / plain:.3f}")


def end_to_end(method: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_anatomy import full_size_dicom  # the sample study's PA film on a 2800 x 2300 detector

    with tempfile.TemporaryDirectory() as tmp:
        frontal = full_size_dicom(Path(tmp))
        script = ("import resource,sys,time; from medcf.cli import main; t=time.perf_counter(); "
                  f"rc=main(['edit','{frontal}','--finding','pleural_effusion','--action','add','--side','left',"
                  f"'--method','{method}','--quiet','--out','{tmp}/out']); "
                  "print('SECONDS', time.perf_counter()-t, 'RSS_MB', "
                  "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024); sys.exit(rc)")
        tick = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
        wall = time.perf_counter() - tick
        line = [ln for ln in done.stdout.splitlines() if ln.startswith("SECONDS")]
        print(f"\nmedcf edit, 2800x2300 DICOM, {method}: process wall {wall:.2f} s (incl. interpreter start), "
              f"{line[0] if line else done.stderr[-300:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=3, help="held-out patients per finding (default 3)")
    parser.add_argument("--size", type=int, default=256, help="rendered film size (default 256, the model's own)")
    parser.add_argument("--methods", nargs="+", default=["regulated", "steer", "regulated+steer"])
    parser.add_argument("--repeats", type=int, default=5, help="speed repeats (default 5)")
    parser.add_argument("--speed-only", action="store_true")
    parser.add_argument("--quality-only", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("build/bench-editor"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--depth", type=float, default=0.5, help="edit depth (default 0.5, as medcf edit)")
    parser.add_argument("--seed", type=int, default=BENCH_SEED,
                        help=f"first patient seed (default {BENCH_SEED}; defaults were tuned on {TUNING_SEED})")
    parser.add_argument("--strength", type=float, default=1.0, help="edit strength (default 1, as medcf edit)")
    parser.add_argument("--overall-only", action="store_true", help="one summary row per method and action")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.speed_only:
        summarize(quality(args.patients, args.methods, args.size, args.out, args.depth, args.strength, args.seed),
                  args.overall_only)
    if not args.quality_only:
        speed(args.repeats)
        for method in ("auto", "steer", "regulated+steer"):
            end_to_end(method)


if __name__ == "__main__":
    main()
