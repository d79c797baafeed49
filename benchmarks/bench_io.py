#!/usr/bin/env python
"""Benchmark medcf.io: load + write of a full-size compressed CR chest radiograph.

Issue "[io]": on a 2-core machine, loading a 2800x2300 16-bit compressed CR
chest radiograph and writing the synthetic result back must take <= 2 s and
<= 500 MB peak memory for the pair (load + write).

This is a benchmark script, not a test: run it from the repository root,

    python benchmarks/bench_io.py                 # every case, 2800x2300, 3 repeats
    python benchmarks/bench_io.py --cases jpeg-ls-16,explicit-16 --repeat 5
    python benchmarks/bench_io.py --size 1400x1150 --phases

Each case runs in a fresh child process (this script with ``--child PATH``) so
that peak memory is that case's alone. The inputs are built in another child
(``--make-inputs DIR``) and this parent imports nothing heavy: on Linux a new
process starts with ru_maxrss already at its parent's peak (the high-water mark
of the parent's address space is carried over at exec), so a parent that had
built 2800x2300 images itself would put its own peak into every case. The
child also reads VmHWM from /proc/self/status, which starts afresh at exec, and
the parent warns if the two disagree.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # the package is installed editable too; this is a fallback
    sys.path.insert(0, str(REPO_ROOT))

TARGET_SECONDS = 2.0
TARGET_PEAK_MB = 500.0
DEFAULT_SIZE = "2800x2300"
SPACING_MM = 0.139
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"

# name -> (transfer syntax key for make_sample, bits stored). "jpeg-lossless"
# is not made by make_sample: dcmtk's dcmcjpeg converts the explicit file.
CASES: dict[str, tuple[str, int]] = {
    "jpeg-ls-16": ("jpeg-ls", 16),
    "jpeg2000-16": ("jpeg2000", 16),
    "rle-16": ("rle", 16),
    "jpeg-lossless-16": ("jpeg-lossless", 16),
    "explicit-16": ("explicit", 16),
    "jpeg-ls-12": ("jpeg-ls", 12),
}

DESCRIPTION = f"""\
Benchmark medcf.io on a full-size CR chest radiograph (issue "[io]").

What is measured, per case, in a fresh child Python process:
  load   = medcf.io.load_radiograph(PATH): header inspection, full read, pixel
           decode and the display transform (Modality LUT, VOI window,
           MONOCHROME1 inversion) to float32 [0, 1].
  write  = medcf.io.write_synthetic(rad, rad.display, Provenance(method=
           "benchmark"), OUTDIR): Secondary Capture build (16-bit, explicit
           VR little endian), provenance, atomic save + fsync, JSON sidecar,
           into a new empty temp folder each time.
  Times are time.perf_counter seconds, the median of --repeat runs.
  Peak RSS = resource.getrusage(RUSAGE_SELF).ru_maxrss of the child over all
  runs (absolute), and above the baseline taken right after 'import medcf.io'.

Inputs are made with medcf.io.samples.make_sample (CR, MONOCHROME1, Imager
Pixel Spacing {SPACING_MM} mm, chest drawing) and saved to a temp dir:
  jpeg-ls-16, jpeg2000-16, rle-16, explicit-16 (bits stored 16),
  jpeg-ls-12 (bits stored 12, typical CR), and jpeg-lossless-16 (JPEG
  Lossless process 14 SV1, {JPEG_LOSSLESS_SV1}) made with dcmtk's
  'dcmcjpeg +e1' from the explicit file; skipped when dcmcjpeg is not on PATH.

