#!/usr/bin/env python
"""A cohort run end to end, timed: pull -> batch -> de-identify -> send (docs/batch.md).

    python benchmarks/cohort_run.py                    # 6 studies x 2 findings, --ray local, 2 workers
    python benchmarks/cohort_run.py --studies 4 --no-ray

Two private Orthanc servers on loopback stand in for the research PACS the cohort comes
from and the archive the de-identified results go to. The cohort (256 x 256 films cut from
the committed sample study, one patient each) is put on the PACS through Orthanc's REST
API; from then on only `medcf` commands run, as a user would type them (printed with their
wall times): `medcf pull` of an accession-number list, then one `medcf batch` of a plan
(two findings per study) with --deidentify and --send (STOW-RS), then a query of the
archive. Needs Orthanc and its DICOMweb plugin (`make system-deps`).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

def start_orthanc(root: Path, name: str) -> tuple[subprocess.Popen, dict]:
    """The tests' launcher (tests/orthanc_server.py), its refusal as this script's one line."""
    from tests.orthanc_server import OrthancUnavailable
    from tests.orthanc_server import start_orthanc as start

    try:
        return start(root, name=name, aet=name.upper())
    except OrthancUnavailable as error:
        raise SystemExit(str(error)) from None


def rest(url: str, data: bytes | None = None) -> object:
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def medcf(*args, env: dict) -> tuple[subprocess.CompletedProcess, float]:
    shown = " ".join(shlex.quote(str(a)) for a in args)
    print(f"\n$ medcf {shown}", flush=True)
    begin = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "medcf", *map(str, args)], capture_output=True, text=True, env=env)
    seconds = time.monotonic() - begin
    print(done.stdout.rstrip()[-1500:])
    if done.returncode != 0:
        raise SystemExit(f"exit {done.returncode}: {done.stderr.strip()[-1500:]}")
    print(f"[{seconds:.1f} s]", flush=True)
    return done, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=6)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="Ray workers (default 2)")
    parser.add_argument("--no-ray", action="store_true", help="run the plain batch instead")
    parser.add_argument("--model", type=Path, help="model folder (default: the tiny random model)")
    args = parser.parse_args()
    import pydicom

    from tests.test_batch import small_study

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    with tempfile.TemporaryDirectory(prefix="medcf-cohort-") as scratch:
        root = Path(scratch)
        servers = []
        try:
            pacs_process, pacs = start_orthanc(root / "pacs", "pacs")
            servers.append(pacs_process)
            archive_process, archive = start_orthanc(root / "archive", "archive")
            servers.append(archive_process)
            model = args.model
            if model is None:
                from tests.model_fixtures import make_default_model
                model = make_default_model(root / "tiny")
            accessions, uids = [], []
            for index in range(args.studies):
                folder = small_study(root / "made" / f"s{index}", f"P-{index:03d}", f"COHORT^PATIENT{index}")
                ds = pydicom.dcmread(folder / "pa.dcm", stop_before_pixels=True)
                accessions.append(str(ds.AccessionNumber))
                uids.append(str(ds.StudyInstanceUID))
                rest(f"{pacs['http']}/instances", (folder / "pa.dcm").read_bytes())
            work = root / "work"
            work.mkdir()
            cohort = work / "cohort.csv"
            cohort.write_text("accession\n" + "\n".join(accessions) + "\n")
            plan = work / "plan.csv"
            plan.write_text("study,finding,action,side\n" + "".join(
                f"{uid},pleural_effusion,add,left\n{uid},cardiomegaly,add,\n" for uid in uids))
            cache = work / "cache"
            _, pull_s = medcf("pull", cohort, "--server", pacs["dimse"], "--cache-dir", cache, "--quiet", env=env)
            ray = [] if args.no_ray else ["--ray", "local", "--ray-workers", str(args.workers)]
            out = work / "export"
            _, batch_s = medcf("batch", cohort, "--server", pacs["dimse"], "--cache-dir", cache, "--plan", plan,
                               "--model", model, "--method", "regulated", "--steps", args.steps,
                               "--deidentify", "--deid-map", work / "pseudonyms.json",
                               "--deid-option", "retain-patient-characteristics",
                               "--send", archive["web"], "--out", out, *ray, "--quiet", env=env)
            lines = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
            done = [line for line in lines if line["status"] == "done"]
            stored = rest(f"{archive['http']}/instances")
            # by tag number: this Orthanc's dictionary may not name Synthetic Data (0008,001C)
            tags = [rest(f"{archive['http']}/instances/{i}/tags?short") for i in stored]
            patients = {t["0010,0020"] for t in tags}
            synthetic = {t.get("0008,001c") for t in tags}
            removed = {t.get("0012,0062") for t in tags}
            print(f"\narchive: {len(stored)} instances of {len(patients)} pseudonymous patients "
                  f"({', '.join(sorted(patients)[:2])}, ...); Synthetic Data {synthetic}, Patient Identity Removed "
                  f"{removed}; De-identification Method {tags[0].get('0012,0063')!r}")
            names = [n for n in (line["key"] for line in lines) if any(u in n for u in uids)]
            print(f"manifest: {len(lines)} lines, {len(done)} done, {len(names)} keys naming an original UID")
            edits = len(done)
            print(f"\n| step | wall | items/s |\n| --- | --- | --- |\n"
                  f"| pull ({args.studies} studies, C-FIND + C-GET) | {pull_s:.1f} s | |\n"
                  f"| batch {'plain' if args.no_ray else f'--ray local, {args.workers} workers'} ({edits} edits, "
                  f"de-identify, STOW-RS) | {batch_s:.1f} s | {edits / batch_s:.2f} |")
            print(f"# {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {args.steps} steps, model "
                  f"{'tiny random' if args.model is None else args.model}")
        finally:
            for process in servers:
                process.terminate()
                process.wait(timeout=10)


if __name__ == "__main__":
    main()
