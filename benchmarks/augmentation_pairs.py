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

``--model-check`` also asks whether the model's own check (:mod:`medcf.editing.evidence`, the
editor's in-loop check; never the judge) could pick the pairs whose labels hold, so that a
pair generator might re-draw the others: a pair *passes* when the check finds its factual
film in the source state and its counterfactual at the target (the editor's
``target_reached`` rule, factual as input), in the pair's edit region (re-built from the
factual film as the generator built it). Per arm and finding it prints the share of pairs
that pass and the judge's label agreement among pairs that pass and among those that do
not; only findings the check separates on tuning patients (``evidence.json``) are marked
reliable.

    python benchmarks/augmentation_pairs.py runs/aug-seeds5-9 [--out table.md] [--model-check]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

CHANGE_LEVEL = 0.02  # a grey-level move a reader can see on a windowed film


def arm_pairs(path: Path) -> tuple:
    """Factual films, counterfactual films (both ``(P, H, W)`` in [0, 1]) and the records."""
    from medcf.training.world_sets import load_world_set

    world_set = load_world_set(path)
    films = world_set.images.astype("float32") / 65535.0
    return films[0::2], films[1::2], world_set.records


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="an augmentation run's --out folder (it keeps data/generated-*.npz)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here (a new file)")
    parser.add_argument("--model-check", action="store_true",
                        help="also: would the model's own check (not the judge) keep the pairs whose labels hold?")
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
    plans = plan_pair_specs(settings["generated"], Method(settings["methods"][0]))
    specs = [spec for spec, _ in plans]
    judge = bundle_judge()
    lines = [f"# Generated pairs of {args.run.name}: labels the judge agrees with, and how much each pair changes", "",
             f"{len(specs)} pairs per arm, the same factual films in every arm. The judge is the benchmark's "
             "(docs/judge.md); simulated films, research only.", "",
             "Per finding: the share of add / remove pairs whose label the judge agrees with.", "",
             "| arm | label agrees (all) | add | remove | changed (median share of film) | "
             + " | ".join(f.value for f in Finding) + " |", "|" + "---|" * (5 + len(Finding))]
    factual_agrees = None
    checked = []
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
        if args.model_check:
            checked.append((arm, counterfactual, agrees))
    lines += ["", f"Factual films in their labelled state by the same judge: {factual_agrees:.2f}."]
    if checked:
        lines += model_check_lines(factual, checked, plans)
    text = "\n".join(lines) + "\n"
    if args.out is not None:
        write_new_text(args.out, text)
    print(text, end="")
    return 0


def model_check_lines(factual, checked: list[tuple], plans: list) -> list[str]:
    """The ``--model-check`` table: per arm and finding, pairs the model's check passes and the
    judge's label agreement among those it passes and those it does not. ``factual``: the
    films every arm shares; ``checked``: ``(arm, counterfactual films, judge agrees)``."""
    import numpy as np
    import torch

    from medcf.anatomy.segment import segment
    from medcf.editing.api import load_editor
    from medcf.editing.edit import in_target_state, target_reached
    from medcf.editing.film import edit_prompts
    from medcf.editing.evidence import evidence_score, find_reliability
    from medcf.editing.regions import EditRegion
    from medcf.vocab import Action, Finding

    specs = [spec for spec, _ in plans]
    editor = load_editor()
    generator = editor.generator
    reliability = find_reliability(generator)
    lines = ["", "Would the model's own check keep the pairs whose labels hold? (pass: factual in the source "
             "state and counterfactual at the target by the check; agreement is the judge's)", "",
             "| arm | finding | check reliable | pairs | pass | judge agrees, passed | judge agrees, not passed |",
             "|---|---|---|---|---|---|---|"]
    with torch.no_grad():
        checks = []
        for (spec, view), film in zip(plans, factual):
            prompts = edit_prompts(spec, view, generator.convention)
            region = EditRegion.build(segment(film, editor.segmenter), spec, tuple(film.shape), placed_by_model=True)
            normal = prompts["source"] if spec.action is Action.ADD else prompts["target"]
            texts = (generator.encode_text([normal]), generator.encode_text([prompts["finding"]]))
            latents = generator.encode_images(film)
            mask = region.latent_mask(tuple(latents.shape[-2:]))[None, None]
            checks.append((texts, mask, evidence_score(generator, latents, *texts, mask)))
        for arm, counterfactual, agrees in checked:
            passed = []
            for spec, film, (texts, mask, before) in zip(specs, counterfactual, checks):
                after = evidence_score(generator, generator.encode_images(film), *texts, mask)
                passed.append(not in_target_state(spec.action, before) and target_reached(spec.action, before, after))
            passed = np.array(passed)
            for finding in [None, *Finding]:
                mine = np.array([finding is None or s.finding is finding for s in specs])
                reliable = "–" if finding is None else ("yes" if reliability and reliability.reliable(finding) else "no")
                lines.append(f"| {arm} | {finding.value if finding else 'all'} | {reliable} | {mine.sum()} | "
                             f"{passed[mine].mean():.2f} | {_share(agrees, mine & passed)} | "
                             f"{_share(agrees, mine & ~passed)} |")
    return lines


def _share(agrees, keep) -> str:
    """The judge's agreement among ``keep`` pairs, with their count."""
    return f"{agrees[keep].mean():.2f} ({keep.sum()})" if keep.any() else "–"


if __name__ == "__main__":
    sys.exit(main())
