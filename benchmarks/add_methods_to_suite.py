"""Add methods to a kept counterfactual suite without re-making the others' edits.

An n = 10 suite's edits take about 45 min on two CPU cores; when only one method is new (a
new default, ``auto``), its edits are made on the same patients (the renders are
deterministic in their seeds) and scored together with the kept films of every other
method, by the same judge, into one table. Before anything is merged, ``--verify`` methods
already in the kept run are re-made on the first cases and must equal the kept films bit for
bit (the code that made them has not drifted).

    python benchmarks/add_methods_to_suite.py --films runs/films-n10 --methods auto \\
        --out docs/results/counterfactual-n10 --keep-films runs/films-n10-auto
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

TOLERANCE = 1e-4  # float rounding (thread count, kernel order): 1e-6 seen; a drifted method differs by far more


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--films", type=Path, required=True, help="a folder kept by medcf bench --keep-films")
    parser.add_argument("--methods", nargs="+", required=True, help="methods to add (e.g. auto)")
    parser.add_argument("--verify", nargs="*", default=["steer"],
                        help="kept methods re-made on the first --verify-cases cases, which must match exactly")
    parser.add_argument("--verify-cases", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True, help="new folder for results.json/.md, examples.png")
    parser.add_argument("--keep-films", type=Path, default=None, help="also keep the merged films here")
    parser.add_argument("--replace", action="store_true",
                        help="re-make methods the kept run already has (a re-chosen auto) and score the new films "
                             "in their place")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import torch

    from medcf.editing.api import load_editor
    from medcf.eval.bench import (SuiteFilms, bundle_judge, load_suite_films, make_suite_edits, save_suite_films,
                                  score_suite)
    from medcf.vocab import Finding
    from medcf.world.ct import load_chest_ct

    torch.set_num_threads(args.threads)
    kept = load_suite_films(args.films)
    settings = kept.settings
    clash = sorted(set(args.methods) & set(kept.methods))
    if clash and not args.replace:
        raise SystemExit(f"{args.films} already has {', '.join(clash)} (--replace re-makes them)")
    editor, ct = load_editor(), load_chest_ct()
    findings = tuple(Finding(f) for f in settings["findings"])
    position = {(c.finding, c.action, c.seed): c for c in kept.cases}
    if args.verify:
        probe = make_suite_edits(1, args.verify, findings[:1], settings["size"], settings["first_seed"], editor, ct,
                                 progress=False)
        for (finding, action, method), items in probe.outputs.items():
            for case, image, _ in items[: args.verify_cases]:
                old = next(img for c, img, _ in kept.outputs[(finding, action, method)] if c.seed == case.seed)
                if not np.allclose(old, image, rtol=0, atol=TOLERANCE):
                    raise SystemExit(f"{method} {finding.value} {action.value} seed {case.seed}: re-made film differs "
                                     "from the kept one (max |Δ| "
                                     f"{float(np.abs(old - image).max()):.3g}); re-run the whole suite instead")
        print(f"verified: {', '.join(args.verify)} re-made equal to the kept films (within {TOLERANCE:g})", flush=True)
    new = make_suite_edits(settings["n"], args.methods, findings, settings["size"], settings["first_seed"], editor,
                           ct, progress=True)
    outputs = dict(kept.outputs)
    for key, items in new.outputs.items():  # the kept cases stand for the re-rendered ones (same seeds)
        outputs[key] = [(position[(c.finding, c.action, c.seed)], image, measures) for c, image, measures in items]
    methods = [m for m in kept.methods if m not in args.methods] + list(args.methods)
    merged = SuiteFilms(kept.cases, outputs, kept.drawn, tuple(methods),
                        {**settings, "methods": methods,
                         "added": {"methods": list(args.methods), "replaced": clash, "ours": new.settings["ours"]}})
    if args.keep_films:
        save_suite_films(merged, args.keep_films)
    result = score_suite(merged, bundle_judge(), args.out)
    print(f"wrote {result['out']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
