"""Does a pair from scratch's edit region cover the finding the model drew? A probe on the
editor's tuning seeds (from 1 100 000; never the augmentation suite's 1 600 000).

Why: a pair made from scratch (``medcf pairs``, the augmentation suite) prompts the factual
film without a zone, so the model puts the finding wherever its training world did (for
atelectasis the lower *or* middle zone, ``medcf.world.pathology.FINDING_ZONES``). Until
2026-12-02 the region of such a pair was the finding's default zone for a reader's edit
(``medcf.editing.spec.DEFAULT_ZONES``; atelectasis: lower): a removal re-drew a region the
finding was often not in, and the pair's label ("no atelectasis") was wrong. Pairs now
span every zone the finding can take and, for a removal, both sides, since the model does
not keep to the prompted side (``medcf.editing.regions.anatomy_source``,
``placed_by_model``); ``--reader-zone`` measures the first region, ``--asked-side`` the
second (every zone, the asked side only).

For ``--n`` pairs (sides alternating, moderate) this prints how often the benchmark's judge
finds each counterfactual in its labelled state: ``auto`` (the editor's default method,
region held outside) and ``reprompt`` (the whole film re-prompted from the same noise), and
the region's share of the film, and where the judge finds the finding in the factual films
(asked side, other side, absent). ``--whole-lung``: the region is the whole lung (every
zone); ``--reader-zone``: the region a reader's edit without a zone gets; ``--asked-side``:
a removal's region keeps to the asked side.

    python benchmarks/probe_pair_regions.py --finding atelectasis --action remove --n 8
    python benchmarks/probe_pair_regions.py --finding atelectasis --action remove --n 8 --reader-zone
    python benchmarks/probe_pair_regions.py --finding consolidation --action remove --n 12 --first-seed 3500000 --asked-side
"""

from __future__ import annotations

import argparse
import itertools
import sys

TUNING_PAIR_SEED = 1_100_000  # the editor's tuning range (docs/bench.md)


def main(argv=None) -> int:
    from medcf.vocab import Action, Finding

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--finding", type=Finding, choices=list(Finding), required=True)
    parser.add_argument("--action", type=Action, choices=list(Action), required=True)
    parser.add_argument("--n", type=int, default=8, help="pairs (default 8)")
    parser.add_argument("--first-seed", type=int, default=TUNING_PAIR_SEED,
                        help=f"first noise seed (default {TUNING_PAIR_SEED}, the editor's tuning range; the "
                             "augmentation suite's 1600000 checks a rule on seeds it was not chosen on)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--whole-lung", action="store_true", help="the region is the side's whole lung")
    where.add_argument("--reader-zone", action="store_true",
                       help="the region a reader's edit without a zone gets (the finding's default zone)")
    where.add_argument("--asked-side", action="store_true",
                       help="a removal's region keeps to the asked side (the finding's zones on that side only)")
    args = parser.parse_args(argv)
    if args.n < 1:
        raise SystemExit(f"--n must be at least 1, not {args.n}")

    import numpy as np

    from medcf.editing import pairs as pairs_module
    from medcf.editing import spec as spec_module
    from medcf.editing.api import load_editor
    from medcf.editing.regions import EditRegion
    from medcf.editing.pairs import generate_pair_retrying, reprompted, resample_pair
    from medcf.editing.spec import SIDELESS, EditSpec, Method
    from medcf.eval.bench import bundle_judge, in_target_state
    from medcf.vocab import Severity, Side

    from medcf.world.pathology import FINDING_ZONES

    # this process only: the probe measures the region each variant would be
    if args.whole_lung:
        spec_module.DEFAULT_ZONES.pop(args.finding, None)
        FINDING_ZONES[args.finding] = None
        region = "whole lung"
    elif args.reader_zone:
        class ReaderRegion(EditRegion):
            @classmethod
            def build(cls, masks, spec, working_size, placed_by_model=False):
                return EditRegion.build(masks, spec, working_size)

        pairs_module.EditRegion = ReaderRegion
        region = f"reader's zone {spec_module.DEFAULT_ZONES.get(args.finding, 'none: whole lung')}"
    elif args.asked_side:
        from dataclasses import replace

        class AskedSide(EditRegion):
            @classmethod
            def build(cls, masks, spec, working_size, placed_by_model=False):
                # an addition's region of the same finding, side and zones: the asked side only
                return EditRegion.build(masks, replace(spec, action=Action.ADD), working_size, placed_by_model)

        pairs_module.EditRegion = AskedSide
        zones = FINDING_ZONES.get(args.finding)
        region = "asked side, " + ("zones " + "+".join(zones) if zones else "whole lung")
    else:
        zones = FINDING_ZONES.get(args.finding)
        region = ("zones " + "+".join(zones) if zones else "whole lung") \
            + (", both sides" if args.action is Action.REMOVE and args.finding not in SIDELESS else "")
    editor, judge = load_editor(), bundle_judge()
    spare = itertools.count(args.first_seed + 500)
    films, specs, shares, factuals = {"auto": [], "reprompt": []}, [], [], []
    for k in range(args.n):
        side = None if args.finding in SIDELESS else (Side.LEFT, Side.RIGHT)[k % 2]
        spec = EditSpec(args.finding, args.action, side, None, Severity.MODERATE, Method.AUTO,
                        seed=args.first_seed + k)
        first = generate_pair_retrying(editor.generator, spec, editor.segmenter, editor.vectors, spare)
        pair = resample_pair(editor.generator, first, Method.AUTO, editor.vectors)
        specs.append(spec)
        factuals.append(first.factual)
        films["auto"].append(pair.counterfactual)
        films["reprompt"].append(reprompted(editor.generator, first))
        shares.append(float(np.mean(np.asarray(pair.region.native_weight) > 0.5)))
    for name, made in films.items():
        agrees = in_target_state(judge, np.stack(made), specs)
        print(f"{args.finding.value} {args.action.value} ({region}): {name:8s} judge agrees {np.mean(agrees):.2f} "
              f"({sum(agrees)}/{len(agrees)})")
    print(f"region share of the film (weight > 0.5): {np.mean(shares):.3f}")
    # where the judge finds the finding in the factual films: a removal can only agree if
    # the region covers it, an addition's factual should hold none
    where_found = []
    for spec, p in zip(specs, judge.probabilities(np.stack(factuals))):
        if not judge.present(p[None], spec.finding)[0]:
            where_found.append("absent")
        elif spec.side is None or judge.present(p[None], spec.finding, spec.side)[0]:
            where_found.append("asked side")
        else:
            where_found.append("other side")
    print("factual films, judge: " + ", ".join(f"{w} {where_found.count(w)}" for w in
                                               ("asked side", "other side", "absent")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