Targets (for the load + write pair): <= {TARGET_SECONDS:g} s and <= {TARGET_PEAK_MB:g} MB
absolute peak RSS, on a 2-core machine, at 2800x2300.
"""


# --------------------------------------------------------------------------- child


def _vmhwm_mb() -> float | None:
    """Peak RSS of this process's address space (Linux), MiB; None elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _maxrss_mb() -> float:
    import resource

    # ru_maxrss is KiB on Linux (bytes on macOS); report MiB ("MB" in the table).
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def run_child(path: Path, repeat: int, phases: bool) -> int:
    """Measure load + write of ``path``; print one JSON line."""
    import gc

    import medcf.io  # noqa: F401  (import cost is not part of the measurement)
    from medcf.io import Provenance, load_radiograph, write_synthetic

    baseline = _maxrss_mb()
    baseline_hwm = _vmhwm_mb()
    loads: list[float] = []
    writes: list[float] = []
    peak_after_first_load = None
    work = Path(tempfile.mkdtemp(prefix="medcf-bench-out-"))
    try:
        for i in range(repeat):
            t0 = time.perf_counter()
            rad = load_radiograph(path)
            t1 = time.perf_counter()
            if peak_after_first_load is None:
                peak_after_first_load = _maxrss_mb()
            outdir = work / f"run{i}"
            outdir.mkdir()  # new and empty
            written = write_synthetic(rad, rad.display, Provenance(method="benchmark"), outdir)
            t2 = time.perf_counter()
            loads.append(t1 - t0)
            writes.append(t2 - t1)
            shape = rad.shape
            transform = rad.transform.voi
            out_mb = written.dicom_path.stat().st_size / 1e6
            del rad, written
            gc.collect()
            shutil.rmtree(outdir)
        peak = _maxrss_mb()
        peak_hwm = _vmhwm_mb()
        totals = [a + b for a, b in zip(loads, writes)]
        import pydicom

        uid = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
        result = {
            "path": str(path),
            "transfer_syntax_uid": str(uid),
            "transfer_syntax_name": uid.name,
            "shape": list(shape),
            "display_transform": transform,
            "repeat": repeat,
            "load_s": statistics.median(loads),
            "write_s": statistics.median(writes),
            "total_s": statistics.median(totals),
            "load_runs_s": loads,
            "write_runs_s": writes,
            "baseline_rss_mb": baseline,
            "peak_after_load_mb": peak_after_first_load,
            "peak_rss_mb": peak,
            "peak_above_import_mb": peak - baseline,
            "vmhwm_baseline_mb": baseline_hwm,
            "vmhwm_peak_mb": peak_hwm,
            "first_load_s": loads[0],
            "first_write_s": writes[0],
            "output_mb": out_mb,
        }
        if phases:  # after the peak is recorded: it may add to the peak, not to the result
            result["phases_s"] = _load_phases(path, repeat)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))
    return 0


