"""How hard should MedCF push? Flip rate against fidelity for ``steer`` over edit depth and
strength, on the editor's tuning patients (seeds from 1 100 000 — never the benchmark's
1 400 000), with the benchmark's own judge and measures.

Prints one line per setting (means over findings, add and remove) and writes every run's
results under --out. Used to choose the settings documented in docs/bench.md; the judge is
not touched (its thresholds come from held-out renders only).

    python benchmarks/sweep_edit_strength.py --out build/sweep --n 2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from medcf.eval.bench import TUNING_SEED  # the editor's tuning patients

SETTINGS = ((0.5, 1.0), (0.5, 2.0), (0.75, 1.0), (0.75, 2.0), (1.0, 2.0), (1.0, 3.0))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="new folder for the runs")
    parser.add_argument("--n", type=int, default=2, help="tuning patients per finding (default 2)")
    parser.add_argument("--methods", nargs="+", default=["steer"], help="MedCF methods (default steer)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import torch

    from medcf.editing.api import load_editor
    from medcf.eval.bench import run_counterfactual_suite
    from medcf.world.ct import load_chest_ct

    torch.set_num_threads(args.threads)
    editor, ct = load_editor(), load_chest_ct()
    print(f"{'depth':>5} {'strength':>8} {'method':16} {'action':6} {'flip':>5} {'floor':>5} {'fid.PSNR':>8} "
          f"{'fid.SSIM':>8} {'lungDice':>8}")
    for depth, strength in SETTINGS:
        result = run_counterfactual_suite(args.n, args.out / f"depth{depth:g}-strength{strength:g}",
                                          methods=args.methods, first_seed=TUNING_SEED, editor=editor, ct=ct,
                                          progress=False, ours={"depth": depth, "strength": strength})
        for method in args.methods:
            for action in ("add", "remove"):
                rows = [r for r in result["rows"] if r["method"] == method and r["action"] == action]
                mean = {k: float(np.mean([r[k] for r in rows])) for k in
                        ("flip_rate", "flip_rate_unedited", "fidelity_psnr", "fidelity_ssim", "dice_lungs")}
                print(f"{depth:5g} {strength:8g} {method:16} {action:6} {mean['flip_rate']:5.2f} "
                      f"{mean['flip_rate_unedited']:5.2f} {mean['fidelity_psnr']:8.2f} {mean['fidelity_ssim']:8.4f} "
                      f"{mean['dice_lungs']:8.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
