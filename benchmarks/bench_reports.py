#!/usr/bin/env python
"""Benchmark medcf.text: the report reader against the IU expert MeSH indexing.

Issue 8 targets: presence micro-F1 >= 0.95, side >= 0.92, severity >= 0.85,
zone >= 0.85 (a keyword + simple NegEx baseline scores about 0.89 presence).
Only IU reports 1-1000 are ever extracted or read (see medcf/text/iu.py); how
each figure is computed is in medcf/text/scoring.py.

    python benchmarks/bench_reports.py                  # rules vs baseline (and the naive first baseline)
    python benchmarks/bench_reports.py --errors 40      # also list misses
    python benchmarks/bench_reports.py --half dev --errors 40   # develop on one half ...
    python benchmarks/bench_reports.py --half val               # ... and score the other, unread
    python benchmarks/bench_reports.py --cache-dir DIR --wheel torchxrayvision-1.5.7-py3-none-any.whl
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

from medcf.text.baseline import BaselineReader
from medcf.text.iu import HALVES, fetch_reports, half_of, load_reports
from medcf.text.rules import RuleReader
from medcf.text.scoring import format_scores, score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=None, help="default $MEDCF_CACHE/iu-reports")
    parser.add_argument("--wheel", type=Path, default=None, help="torchxrayvision wheel already on disk")
    parser.add_argument("--errors", type=int, default=0, metavar="N", help="print the first N disagreements")
    parser.add_argument("--half", choices=("all", *HALVES), default="all",
                        help="score one half of reports 1-1000 (medcf.text.iu.half_of); the val half's errors are "
                             "never printed: it is not read while rules change")
    args = parser.parse_args()
    if args.half == "val" and args.errors:
        parser.error("the validation half is scored, never read: --errors works on --half dev or all")

    reports = load_reports(fetch_reports(args.cache_dir, args.wheel))
    if args.half != "all":
        reports = [r for r in reports if half_of(r.id) == args.half]
    rules = RuleReader()
    results = {"rules": score(reports, rules.parse_many), "baseline": score(reports, BaselineReader().parse_many),
               "naive": score(reports, BaselineReader(naive=True).parse_many)}
    print(f"IU reports 1-1000 ({args.half}): {len(reports)} files; {platform.processor() or platform.machine()}, "
          f"Python {platform.python_version()}")
    print(format_scores(results))
    for report_id, kind, what in results["rules"].errors[: args.errors]:
        print(f"  {report_id}: {kind} {what}")


if __name__ == "__main__":
    main()
