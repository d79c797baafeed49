"""Find, inspect and load the chest radiograph to edit from files or folders.

``inspect_study`` reads headers only and explains what it found;
``load_radiograph`` decodes the one instance it selects and returns a
:class:`Radiograph` in display space. Inputs can be a file, a series folder,
a study folder with several series, or a list of any of these.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from tqdm import tqdm

from medcf.errors import InputError
from medcf.io.checks import (
    ACCEPTED_SOP_CLASSES,
    DX_FOR_PROCESSING,
    SECONDARY_CAPTURE,
    check_instance,
    optional_int,
    transfer_syntax_name,
    transfer_syntax_of,
)
from medcf.io.display import DisplayTransform, pixel_spacing, to_display
from medcf.io.views import classify_view
from medcf.vocab import Photometric, SpacingSource, ViewPosition

PathLike = Union[str, os.PathLike]
Inputs = Union[PathLike, Sequence[PathLike]]

# Values larger than this are not read while inspecting (pixel data above all).
_HEADER_DEFER_SIZE = "2 KB"


@dataclass(frozen=True)
class InstanceSummary:
    """What MedCF sees in one DICOM instance, from its header alone."""

    path: Path
    sop_instance_uid: str
    series_instance_uid: str
    series_number: int | None
    instance_number: int | None
    modality: str
    sop_class: str
    view: ViewPosition
    view_evidence: str
    frontal: bool
    rows: int
    columns: int
    bits_allocated: int | None
    bits_stored: int | None
    photometric: str
    transfer_syntax: str
    transfer_syntax_uid: str
    spacing_mm: tuple[float, float] | None
    spacing_source: SpacingSource
    problems: tuple[str, ...]

    @property
    def editable(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "sop_instance_uid": self.sop_instance_uid,
            "series_instance_uid": self.series_instance_uid,
            "series_number": self.series_number,
            "instance_number": self.instance_number,
            "modality": self.modality,
            "sop_class": self.sop_class,
            "view": self.view.value,
            "view_evidence": self.view_evidence,
            "frontal": self.frontal,
            "rows": self.rows,
            "columns": self.columns,
            "bits_allocated": self.bits_allocated,
            "bits_stored": self.bits_stored,
            "photometric": self.photometric,
            "transfer_syntax": self.transfer_syntax,
            "transfer_syntax_uid": self.transfer_syntax_uid,
            "spacing_mm": list(self.spacing_mm) if self.spacing_mm else None,
            "spacing_source": self.spacing_source.value,
            "editable": self.editable,
            "problems": list(self.problems),
        }


@dataclass(frozen=True)
class StudyInspection:
    """All instances found under the inputs, and which one would be edited."""

    inputs: tuple[str, ...]
    instances: tuple[InstanceSummary, ...]
    skipped: tuple[tuple[str, str], ...]  # (path, why) for files that are not DICOM
    selected: InstanceSummary | None
    selection_reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": list(self.inputs),
            "instances": [i.to_dict() for i in self.instances],
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "selected": self.selected.sop_instance_uid if self.selected else None,
            "selected_path": str(self.selected.path) if self.selected else None,
            "selection_reason": self.selection_reason,
            "problems": self.problems,
        }

    @property
    def problems(self) -> list[str]:
        found = [f"{i.path.name}: {p}" for i in self.instances for p in i.problems]
        found += [f"{Path(p).name}: {r}" for p, r in self.skipped]
        if self.selected is None:
            found.append(self.selection_reason)
        return found


@dataclass
class Radiograph:
    """A chest radiograph ready for MedCF: display pixels plus what they came from.

    ``display`` is float32 in [0, 1], MONOCHROME2 sense (bright = dense), with
    the VOI window and polarity applied; ``stored`` holds the decoded stored
    values untouched. ``dataset`` is the source with its pixel data, kept so
    that outputs can copy patient/study context and reference the source.
    """

    display: np.ndarray
    stored: np.ndarray
    spacing_mm: tuple[float, float] | None
    spacing_source: SpacingSource
    view: ViewPosition
    photometric: Photometric
    dataset: Dataset
    path: Path | None
    transform: DisplayTransform
    selection_reason: str = ""
    summary: InstanceSummary | None = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.display.shape[0]), int(self.display.shape[1])

    @property
    def sop_instance_uid(self) -> str:
        return str(self.dataset.SOPInstanceUID)


def _as_paths(inputs: Inputs) -> list[Path]:
    if isinstance(inputs, (str, os.PathLike)):
        items: Iterable[PathLike] = [inputs]
    else:
        items = inputs
    paths = [Path(p) for p in items]
    if not paths:
        raise InputError("no input given: name a DICOM file, series folder or study folder")
    for path in paths:
        if not path.exists():
            raise InputError(f"no such file or directory: {path}")
    return paths


def _candidate_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            for root, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                files.extend(
                    Path(root, n) for n in sorted(names) if not n.startswith(".") and n.upper() != "DICOMDIR"
                )
        else:
            files.append(path)
    return files


def read_dataset(path: Path, **kwargs: Any) -> Dataset:
    """Read a DICOM file, also one without the 128-byte preamble (old PACS exports).

    A preamble-less file is accepted only if it parses into an image dataset
    (SOP Class UID or Rows present), so that a text or PNG file is never taken
    for DICOM. Raises InputError with a one-line reason otherwise.
    """
    try:
        return pydicom.dcmread(path, **kwargs)
    except InvalidDicomError:
        pass
    except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"{path} could not be read as DICOM: {_first_line(exc)}") from None
    try:
        with warnings.catch_warnings():  # guessing at a non-DICOM file warns; the verdict says it all
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, force=True, **kwargs)
        if "SOPClassUID" in ds or "Rows" in ds:
            if "TransferSyntaxUID" not in ds.file_meta:
                ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
            return ds
    except Exception:  # noqa: BLE001 - any parse failure means "not DICOM" here
        pass
    raise InputError(f"{path} is not a DICOM file (no DICM preamble or recognisable header)")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _read_header(path: Path) -> Dataset:
    """Read a DICOM header; pixel data stays on disk."""
    return read_dataset(path, defer_size=_HEADER_DEFER_SIZE)


def summarize(path: Path, ds: Dataset) -> InstanceSummary:
    """Describe one instance from its header."""
    evidence, frontal = classify_view(ds)
    spacing, source = pixel_spacing(ds)
    uid = transfer_syntax_of(ds)
    sop_class = str(ds.get("SOPClassUID", ""))
    return InstanceSummary(
        path=path,
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
        series_number=optional_int(ds.get("SeriesNumber")),
        instance_number=optional_int(ds.get("InstanceNumber")),
        modality=str(ds.get("Modality", "")),
        sop_class=ACCEPTED_SOP_CLASSES.get(sop_class, pydicom.uid.UID(sop_class).name if sop_class else ""),
        view=evidence.view,
        view_evidence=evidence.evidence,
        frontal=frontal,
        rows=int(ds.get("Rows", 0) or 0),
        columns=int(ds.get("Columns", 0) or 0),
        bits_allocated=optional_int(ds.get("BitsAllocated")),
        bits_stored=optional_int(ds.get("BitsStored")),
        photometric=str(ds.get("PhotometricInterpretation", "")),
        transfer_syntax=transfer_syntax_name(uid),
        transfer_syntax_uid=str(uid) if uid else "",
        spacing_mm=spacing,
        spacing_source=source,
        problems=tuple(check_instance(ds)),
    )


def _preference(summary: InstanceSummary) -> tuple:
    """Sort key: PA before AP before unknown; presentation before processing;
    acquisitions before captures; larger matrices; then series/instance order."""
    view_rank = {ViewPosition.PA: 0, ViewPosition.AP: 1}.get(summary.view, 2)
    sop = summary.sop_class
    return (
        view_rank,
        sop == ACCEPTED_SOP_CLASSES[DX_FOR_PROCESSING],
        sop == ACCEPTED_SOP_CLASSES[SECONDARY_CAPTURE],
        -summary.rows * summary.columns,
        summary.series_number if summary.series_number is not None else 1 << 30,
        summary.instance_number if summary.instance_number is not None else 1 << 30,
        str(summary.path),
    )


def select_frontal(instances: Sequence[InstanceSummary]) -> tuple[InstanceSummary | None, str]:
    """Pick the instance to edit and say why, or None with the reason none fits."""
    if not instances:
        return None, "no DICOM instance found"
    editable = [i for i in instances if i.editable]
    if not editable:
        if len(instances) == 1:
            return None, instances[0].problems[0]
        return None, f"none of the {len(instances)} instances can be edited: {instances[0].problems[0]}"
    frontal = [i for i in editable if i.frontal]
    unknown = [i for i in editable if not i.frontal and not i.view.is_lateral]
    lateral = [i for i in editable if i.view.is_lateral]
    refused = len(instances) - len(editable)
    if frontal:
        pool, how = frontal, "frontal by "
    elif unknown:
        pool, how = unknown, "no attribute names a frontal view; chosen as the only non-lateral kind: "
    else:
        return None, (
            f"only lateral views found ({lateral[0].view_evidence}); "
            "MedCF edits frontal (PA/AP) chest radiographs"
        )
    ranked = sorted(pool, key=_preference)
    chosen = ranked[0]
    parts = [how + chosen.view_evidence]
    if len(ranked) > 1:
        parts.append(
            f"preferred over {len(ranked) - 1} other candidate(s) "
            "(order: PA, AP; for presentation over for processing; acquisition over capture; larger matrix)"
        )
    if lateral:
        parts.append(f"{len(lateral)} lateral view(s) left aside")
    if refused:
        parts.append(f"{refused} instance(s) not editable")
    return chosen, "; ".join(parts)


def inspect_study(inputs: Inputs) -> StudyInspection:
    """Summarise every DICOM instance under ``inputs`` and choose the one to edit.

    Headers only: fast on large studies. A single named file that is not DICOM
    is an error; non-DICOM files inside folders are listed as skipped.
    """
    paths = _as_paths(inputs)
    named_files = {p for p in paths if not p.is_dir()}
    instances: list[InstanceSummary] = []
    skipped: list[tuple[str, str]] = []
    files = _candidate_files(paths)
    progress = tqdm(files, desc="reading DICOM headers", unit="file", file=sys.stderr,
                    disable=True if len(files) < 50 else None)  # None: only on a terminal
    for path in progress:
        try:
            ds = _read_header(path)
        except InputError as exc:
            if path in named_files:
                raise
            skipped.append((str(path), str(exc).replace(f"{path} ", "", 1)))
            continue
        instances.append(summarize(path, ds))
    if not instances:
        where = ", ".join(str(p) for p in paths)
        raise InputError(f"no DICOM files found in {where}")
    selected, reason = select_frontal(instances)
    return StudyInspection(
        inputs=tuple(str(p) for p in paths),
        instances=tuple(instances),
        skipped=tuple(skipped),
        selected=selected,
        selection_reason=reason,
    )


# Faster plugin per transfer syntax, used when installed (same pixels; measured by
# benchmarks/bench_io.py: JPEG-LS 2800x2300 decodes in 0.19 s with pyjpegls vs 0.65 s).
_PREFERRED_DECODERS = {
    "1.2.840.10008.1.2.4.80": "pyjpegls",
    "1.2.840.10008.1.2.4.81": "pyjpegls",
}


def _preferred_plugin(ds: Dataset) -> str:
    uid = transfer_syntax_of(ds)
    plugin = _PREFERRED_DECODERS.get(str(uid), "") if uid else ""
    if plugin:
        from pydicom.pixels import get_decoder

        if plugin not in get_decoder(uid).available_plugins:
            return ""
    return plugin


def read_pixels(ds: Dataset, path: Path | None = None) -> np.ndarray:
    """Decode the single frame of ``ds`` into a 2-D array of stored values."""
    where = f" of {path}" if path else ""
    try:
        plugin = _preferred_plugin(ds)
        if plugin:
            ds.pixel_array_options(decoding_plugin=plugin)
        stored = ds.pixel_array
    except (ValueError, RuntimeError, NotImplementedError, AttributeError, KeyError, TypeError, OSError) as exc:
        raise InputError(f"pixel data{where} could not be decoded: {_first_line(exc)}") from None
    if stored.ndim != 2:
        raise InputError(f"pixel data{where} has shape {stored.shape}; a single grayscale frame is required")
    return stored


def radiograph_from_dataset(
    ds: Dataset, path: Path | None = None, summary: InstanceSummary | None = None, reason: str = ""
) -> Radiograph:
    """Build a :class:`Radiograph` from a full dataset already in memory."""
    summary = summary or summarize(path or Path("<memory>"), ds)
    if summary.problems:
        raise InputError(f"{path or 'dataset'}: {summary.problems[0]}")
    stored = read_pixels(ds, path)
    display, transform = to_display(ds, stored)
    return Radiograph(
        display=display,
        stored=stored,
        spacing_mm=summary.spacing_mm,
        spacing_source=summary.spacing_source,
        view=summary.view,
        photometric=Photometric.parse(str(ds.PhotometricInterpretation)),
        dataset=ds,
        path=path,
        transform=transform,
        selection_reason=reason,
        summary=summary,
    )


def load_radiograph(inputs: Inputs) -> Radiograph:
    """Load the frontal chest radiograph found under ``inputs``.

    Raises :class:`~medcf.errors.InputError` with a one-line reason when the
    inputs hold nothing MedCF can edit.
    """
    inspection = inspect_study(inputs)
    chosen = inspection.selected
    if chosen is None:
        raise InputError(inspection.selection_reason)
    ds = read_dataset(chosen.path)
    return radiograph_from_dataset(ds, chosen.path, chosen, inspection.selection_reason)

