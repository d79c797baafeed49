"""Sources on a DICOM server: a CSV of Study Instance UIDs or accession numbers (with
``--server``), or study addresses, fetched into the cache by :func:`medcf.io.pacs.fetch_study`
(C-FIND + C-GET, or QIDO-RS + WADO-RS) before the batch runs.

A study that cannot be fetched does not stop the batch: it becomes a :class:`Study` with
nothing to edit, so its items get a ``failed`` manifest line with the reason and are tried
again (fetched again) by the next run.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import quote

from medcf.batch.plan import Study
from medcf.errors import InputError, MedCFError
from medcf.io.pacs import fetch_study, find_studies, is_remote, parse_remote, study_address

UID_COLUMNS = ("study", "study_instance_uid", "studyinstanceuid")
ACCESSION_COLUMNS = ("accession", "accession_number", "accessionnumber")


def _address(server: str, uid: str | None = None, accession: str | None = None) -> str:
    base = server.rstrip("/")
    if base.lower().startswith("dicom://"):
        return f"{base}/{uid}" if uid else f"{base}/?AccessionNumber={quote(accession)}"
    base = base[: -len("/studies")] if base.endswith("/studies") else base
    return f"{base}/studies/{uid}" if uid else f"{base}/studies?AccessionNumber={quote(accession)}"


def read_study_list(path: Path, server: str | None) -> list[str]:
    """Study addresses from a CSV with a ``study`` (UID or full address) or ``accession`` column."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = {c.strip().lower(): c for c in reader.fieldnames or []}
        uid_column = next((columns[c] for c in UID_COLUMNS if c in columns), None)
        accession_column = next((columns[c] for c in ACCESSION_COLUMNS if c in columns), None)
        if uid_column is None and accession_column is None:
            raise InputError(f"{path}: a study list needs a 'study' (Study Instance UID) or 'accession' column")
        addresses = []
        for number, row in enumerate(reader, start=2):
            uid = (row.get(uid_column) or "").strip() if uid_column else ""
            accession = (row.get(accession_column) or "").strip() if accession_column else ""
            if not uid and not accession:
                continue
            if uid and is_remote(uid):
                addresses.append(uid)
                continue
            if server is None:
                raise InputError(f"{path} line {number}: a bare UID or accession number needs --server URL")
            addresses.append(_address(server, uid or None, None if uid else accession))
    if not addresses:
        raise InputError(f"{path}: no studies listed")
    return addresses


def expand_sources(sources: Sequence[str | Path], server: str | None) -> list[str]:
    """Replace each study-list CSV among ``sources`` by the addresses it lists."""
    out: list[str] = []
    for source in sources:
        path = Path(str(source))
        if path.suffix.lower() == ".csv" and path.is_file():
            out.extend(read_study_list(path, server))
        else:
            out.append(str(source))
    return out


@dataclass
class PullReport:
    """Where each fetched study went, and why the others were not fetched."""

    fetched: list[tuple[str, Path]] = field(default_factory=list)  # (address, cache folder)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (address, one-line reason)


def pull(addresses: Sequence[str], cache_dir: str | Path | None, calling_aet: str, progress: bool = True,
         move_port: int | None = None) -> PullReport:
    """``medcf pull``: fetch every study address into the cache (instances already there are
    kept, never rewritten), with a progress bar; one study's failure does not stop the rest.
    A malformed address is bad input and stops everything before the first fetch."""
    from tqdm import tqdm


    parsed = [(address, parse_remote(address)) for address in addresses]
    report = PullReport()
    targets = _match_queries(parsed, calling_aet, report)
    for address, study in tqdm(targets, desc="fetching studies", unit="study",
                               disable=not progress or len(targets) < 2):
        try:
            report.fetched.append((address, fetch_study(study, cache_dir, calling_aet, move_port)))
        except MedCFError as error:
            report.failed.append((address, " ".join(str(error).split())))
    return report


def _match_queries(parsed: Sequence[tuple[str, object]], calling_aet: str, report: PullReport) -> list[tuple]:
    """Each address without a Study Instance UID is a query (C-FIND or QIDO-RS: accession
    number, patient, study date range, modality): replaced by one address per study it
    matches. A query that matches nothing or cannot be asked goes to ``report.failed``."""
    targets: dict[str, tuple] = {}
    for address, study in parsed:
        if "StudyInstanceUID" in study.query:
            targets.setdefault(address, (address, study))
            continue
        try:
            uids = find_studies(study, calling_aet)
        except MedCFError as error:
            report.failed.append((address, " ".join(str(error).split())))
            continue
        if not uids:
            report.failed.append((address, f"no study matches {study.label}"))
        for uid in uids:
            found = study_address(study, uid)
            targets.setdefault(found, (found, replace(study, query={"StudyInstanceUID": uid})))
    return list(targets.values())


def fetch_sources(sources: Sequence[str], cache_dir: str | Path | None, calling_aet: str,
                  progress: bool = True, move_port: int | None = None) -> tuple[list[str], list[Study]]:
    """Local sources as they are, remote ones fetched into the cache (:func:`pull`); a study
    that could not be fetched (unreachable server, no match) comes back as an uneditable
    :class:`Study`, so that its items fail with the reason instead of stopping the batch."""
    local = [s for s in sources if not is_remote(s)]
    report = pull([s for s in sources if is_remote(s)], cache_dir, calling_aet, progress, move_port)
    local.extend(str(folder) for _, folder in report.fetched)
    unfetched = []
    for address, reason in report.failed:
        query = parse_remote(address).query
        name = query.get("StudyInstanceUID") or "&".join(f"{k}={v}" for k, v in query.items())
        unfetched.append(Study(uid=name, source=address, paths=(), selected=None,
                               reason=f"could not fetch {address}: {reason}", burned_in=False))
    return local, unfetched
