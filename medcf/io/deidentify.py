"""De-identify MedCF's synthetic DICOM outputs for research exports (DICOM PS3.15 Annex E).

Profile: the **Basic Application Level Confidentiality Profile** (113100) with the
**Clean Descriptors Option** (113105, always: the Series Description "SYNTHETIC …", the
Derivation Description and the synthesizing equipment's Contribution Description are
synthetic markers that the Basic profile alone would remove; MedCF keeps them only in
the form it writes itself, which holds no source text) and, when asked,
**Retain Patient Characteristics** (113108), **Retain Device Identity** (113109) and
**Retain Institution Identity** (113112). They are recorded in De-identification Method
Code Sequence; Patient Identity Removed = YES; Longitudinal Temporal Information
Modified = REMOVED (dates and times are emptied or removed, not shifted).

Where the tables come from: the Basic profile's actions per attribute (D, Z, X, U and
their combinations) are those of PS3.15 Table E.1-1 as shipped, machine-extracted from
the standard (edition 2026c), by the maintained ``dicom-anonymizer`` package
(KitwareMedical; pure Python, depends on pydicom and tqdm only). Only its tables are used:
its actions keep a process-global UID map and write dummy values, while a batch needs a
persisted pseudonym table and must keep the synthetic markers. ``dicognito`` and
``deid`` were considered: neither ships Table E.1-1 (dicognito applies its own
heuristic list and invents realistic fake names, which for synthetic images would look
like real patients; ``deid``'s default recipe is a pixel-region filter list and pulls in
matplotlib). The option columns of Table E.1-1 are not in that package: the attributes
each option keeps are listed in :data:`OPTION_KEEPS` below, by hand, for the attributes
MedCF's outputs can carry (the source's patient, study and equipment attributes).

Pseudonyms are random (never derived from the identity), kept in a JSON table at a path
the user names (:class:`PseudonymTable`): the same patient gets the same pseudonym, and
each original UID the same new UID, across a batch, its resumption and later batches
that reuse the table. The table identifies patients; it is never written into the export.
"""

from __future__ import annotations

import json
import re
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

import medcf
from medcf.errors import InputError, OutputError
from medcf.io.atomic import replace_own_text, write_new_dataset, write_new_text
from medcf.vocab import StrEnum

TABLE_EDITION = "dicomfields_2026c"  # dicom-anonymizer's extraction of PS3.15 Table E.1-1
MAP_FORMAT = "medcf-deid-map/1"


class DeidOption(StrEnum):
    """PS3.15 profile and options (CID 7050, De-identification Method), as MedCF names them."""

    BASIC = "basic"
    CLEAN_DESCRIPTORS = "clean-descriptors"
    RETAIN_PATIENT_CHARACTERISTICS = "retain-patient-characteristics"
    RETAIN_DEVICE_IDENTITY = "retain-device-identity"
    RETAIN_INSTITUTION_IDENTITY = "retain-institution-identity"

    @property
    def code(self) -> tuple[str, str]:
        """(code value, code meaning) in the DCM scheme."""
        return _CODES[self]


_CODES = {
    DeidOption.BASIC: ("113100", "Basic Application Confidentiality Profile"),
    DeidOption.CLEAN_DESCRIPTORS: ("113105", "Clean Descriptors Option"),
    DeidOption.RETAIN_PATIENT_CHARACTERISTICS: ("113108", "Retain Patient Characteristics Option"),
    DeidOption.RETAIN_DEVICE_IDENTITY: ("113109", "Retain Device Identity Option"),
    DeidOption.RETAIN_INSTITUTION_IDENTITY: ("113112", "Retain Institution Identity Option"),
}
ALWAYS = (DeidOption.BASIC, DeidOption.CLEAN_DESCRIPTORS)

# Attributes an option keeps that the Basic profile would remove or empty (PS3.15 Table
# E.1-1 option columns, transcribed for what MedCF outputs can carry).
OPTION_KEEPS: dict[DeidOption, tuple[str, ...]] = {
    DeidOption.RETAIN_PATIENT_CHARACTERISTICS: (
        "PatientSex", "PatientAge", "PatientSize", "PatientWeight", "EthnicGroup", "SmokingStatus",
        "PregnancyStatus", "PatientSexNeutered"),
    DeidOption.RETAIN_DEVICE_IDENTITY: (
        "DeviceSerialNumber", "StationName", "DetectorID", "DeviceUID", "PlateID", "CassetteID", "GantryID"),
    DeidOption.RETAIN_INSTITUTION_IDENTITY: (
        "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "InstitutionCodeSequence",
        "InstitutionalDepartmentTypeCodeSequence"),
}

