"""Realism of inserted lesions (issue 47, item 2): can a discriminator tell the world's
rendered lesion from the same lesion inserted into the lesion-free film at the same place?

Per finding, ``--n`` patients (seeds from the REALISM range, medcf/world/seeds.py), each at
every severity; the discriminator (medcf/eval/realism.py) is trained and tested on different
patients. Also the two crude pastes it must catch, and the oracle row (the bundle's judge on
the inserted films: truth gain, flip rate, and the judge's flip rate on the truth beside it).

Usage: python benchmarks/bench_realism.py [--n 10] [--size 256] [--out docs/results/realism]
       [--first-seed S] [--findings nodule,edema] [--no-judge]
Writes OUT/results.json and OUT/panel.png (OUT new or empty) and prints the figures.
"""

from __future__ import annotations

import argparse
import json
import sys

from medcf.errors import InputError, MedCFError
from medcf.vocab import Finding


def main(argv: list[str] | None = None) -> int:
    from medcf.eval import realism

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10, help="patients per finding (default 10)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--first-seed", type=int, default=realism.REALISM_SEED)
    parser.add_argument("--findings", default=",".join(f.value for f in Finding))
    parser.add_argument("--out", default="docs/results/realism")
    parser.add_argument("--no-judge", action="store_true", help="skip the oracle rows")
    parser.add_argument("--bootstrap", type=int, default=realism.BOOTSTRAP)
    args = parser.parse_args(argv)
    try:
        try:
            findings = tuple(Finding(name.strip()) for name in args.findings.split(",") if name.strip())
        except ValueError as error:
            raise InputError(f"--findings: {error}; choose from {', '.join(f.value for f in Finding)}") from None
        judge = None
        if not args.no_judge:
            from medcf.eval.bench import bundle_judge
            judge = bundle_judge()
        report = realism.run_realism_study(args.n, args.out, findings, args.size, args.first_seed, judge,
                                           bootstrap=args.bootstrap)
    except MedCFError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps({f: {"auc": {p: r["auc"] for p, r in e["discriminator"].items()}, **({"oracle": e["oracle"]}
                                                                                        if "oracle" in e else {})}
                      for f, e in report["findings"].items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
