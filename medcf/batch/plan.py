"""What a batch runs: the studies under the sources, and the (study, edit) items, from
command-line edit options (every study × one edit) or from a plan CSV (rows of edits).

Everything here reads headers only, so that a wrong plan or source fails in one line
before the model loads.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom

from medcf.editing.api import specs_from_report
from medcf.editing.spec import OPTIONS, EditSpec
from medcf.errors import InputError
from medcf.io.reader import InstanceSummary, inspect_study, select_frontal

PLAN_COLUMNS = ("study", "finding", "action", "side", "zone", "severity", "method", "seed")  # study + edit options
REQUIRED_COLUMNS = ("study", "finding", "action")
REPORT_COLUMNS = ("study", "report")  # --from-report REPORTS.csv: a study and its report's text
_UID = re.compile(r"^[0-9]+(\.[0-9]+)+$")


@dataclass(frozen=True)
class Study:
    """One study found under the sources, and the frontal instance MedCF would edit."""

    uid: str
    source: str  # the SOURCE argument it was found under
    paths: tuple[Path, ...]  # every instance of the study
    selected: Path | None  # None: nothing editable (``reason`` says why)
    reason: str
    burned_in: bool  # the selected instance says Burned In Annotation = YES
    patient_id: str = ""
    patient_name: str = ""


@dataclass(frozen=True)
class BatchItem:
    """One edit of one study; ``key`` names it in the manifest and the output folder."""

    key: str
    study: Study
    spec: EditSpec
    report: dict | None = None  # with --from-report: what in the report asked for this edit (provenance)

    @property
    def slug(self) -> str:
        return edit_slug(self.spec)


def edit_slug(spec: EditSpec) -> str:
    """The edit part of a key: what distinguishes two edits of one study (file-name safe)."""
    parts = [spec.action.value, spec.finding.value, spec.side.value if spec.side else "noside",
             spec.zone.value if spec.zone else "defaultzone", spec.severity.value,
             spec.method.value.replace("+", "_"), f"seed{spec.seed}"]
    return "-".join(parts)


def _header(path: Path) -> pydicom.Dataset:
    return pydicom.dcmread(path, stop_before_pixels=True,
                           specific_tags=["StudyInstanceUID", "BurnedInAnnotation", "PatientID", "PatientName"])


def discover_studies(sources: Sequence[str | Path]) -> list[Study]:
    """Group the DICOM instances under every source by Study Instance UID and choose each
    study's frontal image with the same rule as ``medcf edit`` (:func:`select_frontal`).
    The same study under two sources is one study."""
    groups: dict[str, list[tuple[InstanceSummary, pydicom.Dataset]]] = {}
    origin: dict[str, str] = {}
    seen: set[str] = set()
    for source in sources:
        inspection = inspect_study(source)
        for instance in inspection.instances:
            if instance.sop_instance_uid in seen:
                continue
            seen.add(instance.sop_instance_uid)
            header = _header(instance.path)
            uid = str(header.get("StudyInstanceUID", "")) or f"folder:{instance.path.parent}"
            groups.setdefault(uid, []).append((instance, header))
            origin.setdefault(uid, str(source))
    studies = []
    for uid, members in groups.items():
        selected, reason = select_frontal([m[0] for m in members])
        header = next((h for i, h in members if selected is not None and i is selected), members[0][1])
        studies.append(Study(
            uid=uid, source=origin[uid], paths=tuple(m[0].path for m in members),
            selected=selected.path if selected is not None else None, reason=reason,
            burned_in=str(header.get("BurnedInAnnotation", "")).upper() == "YES",
            patient_id=str(header.get("PatientID", "")), patient_name=str(header.get("PatientName", "")),
        ))
    return sorted(studies, key=lambda s: (s.source, s.uid))


def _key(study: Study, spec: EditSpec) -> str:
    return f"{study.uid}/{edit_slug(spec)}"


def items_from_spec(studies: Sequence[Study], spec: EditSpec) -> list[BatchItem]:
    """Every study × the one edit the command-line options ask for."""
    return [BatchItem(_key(s, spec), s, spec) for s in studies]


def read_plan(path: Path, columns: Sequence[str] = PLAN_COLUMNS, required: Sequence[str] = REQUIRED_COLUMNS,
              option: str = "--plan") -> list[dict[str, str]]:
    """Rows of PLAN.csv (or of another table of studies: ``--from-report REPORTS.csv``) with
    their line numbers (``_line``); columns checked here."""
    expected = columns
    if not Path(path).is_file():
        raise InputError(f"{option} {path}: no such file")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip().lower() for c in (reader.fieldnames or [])]
        missing = [c for c in required if c not in columns]
        if missing:
            raise InputError(f"{option} {path}: missing column(s) {', '.join(missing)} "
                             f"(columns: {', '.join(expected)})")
        unknown = [c for c in columns if c not in expected]
        if unknown:
            raise InputError(f"{option} {path}: unknown column(s) {', '.join(unknown)} "
                             f"(columns: {', '.join(expected)})")
        rows = []
        end = reader.line_num  # the header's last line
        for raw in reader:
            number, end = end + 1, reader.line_num  # a quoted cell (a report's text) may span lines
            row = {k.strip().lower(): (v or "").strip() for k, v in raw.items() if k is not None}
            if not any(row.values()):
                continue
            row["_line"] = str(number)
            rows.append(row)
    if not rows:
        raise InputError(f"{option} {path}: no rows")
    return rows


def plan_paths(rows: Sequence[dict[str, str]], plan: Path, option: str = "--plan") -> list[Path]:
    """Study folders or files named in the plan's ``study`` column (relative to the plan)."""
    paths = []
    for row in rows:
        value = row["study"]
        if value and not _UID.match(value):
            path = Path(value) if Path(value).is_absolute() else Path(plan).parent / value
            if not path.exists():
                raise InputError(f"{option} {plan} line {row['_line']}: study {value!r} is neither a Study "
                                 f"Instance UID nor an existing path")
            if path not in paths:
                paths.append(path)
    return paths