# Clean Descriptors: the descriptors MedCF writes itself, kept when they have MedCF's form;
# any other descriptor is removed as the Basic profile says. StudyDescription carries the
# source's text after "derived from:", so it is replaced by a fixed one.
CLEAN_STUDY_DESCRIPTION = "SYNTHETIC research derived image"


def _clean_descriptor(keyword: str, value: str, dataset: Dataset) -> str | None:
    """The cleaned value of a descriptor MedCF wrote, or None to remove it."""
    if keyword == "StudyDescription":
        return CLEAN_STUDY_DESCRIPTION if value.upper().startswith("SYNTHETIC") else None
    if keyword == "SeriesDescription" and value.upper().startswith("SYNTHETIC MEDCF"):
        return value
    if keyword == "DerivationDescription" and value.startswith("MedCF="):
        return value
    if keyword == "ContributionDescription":
        purpose = dataset.get("PurposeOfReferenceCodeSequence")
        if purpose and str(purpose[0].CodeValue) in ("109100", "109102"):  # synthesizing / processing software
            return value
    return None


_NUMERIC = ("US", "SS", "UL", "SL", "FL", "FD", "UV", "SV")
DESCRIPTORS = ("StudyDescription", "SeriesDescription", "DerivationDescription", "ContributionDescription")


@dataclass(frozen=True)
class ProfileTable:
    """Tag → Basic-profile action ("D", "Z", "X", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"),
    exact tags plus the repeating groups (overlays 60xx, curves 50xx) as masked tags."""

    exact: dict[int, str]
    masked: tuple[tuple[int, int, str], ...]  # (tag, mask, action)

    def get(self, tag: int) -> str | None:
        action = self.exact.get(tag)
        if action is None:
            action = next((a for value, mask, a in self.masked if tag & mask == value), None)
        return action


def _profile_tables() -> ProfileTable:
    """The Basic profile's actions, from dicom-anonymizer's copy of PS3.15 Table E.1-1."""
    try:
        from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector
    except ImportError:
        raise InputError("de-identification needs the package dicom-anonymizer (pip install "
                         "dicom-anonymizer==2.1.0), whose PS3.15 tables MedCF uses") from None
    names = {"D_TAGS": "D", "Z_TAGS": "Z", "X_TAGS": "X", "U_TAGS": "U", "Z_D_TAGS": "Z/D", "X_Z_TAGS": "X/Z",
             "X_D_TAGS": "X/D", "X_Z_D_TAGS": "X/Z/D", "X_Z_U_STAR_TAGS": "X/Z/U*"}
    database = dicom_anonymization_database_selector(TABLE_EDITION)
    exact: dict[int, str] = {}
    masked: list[tuple[int, int, str]] = []
    for category, action in names.items():
        for entry in database[category]:
            if len(entry) == 2:
                exact[(entry[0] << 16) | entry[1]] = action
            else:  # (group, element, group mask, element mask)
                group, element, group_mask, element_mask = entry
                mask = (group_mask << 16) | element_mask
                masked.append((((group << 16) | element) & mask, mask, action))
    return ProfileTable(exact, tuple(masked))


