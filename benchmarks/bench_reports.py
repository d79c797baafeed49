#!/usr/bin/env python
"""Benchmark medcf.text: the report reader against the IU expert MeSH indexing.

Issue 8 targets: presence micro-F1 >= 0.95, side >= 0.92, severity >= 0.85,
zone >= 0.85 (a keyword + simple NegEx baseline scores about 0.89 presence).
Only IU reports 1-1000 are ever extracted or read (see medcf/text/iu.py); how
each figure is computed is in medcf/text/scoring.py.

    python benchmarks/bench_reports.py                  # rules vs baseline (and the naive first baseline)
    python benchmarks/bench_reports.py --errors 40      # also list misses
    python benchmarks/bench_reports.py --cache-dir DIR --wheel torchxrayvision-1.5.7-py3-none-any.whl
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

from medcf.text.baseline import BaselineReader
from medcf.text.iu import fetch_reports, load_reports
from medcf.text.rules import RuleReader
from medcf.text.scoring import format_scores, score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=None, help="default $MEDCF_CACHE/iu-reports")
    parser.add_argument("--wheel", type=Path, default=None, help="torchxrayvision wheel already on disk")
    parser.add_argument("--errors", type=int, default=0, metavar="N", help="print the first N disagreements")
    args = parser.parse_args()

    reports = load_reports(fetch_reports(args.cache_dir, args.wheel))
    rules = RuleReader()
    results = {"rules": score(reports, rules.parse_many), "baseline": score(reports, BaselineReader().parse_many),
               "naive": score(reports, BaselineReader(naive=True).parse_many)}
    print(f"IU reports 1-1000: {len(reports)} files; {platform.processor() or platform.machine()}, "
          f"Python {platform.python_version()}")
    print(format_scores(results))
    for report_id, kind, what in results["rules"].errors[: args.errors]:
        print(f"  {report_id}: {kind} {what}")


if __name__ == "__main__":
    main()
