#!/usr/bin/env python
"""Benchmark ``medcf batch``: items per second of the plain batch against ``--ray local``
with 1 and 2 workers, measured side by side in one run on this machine (issue 21).

    python benchmarks/bench_batch.py                       # 6 studies x 2 seeds, 8 steps
    python benchmarks/bench_batch.py --studies 4 --seeds 3 --steps 20 --model DIR

Every configuration is the real command in its own process, on the same cohort, into a
fresh output folder, and reports two rates:

- *end to end*: items / wall time of the command (imports, model load, for Ray also the
  cluster start and one model load per worker);
- *steady*: items after the first / time between the first and the last manifest line
  (the rate once everything is loaded; what a long cohort run converges to).

Each process is limited to one math thread per editor (``OMP_NUM_THREADS=1``), so that
2 Ray workers use 2 cores; a "plain, 2 threads" row shows what the plain batch makes of
the same 2 cores with torch's own threads. The default model is the tiny random-weight
one of tests/model_fixtures.py (the shipped weights are not in every checkout), on
256 x 256 films cut from the committed sample study: this measures the batch machinery
and its scaling, not the editor's speed at native size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # the package is installed editable too; this is a fallback
    sys.path.insert(0, str(REPO_ROOT))


def make_cohort(root: Path, studies: int) -> Path:
    """``studies`` study folders of 256 x 256 films, each its own study and patient."""
    from tests.test_batch import small_study

    for index in range(studies):
        small_study(root / f"s{index:02d}", f"P-{index:03d}", f"BENCH^{index}")
    return root


def write_plan(path: Path, cohort: Path, seeds: int) -> Path:
    lines = ["study,finding,action,side,seed"]
    lines += [f"{folder.name},pleural_effusion,add,left,{seed}" for folder in sorted(cohort.iterdir())
              for seed in range(seeds)]
    path.write_text("\n".join(lines) + "\n")
    return path


def run(name: str, plan: Path, model: Path, steps: int, out: Path, threads: int, extra: list[str]) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    command = [sys.executable, "-m", "medcf", "batch", "--plan", str(plan), "--model", str(model), "--method",
               "regulated", "--steps", str(steps), "--quiet", "--out", str(out), *extra]
    begin = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.monotonic() - begin
    if done.returncode != 0:
        raise SystemExit(f"{name}: exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]}")
    lines = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    if len(lines) != len({line["key"] for line in lines}) or any(line["status"] != "done" for line in lines):
        raise SystemExit(f"{name}: the manifest is not one done line per item")
    times = sorted(line["time"] for line in lines)
    steady = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else float("nan")
    workers = len({(line["worker"] or {}).get("pid") for line in lines})
    return {"run": name, "items": len(lines), "wall_s": round(wall, 1), "end_to_end": len(lines) / wall,
            "steady": steady, "editors": workers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=6)
    parser.add_argument("--seeds", type=int, default=2, help="edits per study (one per seed)")
    parser.add_argument("--steps", type=int, default=8, help="sampling steps per edit")
    parser.add_argument("--workers", default="1,2", help="Ray worker counts to run (default 1,2)")
    parser.add_argument("--model", type=Path, help="model folder (default: the tiny random model)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="rounds; each runs every configuration once, in a rotated order (the machine's "
                             "other load then hits every configuration alike); medians are reported")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="medcf-bench-batch-") as scratch:
        root = Path(scratch)
        model = args.model
        if model is None:
            from tests.model_fixtures import make_default_model
            model = make_default_model(root / "tiny")
        cohort = make_cohort(root / "cohort", args.studies)
        plan = write_plan(cohort / "plan.csv", cohort, args.seeds)
        configs = [("plain", 1, [])]
        configs += [(f"ray, {k} worker{'s' * (k > 1)}", 1, ["--ray", "local", "--ray-workers", str(k)])
                    for k in map(int, args.workers.split(","))]
        configs += [("plain, 2 threads", 2, [])]
        rows: dict[str, list[dict]] = {name: [] for name, _, _ in configs}
        load = os.getloadavg()[0]
        for round_ in range(args.repeats):
            for index in range(len(configs)):
                name, threads, extra = configs[(index + round_) % len(configs)]
                row = run(name, plan, model, args.steps, root / f"out{round_}-{index}", threads, extra)
                rows[name].append(row)
                print(f"{row['run']:<18} {row['items']:>3} items  {row['wall_s']:>6.1f} s  "
                      f"end to end {row['end_to_end']:.2f} items/s  steady {row['steady']:.2f} items/s  "
                      f"({row['editors']} editor process(es))", flush=True)
    print("\n| run | end to end (items/s) | steady (items/s) |\n| --- | --- | --- |")
    for name, runs in rows.items():
        print(f"| {name} | {statistics.median(r['end_to_end'] for r in runs):.2f} | "
              f"{statistics.median(r['steady'] for r in runs):.2f} |")
    print(f"# {platform.node()}: {os.cpu_count()} CPUs, load average {load:.1f} at start / "
          f"{os.getloadavg()[0]:.1f} at end; {args.studies} studies x {args.seeds} seeds, {args.steps} steps, "
          f"model {'tiny random' if args.model is None else args.model}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
