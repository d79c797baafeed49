"""The whole ``medcf edit`` of a full-size radiograph: wall time and peak memory, per method, in one run.

The input is the committed sample study's PA film written onto a 2800 x 2300 detector
(``bench_anatomy.full_size_dicom``): read, segment, plan, invert, edit, write the DICOM
series and the panel, as a user's ``medcf edit`` does. Each method runs in a fresh process
(its peak RSS is its own), one after the other, so that the figures are side by side on the
same machine and load. ``medcf bench --suite counterfactual`` measures seconds per edit at the
model's 256² only; this is the figure a user with a real detector size waits for.

``insert`` (the simulated world's lesion registered onto the film and added to it, no diffusion
model) is timed the same way; its target is 10 s (docs/insertion.md).

Usage: python benchmarks/bench_edit_speed.py [--methods auto steer regulated+steer insert] [--threads 2]
       [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_anatomy import full_size_dicom  # noqa: E402  (the sample study's PA film at 2800 x 2300)

SCRIPT = ("import resource, sys, time; from medcf.cli import main; tick = time.perf_counter(); "
          "rc = main(['edit', {film!r}, '--finding', 'pleural_effusion', '--action', 'add', '--side', 'left', "
          "'--method', {method!r}, '--quiet', '--out', {out!r}]); "
          "usage = resource.getrusage(resource.RUSAGE_SELF); "
          "print('SECONDS', time.perf_counter() - tick, 'RSS_MB', usage.ru_maxrss / 1024, 'CPU', "
          "usage.ru_utime + usage.ru_stime); sys.exit(rc)")


def edit_once(film: Path, method: str, out: Path, threads: int) -> dict:
    """One ``medcf edit`` in a fresh interpreter: its own seconds, with the interpreter's start, and peak RSS."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    tick = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", SCRIPT.format(film=str(film), method=method, out=str(out))],
                          capture_output=True, text=True, env=env)
    wall = time.perf_counter() - tick
    line = next((ln.split() for ln in done.stdout.splitlines() if ln.startswith("SECONDS")), None)
    if done.returncode != 0 or line is None:
        raise SystemExit(f"medcf edit --method {method} failed: {done.stderr.strip()[-400:]}")
    # CPU seconds (user + system, the interpreter's start and imports included): what a machine shared with
    # other work does not inflate, unlike the wall time
    return {"method": method, "edit_seconds": round(float(line[1]), 1),
            "edit_seconds_with_interpreter": round(wall, 1), "cpu_seconds": round(float(line[5]), 1),
            "peak_rss_gb": round(float(line[3]) / 1024, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["auto", "steer", "regulated+steer", "insert"])
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each edit (default 2)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows to this new JSON file")
    args = parser.parse_args()
    if args.json is not None and args.json.exists():  # refused before minutes of edits, not after them
        parser.error(f"{args.json} exists; the figures are never written over an earlier run")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        film = full_size_dicom(Path(tmp))
        for method in args.methods:
            rows.append(edit_once(film, method, Path(tmp) / f"out-{method.replace('+', '-')}", args.threads))
            row = rows[-1]
            print(f"medcf edit, 2800 x 2300 DICOM, {method:16s} {row['edit_seconds']:6.1f} s "
                  f"({row['edit_seconds_with_interpreter']:.1f} s with the interpreter's start; {row['cpu_seconds']:.1f} CPU s), "
                  f"peak RSS {row['peak_rss_gb']:.2f} GB", flush=True)
    if args.json is not None:
        record = {"rows": rows, "threads": args.threads, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                  "measured": time.strftime("%Y-%m-%d")}
        with open(args.json, "x", encoding="utf-8") as handle:  # never over an earlier run
            json.dump(record, handle, indent=1)


if __name__ == "__main__":
    main()