def _match(value: str, studies: Sequence[Study], plan: Path, option: str = "--plan") -> Study | None:
    if _UID.match(value):
        return next((s for s in studies if s.uid == value), None)
    path = (Path(value) if Path(value).is_absolute() else Path(plan).parent / value).resolve()
    found = [s for s in studies if any(p.resolve() == path or path in p.resolve().parents for p in s.paths)]
    if len(found) > 1:
        raise InputError(f"{option} {plan}: {value} holds {len(found)} studies; name one by Study Instance UID")
    return found[0] if found else None


def items_from_plan(rows: Sequence[dict[str, str]], studies: Sequence[Study], plan: Path,
                    defaults: dict) -> list[BatchItem]:
    """One item per plan row. Blank cells take the command line's values (``defaults``:
    severity, method, seed, steps, …); a repeated (study, edit) is an error, because each
    key is run exactly once."""
    items: list[BatchItem] = []
    lines: dict[str, str] = {}
    for row in rows:
        where = f"--plan {plan} line {row['_line']}"
        study = _match(row["study"], studies, plan)
        if study is None:
            raise InputError(f"{where}: study {row['study']!r} is not under the sources")
        if not row.get("finding") or not row.get("action"):
            raise InputError(f"{where}: finding and action are required")
        options = dict(defaults)
        for name in PLAN_COLUMNS[1:]:  # each cell read as the options schema types it (medcf.editing.schema)
            if row.get(name):
                try:
                    options[name] = OPTIONS[name].from_text(row[name])
                except InputError as error:
                    raise InputError(f"{where}: {error}") from None
        try:
            spec = EditSpec(**options)
        except InputError as error:
            raise InputError(f"{where}: {error}") from None
        key = _key(study, spec)
        if key in lines:
            raise InputError(f"{where} repeats the edit of line {lines[key]} ({key})")
        lines[key] = row["_line"]
        items.append(BatchItem(key, study, spec))
    return items


def items_from_reports(rows: Sequence[dict[str, str]], studies: Sequence[Study], table: Path, action,
                       base: EditSpec, evidence: bool = True) -> tuple[list[BatchItem], list[str]]:
    """One item per present, certain, editable finding of each row's report (the reader of
    ``medcf edit --from-report``: :func:`medcf.editing.api.specs_from_report`), the other
    settings from ``base``. Returns the items and the line numbers of reports that state no
    such finding (a normal report is common in a cohort: those studies are not edited, and
    the caller says so). ``evidence``: keep the report's sentence in the provenance (not
    with --deidentify: free text can name people and dates)."""
    items: list[BatchItem] = []
    lines: dict[str, str] = {}
    silent: list[str] = []
    for row in rows:
        where = f"--from-report {table} line {row['_line']}"
        study = _match(row["study"], studies, table, "--from-report")
        if study is None:
            raise InputError(f"{where}: study {row['study']!r} is not under the sources")
        try:
            specs, sources = specs_from_report(row["report"], action, base)
        except InputError:
            silent.append(row["_line"])
            continue
        for spec, source in zip(specs, sources):
            key = _key(study, spec)
            if key in lines:
                raise InputError(f"{where} repeats the edit of line {lines[key]} ({key})")
            lines[key] = row["_line"]
            report = dict(source["report"])
            if not evidence:
                report.pop("evidence", None)
            items.append(BatchItem(key, study, spec, report=report))
    return items, silent
