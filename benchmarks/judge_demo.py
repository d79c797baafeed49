"""Does the benchmark's judge see what ``make demo`` claims? Issue 16's demo target: the judge
finds the left pleural effusion in the add output and none in the remove output.

Runs the demo (``medcf.editing.api.run_demo``, the committed sample study, ``--method auto``)
into a new folder, or reads an existing demo folder, and prints for the input, the added and
the removed film the judge's effusion probability, its left-side decision and the model's
own check. The films are read back from the written DICOM files as any viewer would
(display window applied), so what is judged is what the user gets, not an in-memory copy.
The judge is never used by the editor; this only reports.

    python benchmarks/judge_demo.py --out runs/demo-judged
    python benchmarks/judge_demo.py --demo build/demo/edit   # a demo already run
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path


def _film(folder: Path) -> Path:
    files = sorted(glob.glob(str(folder / "dicom" / "*.dcm")))
    if not files:
        raise SystemExit(f"{folder}: no dicom/*.dcm (not a demo output folder)")
    return Path(files[0])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", type=Path, help="run the demo into this new folder first")
    where.add_argument("--demo", type=Path, help="an existing demo folder (holding add/ and remove/)")
    args = parser.parse_args(argv)

    from medcf.editing.api import run_demo
    from medcf.eval.bench import bundle_judge
    from medcf.eval.judge import LABELS
    from medcf.io.reader import load_radiograph
    from medcf.vocab import Finding, Side

    demo = args.demo
    if args.out is not None:
        run_demo(args.out, progress=False)
        demo = args.out
    records = {step: json.loads((demo / step / "edit.json").read_text()) for step in ("add", "remove")}
    films = {"input": load_radiograph(_source(records["add"])),
             "add": load_radiograph(_film(demo / "add")), "remove": load_radiograph(_film(demo / "remove"))}
    judge = bundle_judge()
    effusion = Finding.PLEURAL_EFFUSION
    for name, film in films.items():
        p = judge.probabilities(film.display)
        left = bool(judge.present(p, effusion, Side.LEFT)[0])
        check = records[name].get("extra", {}).get("settings", {}).get("check", {}).get("target_reached") if name in records else None
        print(f"{name:7} judge p(effusion) {p[0, LABELS.index(effusion.value)]:.3f}  "
              f"left effusion present: {'yes' if left else 'no '}"
              + ("" if check is None else f"  model check: target {'reached' if check else 'NOT reached'}"))
    return 0


def _source(record: dict) -> Path:
    """The film the demo's first edit read. Its record names it by the absolute path it had
    where the demo ran; a demo folder judged elsewhere (another checkout, a copied build)
    finds the same file in this checkout's committed sample study."""
    source = record.get("input", {}).get("path")
    if not source:
        raise SystemExit("edit.json names no input film")
    if Path(source).exists():
        return Path(source)
    study = Path(__file__).resolve().parents[1] / "medcf" / "data" / "sample_study"
    parts = Path(source).parts
    for tail in (Path(*parts[-k:]) for k in range(1, len(parts))):  # IM0001.dcm, series-001-pa/IM0001.dcm, …
        if (study / tail).is_file():
            return study / tail
    raise SystemExit(f"the demo's input {source} is gone and the sample study holds no {Path(source).name}")


if __name__ == "__main__":
    sys.exit(main())
