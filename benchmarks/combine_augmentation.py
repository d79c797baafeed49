"""Pool the classifier seeds of several augmentation-suite runs into one table.

A full augmentation run takes about two hours on two cores, most of it generating the pairs
and training one classifier per arm and seed. To tell two arms apart whose difference is
near the spread between seeds, a later session adds seeds (``medcf bench --suite
augmentation --repeats K --classifier-first-seed S``) and pools them with the committed run
here: the settings that define the data and the classifier must agree, the recorded data
digests must match and the seeds must not overlap (``medcf.eval.augment.combine_runs``).
Runs made on another machine have other digests (the same sets, other last bits);
``--across-machines`` pools them when each run trained every arm for each of its seeds.
Beside the usual table it prints each seed's macro AUC per arm and the paired difference
between two arms per seed (the classifiers of one seed share their initialisation and
batches, so the paired difference is the sharper comparison). Given one run, it prints that
run's tables (a run that took earlier runs' classifiers with ``--reuse-classifiers`` holds
every seed of every arm already).

    python benchmarks/combine_augmentation.py docs/results/augmentation-auto docs/results/augmentation-auto-seeds2-4 \\
        docs/results/augmentation-auto-seeds5-9 --out DIR --compare +medcf/auto +reprompt
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def paired_lines(summary: dict, seeds: list[int], first: str, second: str) -> list[str]:
    """Per seed, ``first - second`` in macro AUC, and their mean, spread and count of wins."""
    import numpy as np

    for arm in (first, second):
        if arm not in summary:
            raise SystemExit(f"--compare: no arm {arm!r} (the runs hold {', '.join(summary)})")
    diffs = np.array(summary[first]["macro_per_repeat"]) - np.array(summary[second]["macro_per_repeat"])
    lines = [f"Paired by classifier seed, {first} minus {second} (macro AUC):", "",
             "| seed | " + " | ".join(str(s) for s in seeds) + " | mean | sd |",
             "|" + "---|" * (len(seeds) + 3),
             "| difference | " + " | ".join(f"{d:+.3f}" for d in diffs)
             + f" | {diffs.mean():+.3f} | {diffs.std(ddof=1) if len(diffs) > 1 else float('nan'):.3f} |", "",
             f"{first} ahead on {int((diffs > 0).sum())} of {len(diffs)} seeds; "
             f"standard error of the mean difference {diffs.std(ddof=1) / np.sqrt(len(diffs)):.3f}."
             if len(diffs) > 1 else ""]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs="+",
                        help="--out folders of augmentation runs (each holds results.json); one run is shown as it is")
    parser.add_argument("--out", type=Path, required=True, help="a new folder for the pooled results.json and results.md")
    parser.add_argument("--across-machines", action="store_true",
                        help="pool runs made on different machines (their data digests differ in the last bits); "
                             "every run must have trained every arm for each of its seeds, so each seed's "
                             "paired difference stays on one machine's data")
    parser.add_argument("--compare", nargs=2, metavar=("ARM", "OTHER"), default=None,
                        help="also print ARM minus OTHER per classifier seed (e.g. +medcf/auto +reprompt)")
    args = parser.parse_args(argv)

    from medcf.errors import InputError
    from medcf.eval.augment import augmentation_table, combine_runs
    from medcf.io.atomic import new_output_dir, write_new_text

    results = []
    for run in args.runs:
        path = run / "results.json"
        if not path.is_file():
            raise SystemExit(f"{run}: no results.json (not an augmentation run's --out folder)")
        results.append(json.loads(path.read_text()))
    if len(results) == 1:  # one run (one that took the other arms' classifiers, say): its tables as they are
        pooled = results[0]
        settings = pooled["settings"]
    else:
        try:
            pooled = combine_runs(results, across_machines=args.across_machines)
        except InputError as error:
            raise SystemExit(f"cannot pool these runs: {error}")
        settings = {**pooled["settings"], "combined_from": [{"run": str(run), **entry} for run, entry in
                                                            zip(args.runs, pooled["settings"]["combined_from"])]}
    seeds = sorted({row["repeat"] for row in pooled["rows"]})
    table = augmentation_table(pooled["summary"], settings)
    per_seed = ["", "Macro AUC per classifier seed:", "", "| arm | " + " | ".join(str(s) for s in seeds) + " |",
                "|" + "---|" * (len(seeds) + 1)]
    per_seed += [f"| {arm} | " + " | ".join(f"{m:.3f}" for m in entry["macro_per_repeat"]) + " |"
                 for arm, entry in pooled["summary"].items()]
    if args.across_machines and len(results) > 1:
        per_seed += ["", "Machines: " + "; ".join(
            f"seeds {', '.join(map(str, entry['classifier_seeds']))} on {entry.get('machine', 'a machine not recorded')}"
            for entry in settings["combined_from"]) + "."]
    if args.compare:
        per_seed += ["", *paired_lines(pooled["summary"], seeds, *args.compare)]
    text = table + "\n".join(per_seed) + "\n"
    out = new_output_dir(args.out)
    write_new_text(out / "results.json", json.dumps({**pooled, "settings": settings}, indent=1) + "\n")
    write_new_text(out / "results.md", text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
