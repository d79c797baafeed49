"""How hard should MedCF push? Flip rate against fidelity for MedCF's methods over edit
settings (depth, strength, region guidance, …), on the editor's tuning patients (seeds
from 1 100 000 — never the benchmark's 1 400 000), with the benchmark's own judge and
measures.

Prints one line per (setting, method, action) with means over findings, and per finding
when asked, and writes every run's results under --out. Used to choose the settings
documented in docs/bench.md and docs/editing.md; the judge is not touched (its
thresholds come from held-out renders only).

    python benchmarks/sweep_edit_strength.py --out build/sweep --n 2
    python benchmarks/sweep_edit_strength.py --out build/sweep-g --n 3 --methods regulated steer \\
        --grid "guidance=4" "guidance=8" "guidance=12,depth=0.7" --per-finding
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from medcf.eval.bench import TUNING_SEED  # the editor's tuning patients

DEFAULT_GRID = ("depth=0.5,strength=1", "depth=0.5,strength=2", "depth=0.75,strength=1", "depth=0.75,strength=2",
                "depth=1,strength=2", "depth=1,strength=3")
COLUMNS = ("flip_rate", "flip_rate_unedited", "fidelity_psnr", "fidelity_ssim", "dice_lungs", "truth_gain")


def parse_setting(text: str) -> dict:
    """``"depth=0.7,guidance=8"`` → ``{"depth": 0.7, "guidance": 8.0}`` (passes as int)."""
    setting = {}
    for part in filter(None, text.split(",")):
        name, _, value = part.partition("=")
        if not value:
            raise SystemExit(f"--grid: '{part}' is not name=value")
        setting[name.strip()] = int(value) if name.strip() == "passes" else float(value)
    return setting


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="new folder for the runs")
    parser.add_argument("--n", type=int, default=2, help="tuning patients per finding (default 2)")
    parser.add_argument("--methods", nargs="+", default=["steer"], help="MedCF methods (default steer)")
    parser.add_argument("--grid", nargs="+", default=list(DEFAULT_GRID),
                        help="settings, each 'name=value,...' of EditSpec fields the suite may set "
                             "(depth, strength, energy, passes, guidance)")
    parser.add_argument("--findings", nargs="+", default=None, help="findings (default all)")
    parser.add_argument("--actions", nargs="+", choices=["add", "remove"], default=["add", "remove"],
                        help="actions to edit (default both)")
    parser.add_argument("--per-finding", action="store_true", help="also print one line per finding")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", type=Path, default=None,
                        help="model folder to sweep (default: the bundle's); the judge is always the bundle's")
    parser.add_argument("--keep-films", action="store_true",
                        help="also keep each run's films in OUT/NAME-films, so that a later judge can re-score "
                             "them (`medcf bench --films`) without editing again")
    args = parser.parse_args(argv)

    import torch

    from medcf.editing.api import load_editor
    from medcf.eval.bench import run_counterfactual_suite
    from medcf.vocab import Action, Finding
    from medcf.world.ct import load_chest_ct

    torch.set_num_threads(args.threads)
    findings = tuple(Finding.parse(f) for f in args.findings) if args.findings else tuple(Finding)
    editor, ct = load_editor(args.model), load_chest_ct()
    print(f"{'setting':28} {'method':16} {'action':6} {'concept':17} {'flip':>5} {'floor':>5} {'fid.PSNR':>8} "
          f"{'fid.SSIM':>8} {'lungDice':>8} {'gain':>6}", flush=True)
    for text in args.grid:
        setting = parse_setting(text)
        name = text.replace("=", "").replace(",", "-")
        result = run_counterfactual_suite(args.n, args.out / name, methods=args.methods, findings=findings,
                                          first_seed=TUNING_SEED, editor=editor, ct=ct, progress=False,
                                          ours=setting, actions=tuple(Action(a) for a in args.actions),
                                          keep_films=args.out / f"{name}-films" if args.keep_films else None)
        for method in args.methods:
            for action in args.actions:
                rows = [r for r in result["rows"] if r["method"] == method and r["action"] == action]
                groups = [("ALL", rows)] + ([(r["concept"], [r]) for r in rows] if args.per_finding else [])
                for concept, members in groups:
                    mean = {k: float(np.mean([r[k] for r in members])) for k in COLUMNS}
                    print(f"{text:28} {method:16} {action:6} {concept:17} {mean['flip_rate']:5.2f} "
                          f"{mean['flip_rate_unedited']:5.2f} {mean['fidelity_psnr']:8.2f} "
                          f"{mean['fidelity_ssim']:8.4f} {mean['dice_lungs']:8.4f} {mean['truth_gain']:6.2f}",
                          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