class PseudonymTable:
    """Original patient keys and UIDs → pseudonyms, persisted at a path the user names.

    Saved atomically (:func:`medcf.io.atomic.replace_own_text`: temp file, fsync, rename) so
    that a kill never leaves a half-written table; the batch saves it before publishing any result that uses it.
    ``path=None``: a table for one object, kept in memory only (``write_synthetic(deidentify=True)``)."""

    def __init__(self, path: Path | None, patients: dict[str, str] | None = None, uids: dict[str, str] | None = None):
        self.path = Path(path) if path is not None else None
        self.patients = patients or {}
        self.uids = uids or {}
        self._dirty = False

    @classmethod
    def open(cls, path: str | Path) -> "PseudonymTable":
        path = Path(path)
        if not path.exists():
            return cls(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise InputError(f"--deid-map {path} is not a MedCF pseudonym table: {error}") from None
        if data.get("format") != MAP_FORMAT:
            raise InputError(f"--deid-map {path} is not a MedCF pseudonym table (format {data.get('format')!r})")
        return cls(path, data.get("patients", {}), data.get("uids", {}))

    def patient(self, key: str) -> str:
        if key not in self.patients:
            taken = set(self.patients.values())
            while (pseudonym := f"ANON-{secrets.token_hex(6).upper()}") in taken:
                pass
            self.patients[key] = pseudonym
            self._dirty = True
        return self.patients[key]

    def uid(self, original: str) -> str:
        if original not in self.uids:
            self.uids[original] = f"2.25.{uuid.uuid4().int}"
            self._dirty = True
        return self.uids[original]

    def save(self) -> None:
        if self.path is None:
            raise OutputError("this pseudonym table lives in memory only; it has no path to be saved to")
        if not self._dirty and self.path.exists():
            return
        text = json.dumps({"format": MAP_FORMAT, "warning": "identifies patients: keep it apart from the export",
                           "patients": self.patients, "uids": self.uids}, indent=1)
        replace_own_text(self.path, text, private=True)
        self._dirty = False


def patient_key(patient_id: str, patient_name: str, study_uid: str) -> str:
    """Who a source belongs to: Patient ID, else Patient's Name, else only this study."""
    if patient_id.strip():
        return f"id:{patient_id.strip()}"
    if patient_name.strip():
        return f"name:{patient_name.strip()}"
    return f"study:{study_uid}"


@dataclass
class Deidentification:
    """What :func:`deidentify_dataset` did to one dataset (for tests and the record)."""

    removed: list[str] = field(default_factory=list)
    emptied: list[str] = field(default_factory=list)
    remapped: dict[str, str] = field(default_factory=dict)


def deidentify_dataset(ds: Dataset, table: PseudonymTable, patient: str, options: Iterable[DeidOption],
                       burned_in: bool = False, name: str | None = None) -> Deidentification:
    """De-identify ``ds`` in place: Basic profile actions from Table E.1-1, the options'
    exceptions, private attributes removed, every other Person Name emptied, UIDs remapped
    through ``table``; Patient ID and Name become the patient's pseudonym. The synthetic
    markers are checked to be still there afterwards."""
    options = tuple(dict.fromkeys((*ALWAYS, *options)))
    keep = {kw for option in options for kw in OPTION_KEEPS.get(option, ())}
    actions = _profile_tables()
    done = Deidentification()
    ds.remove_private_tags()

    def visit(dataset: Dataset) -> None:
        for element in list(dataset):
            keyword = element.keyword or str(element.tag)
            if keyword in ("PatientID", "PatientName"):
                dataset[element.tag].value = patient if keyword == "PatientID" else (name or patient)
                continue
            action = actions.get(int(element.tag))
            if keyword in keep:
                action = None
            if keyword in DESCRIPTORS:
                cleaned = _clean_descriptor(keyword, str(element.value), dataset)
                if cleaned is None:
                    del dataset[element.tag]
                    done.removed.append(keyword)
                else:
                    element.value = cleaned
                continue
            if action == "X/Z/U*":
                for item in element.value or []:
                    visit(item)  # keep the reference (a synthetic marker), replace the UIDs it holds
            elif action in ("X", "X/D", "X/Z/D"):
                del dataset[element.tag]
                done.removed.append(keyword)
            elif action in ("Z", "Z/D", "X/Z", "D"):
                # D would allow a dummy value; an empty one holds no identity either.
                element.value = [] if element.VR == "SQ" else ("" if element.VR not in _NUMERIC else None)
                done.emptied.append(keyword)
            elif action == "U":
                if element.value:
                    element.value = _remap(element.value, table, done)
            elif element.VR == "SQ":
                for item in element.value or []:
                    visit(item)
            elif element.VR == "PN" and element.value:
                element.value = ""  # a name the table does not list is still a name
                done.emptied.append(keyword)

    visit(ds)
    if "SOPInstanceUID" in ds and hasattr(ds, "file_meta"):
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientIdentityRemoved = "NO" if burned_in else "YES"
    ds.LongitudinalTemporalInformationModified = "REMOVED"
    # The options are coded in the sequence below; the text names the profile and the table used.
    ds.DeidentificationMethod = (f"MedCF {medcf.__version__} PS3.15 Basic+opts E.1-1 {TABLE_EDITION[-5:]}"
                                 + ("; burned-in text kept" if burned_in else ""))[:64]
    ds.DeidentificationMethodCodeSequence = [_code(o) for o in options]
    if burned_in:
        ds.BurnedInAnnotation = "YES"  # the source's text is in the pixels it was derived from
    _check_markers(ds)
    return done


def _remap(value, table: PseudonymTable, done: Deidentification):
    if isinstance(value, (list, pydicom.multival.MultiValue)):
        return [_remap(v, table, done) for v in value]
    new = table.uid(str(value))
    done.remapped[str(value)] = new
    return new


def _code(option: DeidOption) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = option.code[0], "DCM", option.code[1]
    return item


def _check_markers(ds: Dataset) -> None:
    """Refuse to write a de-identified output that lost a synthetic marker (dicom.md)."""
    problems = []
    if str(ds.get("SyntheticData", "")) != "YES":
        problems.append("Synthetic Data")
    if list(ds.get("ImageType", []))[:2] != ["DERIVED", "SECONDARY"]:
        problems.append("Image Type")
    if not str(ds.get("SeriesDescription", "")).upper().startswith("SYNTHETIC"):
        problems.append("Series Description")
    if "DerivationDescription" not in ds or "SourceImageSequence" not in ds:
        problems.append("Derivation Description / Source Image Sequence")
    equipment = ds.get("ContributingEquipmentSequence") or []
    if not any(str(i.PurposeOfReferenceCodeSequence[0].CodeValue) == "109100" for i in equipment
               if i.get("PurposeOfReferenceCodeSequence")):
        problems.append("Synthesizing Equipment")
    if problems:
        raise OutputError(f"de-identification would remove synthetic marker(s): {', '.join(problems)}")


_UID_TOKEN = re.compile(r"(?<![0-9.])[0-9]+(?:\.[0-9]+){3,}(?![0-9]|\.[0-9])")


def scrub_json(text: str, table: PseudonymTable, identities: dict[str, str]) -> str:
    """A provenance JSON fit for the export: every UID that is not a registered DICOM UID
    replaced through ``table`` (the same new UID the DICOM files got), identities replaced
    by the pseudonym, and paths, commands and file digests of the source dropped (they
    name or fingerprint the identified input)."""
    for original, new in sorted(identities.items(), key=lambda kv: -len(kv[0])):
        if original:
            text = text.replace(original, new)
    issued = set(table.uids.values())

    def uid(match: re.Match) -> str:
        token = match.group(0)
        if token in issued or pydicom.uid.UID(token).name != token:  # ours, or a registered DICOM UID
            return token
        return table.uid(token)

    text = _UID_TOKEN.sub(uid, text)

    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if k not in ("path", "command", "sha256", "cwd")}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return json.dumps(clean(json.loads(text)), indent=2) + "\n"


