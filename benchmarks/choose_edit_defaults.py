"""Choose ``--method auto``'s setting per finding and action from a sweep on the editor's
tuning patients, and write ``edit_defaults.json`` beside the model's weights.

Rule (no per-case tuning): per (finding, action), the (method, depth, guidance) with the
highest flip rate by the benchmark's judge; ties go to the higher fidelity PSNR against the
true counterfactual. Only runs on the tuning patients count (seeds from 1 100 000): the
benchmark's held-out patients never take part in the choice.

    python benchmarks/sweep_edit_strength.py --out runs/sweep --n 3 --methods steer regulated \\
        regulated+steer --grid guidance=4 guidance=8 ...
    python benchmarks/choose_edit_defaults.py runs/sweep --write monai_bundle/models/edit_defaults.json

``--supersede NEWER``: a later sweep (for example one scored by a re-calibrated judge)
decides every (finding, action) cell it holds, from its own rows alone; the other cells
come from the first folder. A cell's candidates are thus always scored by one judge.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

RULE = ("per (finding, action): the highest flip rate by the benchmark's judge on the editor's tuning patients; "
        "ties to the higher fidelity PSNR against the true counterfactual")


# settings a Choice does not carry: a run that changed them cannot be reproduced by ``--method auto``
CHOICE_FIXED = {"strength": 1.0, "energy": False, "passes": 1}


def candidates(sweep: Path) -> list[dict]:
    """Every (setting, method) row of every run under ``sweep``, with its settings."""
    from medcf.editing.spec import GENERIC_DEPTH
    from medcf.eval.bench import OURS, TUNING_SEED

    rows = []
    for path in sorted(sweep.glob("*/results.json")) + sorted(sweep.glob("*/*/results.json")):
        result = json.loads(path.read_text())
        settings = result["settings"]
        if settings["first_seed"] != TUNING_SEED:
            raise SystemExit(f"{path}: patients from seed {settings['first_seed']}, not the tuning patients")
        ours = settings["ours"]
        if {k: ours.get(k, v) for k, v in CHOICE_FIXED.items()} != CHOICE_FIXED:
            print(f"skipped {path.parent.name}: a choice holds method, depth and guidance only, and this run "
                  f"set {({k: ours.get(k) for k in CHOICE_FIXED})}", file=sys.stderr)
            continue
        for row in result["rows"]:
            if row["method"] in OURS:
                rows.append({**row, "n": row["n"], "depth": ours.get("depth") or GENERIC_DEPTH,
                             "guidance": ours.get("guidance"),
                             "run": str(path.parent.relative_to(sweep.parent))})
    return rows


def superseded(rows: list[dict], newer: list[dict]) -> list[dict]:
    """``rows`` without the (finding, action) cells that ``newer`` holds, plus ``newer``."""
    cells = {(r["concept"], r["action"]) for r in newer}
    return [r for r in rows if (r["concept"], r["action"]) not in cells] + newer


def choose(rows: list[dict]) -> dict[str, dict[str, dict]]:
    best: dict[tuple, dict] = {}
    for row in rows:
        key = (row["concept"], row["action"])
        score = (round(row["flip_rate"], 6), row["fidelity_psnr"])
        if key not in best or score > best[key][0]:
            best[key] = (score, row)
    choices: dict[str, dict[str, dict]] = {}
    for (finding, action), (_, row) in sorted(best.items()):
        choices.setdefault(finding, {})[action] = {
            "method": row["method"], "depth": row["depth"], "guidance": row["guidance"],
            "flip_rate": round(row["flip_rate"], 4), "fidelity_psnr": round(row["fidelity_psnr"], 3)}
    return choices


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", type=Path, help="the --out folder of benchmarks/sweep_edit_strength.py")
    parser.add_argument("--model", type=Path, default=None, help="the model the sweep ran on (default: the bundle's)")
    parser.add_argument("--supersede", type=Path, default=None, metavar="NEWER",
                        help="a later sweep folder that alone decides every (finding, action) cell it holds")
    parser.add_argument("--write", type=Path, default=None, help="write edit_defaults.json here (a new file)")
    args = parser.parse_args(argv)

    from medcf.editing.defaults import Choice, EditDefaults
    from medcf.editing.steering import denoiser_fingerprint
    from medcf.eval.bench import TUNING_SEED
    from medcf.models.loaders import load_generator

    rows = candidates(args.sweep)
    if not rows:
        raise SystemExit(f"{args.sweep}: no */results.json of MedCF methods")
    if args.supersede is not None:
        newer = candidates(args.supersede)
        if not newer:
            raise SystemExit(f"{args.supersede}: no */results.json of MedCF methods")
        rows = superseded(rows, newer)
    choices = choose(rows)
    for finding, actions in choices.items():
        for action, c in actions.items():
            print(f"{finding:17} {action:6} {c['method']:16} depth {c['depth']:<4g} guidance "
                  f"{c['guidance'] if c['guidance'] is not None else 'model':<5} flip {c['flip_rate']:.2f} "
                  f"fidelity {c['fidelity_psnr']:.2f} dB")
    if args.write:
        from medcf.bundle import bundle_path

        generator = load_generator(args.model or bundle_path())
        runs = sorted({r["run"] for r in rows})
        defaults = EditDefaults({f: {a: Choice(**c) for a, c in actions.items()} for f, actions in choices.items()},
                                RULE, {"runs": runs, "methods": sorted({r["method"] for r in rows}),
                                       "patients_per_finding": rows[0]["n"], "patients_seed": TUNING_SEED,
                                       "script": "benchmarks/sweep_edit_strength.py + choose_edit_defaults.py"},
                                denoiser_fingerprint(generator))
        print(f"wrote {defaults.save(args.write)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