def _load_phases(path: Path, repeat: int) -> dict[str, float]:
    """Median seconds of the steps inside load_radiograph, done by hand."""
    import pydicom

    from medcf.io.display import to_display
    from medcf.io.reader import inspect_study, read_pixels

    steps: dict[str, list[float]] = {"inspect": [], "dcmread": [], "decode": [], "display": []}
    for _ in range(repeat):
        t0 = time.perf_counter()
        inspect_study(path)
        t1 = time.perf_counter()
        ds = pydicom.dcmread(path)
        t2 = time.perf_counter()
        stored = read_pixels(ds, path)
        t3 = time.perf_counter()
        to_display(ds, stored)
        t4 = time.perf_counter()
        for key, value in zip(steps, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            steps[key].append(value)
        del ds, stored
    return {k: statistics.median(v) for k, v in steps.items()}


# -------------------------------------------------------------------------- parent


def parse_size(text: str) -> tuple[int, int]:
    try:
        rows, cols = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be ROWSxCOLS, e.g. {DEFAULT_SIZE}; got {text!r}") from None
    if rows < 16 or cols < 16:
        raise argparse.ArgumentTypeError("size must be at least 16x16")
    return rows, cols


def parse_cases(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in CASES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown case(s) {unknown}; choose from {', '.join(CASES)}")
    return names


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def machine_info() -> list[str]:
    # Versions from package metadata: importing numpy/pydicom here would raise
    # this process's peak RSS, which the children inherit (see the module doc).
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    from medcf.devices import cpu_model

    model = cpu_model()
    memory = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kib / 1024 / 1024:.1f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return [
        f"machine: {os.cpu_count()} CPUs ({affinity} usable), {model}{memory}",
        f"python {platform.python_version()} ({sys.executable}), {platform.platform()}",
        "numpy {}, pydicom {}, highdicom {}; decoders: pyjpegls {}, pylibjpeg-libjpeg {}, "
        "pylibjpeg-openjpeg {}, pylibjpeg-rle {}".format(*(_version(p) for p in (
            "numpy", "pydicom", "highdicom", "pyjpegls", "pylibjpeg-libjpeg", "pylibjpeg-openjpeg",
            "pylibjpeg-rle"))),
    ]


def make_inputs_child(folder: Path, names: list[str], rows: int, cols: int) -> int:
    """Child entry point: build the inputs, print one JSON line {paths, skipped}."""
    paths, skipped = build_inputs(names, rows, cols, folder)
    print(json.dumps({"paths": {k: str(v) for k, v in paths.items()}, "skipped": skipped}))
    return 0


def build_inputs(names: list[str], rows: int, cols: int, folder: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """Write each case's input file; return paths and notes for skipped cases.

    Runs in a child process (see ``make_inputs_child``)."""
    from medcf.io.samples import SampleSpec, chest_pattern, make_sample, save_sample
    from medcf.vocab import Photometric, ViewPosition

    # make_sample draws chest_pattern(rows, cols, PA, seed 0) itself; drawing it
    # once and passing it in gives identical files, faster.
    drawing = chest_pattern(rows, cols, ViewPosition.PA, 0)
    paths: dict[str, Path] = {}
    skipped: dict[str, str] = {}

    def sample(ts: str, bits: int) -> Path:
        path = folder / f"{ts}-{bits}-{rows}x{cols}.dcm"
        if not path.exists():  # --keep DIR: reuse inputs from an earlier run
            spec = SampleSpec(modality="CR", photometric=Photometric.MONOCHROME1, bits_stored=bits,
                              rows=rows, columns=cols, transfer_syntax=ts, spacing_mm=SPACING_MM)
            ds, _ = make_sample(spec, drawing)
            save_sample(ds, path)
        return path

    for name in names:
        ts, bits = CASES[name]
        if ts != "jpeg-lossless":
            paths[name] = sample(ts, bits)
            continue
        dcmcjpeg = shutil.which("dcmcjpeg")
        if dcmcjpeg is None:
            skipped[name] = "dcmcjpeg (dcmtk) not on PATH; install dcmtk to make the JPEG Lossless SV1 input"
            continue
        source = sample("explicit", bits)
        target = folder / f"jpeg-lossless-{bits}-{rows}x{cols}.dcm"
        if target.is_file():
            paths[name] = target
            continue
        proc = subprocess.run([dcmcjpeg, "+e1", str(source), str(target)], capture_output=True, text=True)
        if proc.returncode != 0 or not target.is_file():
            skipped[name] = f"dcmcjpeg +e1 failed (rc {proc.returncode}): {(proc.stderr or proc.stdout).strip()[:200]}"
            continue
        paths[name] = target
    return paths, skipped


def build_inputs_in_child(
    names: list[str], rows: int, cols: int, folder: Path, timeout: float
) -> tuple[dict[str, Path], dict[str, str]]:
    """Build the inputs in a child process so this one stays small (see the module doc)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--make-inputs", str(folder),
               "--size", f"{rows}x{cols}", "--cases", ",".join(names)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"building the inputs failed (rc {proc.returncode}):\n{proc.stderr.strip()}")
    made = json.loads(lines[-1])
    return {k: Path(v) for k, v in made["paths"].items()}, made["skipped"]


_SHORT_TS_NAMES = {
    "1.2.840.10008.1.2.1": "Explicit VR LE",
    "1.2.840.10008.1.2.5": "RLE Lossless",
    "1.2.840.10008.1.2.4.70": "JPEG Lossless SV1",
    "1.2.840.10008.1.2.4.80": "JPEG-LS Lossless",
    "1.2.840.10008.1.2.4.90": "JPEG 2000 Lossless",
}


def transfer_syntax_label(result: dict) -> str:
    """Short name and UID of the input's transfer syntax, as the child read it."""
    uid = result.get("transfer_syntax_uid")
    if not uid:
        return "-"
    return f"{_SHORT_TS_NAMES.get(uid, result.get('transfer_syntax_name', uid))} ({uid})"


def run_case(path: Path, repeat: int, phases: bool, timeout: float) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(path), "--repeat", str(repeat)]
    if phases:
        command.append("--phases")
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:g} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": f"child failed (rc {proc.returncode}): {tail[0][:200]}"}
    return json.loads(lines[-1])


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    numeric = [i >= 2 and i < len(headers) - 1 for i in range(len(headers))]

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)).rstrip()

    print(fmt(headers))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(fmt(row))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/bench_io.py",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--size", type=parse_size, default=parse_size(DEFAULT_SIZE), metavar="ROWSxCOLS",
                        help=f"image size (default {DEFAULT_SIZE}, a typical CR chest plate)")
    parser.add_argument("--repeat", type=int, default=3, metavar="N",
                        help="load+write runs per case; the median is reported (default 3)")
    parser.add_argument("--cases", type=parse_cases, default=list(CASES), metavar="A,B,...",
                        help=f"comma-separated subset of: {', '.join(CASES)} (default: all)")
    parser.add_argument("--phases", action="store_true",
                        help="also time the steps inside load (inspect, dcmread, decode, display) in an extra "
                             "pass after the measured runs; does not change the reported numbers")
    parser.add_argument("--keep", metavar="DIR", type=Path,
                        help="write the input files into DIR and keep them (default: a temp dir, removed)")
    parser.add_argument("--timeout", type=float, default=600, metavar="S",
                        help="give up on a case after S seconds (default 600)")
    parser.add_argument("--json", action="store_true", help="also print every child's JSON result")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 when a case misses a target (default: exit 1 only when a case fails to run)")
    parser.add_argument("--child", type=Path, metavar="PATH", help=argparse.SUPPRESS)
    parser.add_argument("--make-inputs", type=Path, metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")

    if args.child is not None:
        return run_child(args.child, args.repeat, args.phases)
    if args.make_inputs is not None:
        return make_inputs_child(args.make_inputs, args.cases, *args.size)

    rows, cols = args.size
    print(f"medcf.io load + write benchmark: {rows}x{cols} CR MONOCHROME1, "
          f"median of {args.repeat}, one child process per case")
    for line in machine_info():
        print(line)
    print(f"targets for load+write: <= {TARGET_SECONDS:g} s, <= {TARGET_PEAK_MB:g} MB peak RSS")
    print()

    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        folder, cleanup = args.keep, False
    else:
        folder, cleanup = Path(tempfile.mkdtemp(prefix="medcf-bench-in-")), True
    try:
        t0 = time.perf_counter()
        paths, skipped = build_inputs_in_child(args.cases, rows, cols, folder, args.timeout)
        print(f"inputs built in {time.perf_counter() - t0:.1f} s under {folder}")
        print()

        headers = ["case", "transfer syntax", "file MB", "load s", "write s", "load+write s",
                   "peak RSS MB", "above-import MB", "meets targets"]
        table: list[list[str]] = []
        notes: list[str] = []
        results: dict[str, dict] = {}
        any_error = any_miss = False
        for name in args.cases:
            if name in skipped:
                table.append([name, "-", "-", "-", "-", "-", "-", "-", "skipped"])
                notes.append(f"{name}: skipped: {skipped[name]}")
                continue
            path = paths[name]
            result = run_case(path, args.repeat, args.phases, args.timeout)
            results[name] = result
            ts = transfer_syntax_label(result)
            size_mb = f"{path.stat().st_size / 1e6:.2f}"
            if "error" in result:
                any_error = True
                table.append([name, ts, size_mb, "-", "-", "-", "-", "-", "ERROR"])
                notes.append(f"{name}: {result['error']}")
                continue
            fast = result["total_s"] <= TARGET_SECONDS
            small = result["peak_rss_mb"] <= TARGET_PEAK_MB
            verdict = "yes" if fast and small else "NO (" + ", ".join(
                w for w, bad in (("time", not fast), ("memory", not small)) if bad) + ")"
            any_miss |= not (fast and small)
            table.append([
                name, ts, size_mb,
                f"{result['load_s']:.3f}", f"{result['write_s']:.3f}", f"{result['total_s']:.3f}",
                f"{result['peak_rss_mb']:.0f}", f"{result['peak_above_import_mb']:.0f}", verdict,
            ])
        print_table(headers, table)

        details = [n for n in args.cases if n in results and "error" not in results[n]]
        if details:
            print()
            print("details: first (cold) run load/write s; RSS after 'import medcf.io', peak after the first "
                  "load, VmHWM peak; output file size" + ("; load steps, median s" if args.phases else ""))
            for name in details:
                r = results[name]
                hwm = r.get("vmhwm_peak_mb")
                hwm_text = "-" if hwm is None else f"{hwm:.0f}"
                line = (f"  {name:<17} first run {r['first_load_s']:.3f} + {r['first_write_s']:.3f} = "
                        f"{r['first_load_s'] + r['first_write_s']:.3f} s; RSS import {r['baseline_rss_mb']:.0f} MB, "
                        f"after load {r['peak_after_load_mb']:.0f} MB, VmHWM {hwm_text} MB; "
                        f"output {r['output_mb']:.1f} MB")
                if "phases_s" in r:
                    line += "; " + ", ".join(f"{k} {v:.3f}" for k, v in r["phases_s"].items())
                print(line)
                if hwm is not None and abs(hwm - r["peak_rss_mb"]) > max(10.0, 0.05 * hwm):
                    notes.append(f"{name}: ru_maxrss {r['peak_rss_mb']:.0f} MB and VmHWM {hwm:.0f} MB disagree; "
                                 "ru_maxrss may carry this script's own peak (run it from a lean parent)")
        for note in notes:
            print(note)
        if args.json:
            print()
            for name, r in results.items():
                print(json.dumps({"case": name, **r}))
    finally:
        if cleanup:
            shutil.rmtree(folder, ignore_errors=True)
    return 1 if any_error or (args.strict and any_miss) else 0


if __name__ == "__main__":
    sys.exit(main())
