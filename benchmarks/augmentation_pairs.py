"""What the augmentation suite's generated pairs hold: how often each arm's counterfactual is
in the state its prompt label claims, and how much of the film it changes.

Why: the suite's classifiers learn from the generated films *as labelled by their prompts*
(``medcf.eval.augment``). Two things can make one arm's pairs worth more than another's:
labels that are right more often (a counterfactual that really shows, or really lost, the
finding), and new material (a counterfactual that differs from its factual film over more of
the film gives the classifier more that it has not seen). This script measures both for every
arm of a run, from the films the run kept (``DIR/data/generated-*.npz``):

- ``label agrees``: the benchmark's judge (the bundle's, the instrument of every suite; never
  used to make the pairs) finds the counterfactual in its labelled state (add: the finding on
  the asked side; remove: the finding absent), the same rule as the counterfactual suite's
  flip rate. ``factual agrees`` is the same for the shared factual films (their labels are
  the source state). The judge's limits per finding (docs/judge.md) apply: for
  consolidation, nodule and pneumothorax its verdicts are weak.
- ``changed``: the share of the film's pixels whose value moved by more than 0.02 (films in
  [0, 1]) from the factual film to the counterfactual, median over pairs.

    python benchmarks/augmentation_pairs.py runs/aug-seeds5-9 [--out table.md]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

CHANGE_LEVEL = 0.02  # a grey-level move a reader can see on a windowed film


def arm_pairs(path: Path) -> tuple:
    """Factual films, counterfactual films (both ``(P, H, W)`` in [0, 1]) and the records."""
    from medcf.models.data import load_world_set

    world_set = load_world_set(path)
    films = world_set.images.astype("float32") / 65535.0
    return films[0::2], films[1::2], world_set.records


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="an augmentation run's --out folder (it keeps data/generated-*.npz)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here (a new file)")
    args = parser.parse_args(argv)

    import numpy as np

    from medcf.editing.spec import Method
    from medcf.eval.augment import arm_folder, plan_pair_specs
    from medcf.eval.bench import bundle_judge, in_target_state
    from medcf.io.atomic import write_new_text
    from medcf.vocab import Action, Finding

    path = args.run / "results.json"
    if not path.is_file():
        raise SystemExit(f"{args.run}: no results.json (not an augmentation run's --out folder)")
    settings = json.loads(path.read_text())["settings"]
    arms = [arm for arm in settings["arms"] if arm != "rendered"]
    missing = [arm for arm in arms if not (args.run / "data" / f"generated-{arm_folder(arm)}.npz").is_file()]
    if missing:
        raise SystemExit(f"{args.run}/data: no generated films of {', '.join(missing)} (the run kept no data?)")
    specs = [spec for spec, _ in plan_pair_specs(settings["generated"], Method(settings["methods"][0]))]
    judge = bundle_judge()
    lines = [f"# Generated pairs of {args.run.name}: labels the judge agrees with, and how much each pair changes", "",
             f"{len(specs)} pairs per arm, the same factual films in every arm. The judge is the benchmark's "
             "(docs/judge.md); simulated films, research only.", "",
             "Per finding: the share of add / remove pairs whose label the judge agrees with.", "",
             "| arm | label agrees (all) | add | remove | changed (median share of film) | "
             + " | ".join(f.value for f in Finding) + " |", "|" + "---|" * (5 + len(Finding))]
    factual_agrees = None
    for arm in arms:
        factual, counterfactual, records = arm_pairs(args.run / "data" / f"generated-{arm_folder(arm)}.npz")
        if len(factual) != len(specs):
            raise SystemExit(f"{arm}: {len(factual)} pairs, but the run's settings plan {len(specs)}")
        for index, (spec, record) in enumerate(zip(specs, records[1::2])):
            labelled = spec.finding.value if spec.action is Action.ADD else "none"
            if record["finding"] != labelled:
                raise SystemExit(f"{arm}: pair {index} is labelled {record['finding']}, its plan says {labelled}")
        agrees = np.array(in_target_state(judge, counterfactual, specs))
        if factual_agrees is None:  # the factual film is in the *source* state: the opposite verdict
            factual_agrees = 1.0 - np.array(in_target_state(judge, factual, specs)).mean()
        adding = np.array([s.action is Action.ADD for s in specs])
        changed = np.median((np.abs(counterfactual - factual) > CHANGE_LEVEL).mean(axis=(1, 2)))
        per_finding = [" / ".join(f"{agrees[[s.finding is f and s.action is a for s in specs]].mean():.2f}"
                                  for a in (Action.ADD, Action.REMOVE)) for f in Finding]
        lines.append(f"| {arm} | {agrees.mean():.2f} | {agrees[adding].mean():.2f} | {agrees[~adding].mean():.2f} | "
                     f"{changed:.3f} | " + " | ".join(per_finding) + " |")
    lines += ["", f"Factual films in their labelled state by the same judge: {factual_agrees:.2f}."]
    text = "\n".join(lines) + "\n"
    if args.out is not None:
        write_new_text(args.out, text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
