"""Regenerate docs/images/anatomy-segment.png: `medcf segment` on the committed sample study.

    python scripts/make_anatomy_docs.py

The picture is the overlay that `medcf segment` writes (input, organs, zones, notice), so
the documentation shows exactly what a user gets. An existing picture is not replaced:
delete it first.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from medcf.anatomy.outputs import segment_input

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "docs" / "images" / "anatomy-segment.png"


def main() -> None:
    if TARGET.exists():
        raise SystemExit(f"{TARGET} exists; delete it to regenerate")
    with tempfile.TemporaryDirectory() as tmp:
        result = segment_input(ROOT / "medcf" / "data" / "sample_study", Path(tmp) / "out")
        shutil.copyfile(result.files["overlay"], TARGET)
    print(f"wrote {TARGET}")


if __name__ == "__main__":
    main()