class Deidentifier:
    """De-identifies each batch result before it is published (``medcf batch --deidentify``)."""

    def __init__(self, table: PseudonymTable, options: Iterable[DeidOption]):
        self.table = table
        self.options = tuple(dict.fromkeys((*ALWAYS, *options)))
        _profile_tables()  # a missing package fails before any edit

    @classmethod
    def open(cls, map_path: str | Path, options: Iterable[DeidOption], out_dir: str | Path | None = None
             ) -> "Deidentifier":
        map_path = Path(map_path)
        if out_dir is not None:
            out = Path(out_dir).resolve()
            if out == map_path.resolve().parent or out in map_path.resolve().parents:
                raise InputError(f"--deid-map {map_path} is inside --out {out_dir}: the table identifies patients, "
                                 "keep it outside the export")
        return cls(PseudonymTable.open(map_path), options)

    def save(self) -> None:
        """Persist pseudonyms handed out so far (before any manifest line names them)."""
        self.table.save()

    def public_key(self, item) -> str:
        """The item's key with the study named by its pseudonymous UID."""
        return f"{self.table.uid(item.study.uid)}/{item.slug}"

    def public_source(self, item) -> str:
        return f"study {self.table.uid(item.study.uid)}"

    def apply_to_edit_folder(self, folder: Path, item, allow_burned_in: bool) -> None:
        """De-identify an unpublished ``edit_file`` folder in place: its DICOM files
        (renamed to their new SOP Instance UIDs) and JSON records; the panel is removed
        (its title names the input file). Saves the table before returning."""
        study = item.study
        pseudonym = self.table.patient(patient_key(study.patient_id, study.patient_name, study.uid))
        identities = {v: pseudonym for v in (study.patient_id, study.patient_name) if v and len(v) > 2}
        identities[str(study.source)] = "source"
        uids: dict[str, str] = {study.uid: self.table.uid(study.uid)}
        pseudonym_name = pseudonym.replace("-", "^", 1)  # a Person Name with its family^given form
        for path in sorted((folder / "dicom").glob("*.dcm")):
            ds = pydicom.dcmread(path)
            if str(ds.get("BurnedInAnnotation", "")).upper() == "YES" and not allow_burned_in:
                raise OutputError(f"{path.name} says Burned In Annotation = YES; refused without --allow-burned-in")
            done = deidentify_dataset(ds, self.table, pseudonym, self.options, burned_in=study.burned_in,
                                      name=pseudonym_name)
            uids.update(done.remapped)
            write_new_dataset(path.parent / f"{ds.SOPInstanceUID}.dcm", ds)
            path.unlink()
        for path in sorted(folder.rglob("*.json")):
            text = scrub_json(path.read_text(encoding="utf-8"), self.table, identities)
            name = path.name
            for original, new in uids.items():
                name = name.replace(original, new)
            target = path.parent / name
            path.unlink()
            write_new_text(target, text)
        (folder / "panel.png").unlink(missing_ok=True)
        self.table.save()
