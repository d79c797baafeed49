"""Which projection is this image, and which instance of a study should be edited?

A study often holds a lateral next to the frontal view, and sites fill the
view attributes unevenly. We consult the attributes in order of how much they
are to be trusted and keep the evidence, so that ``medcf inspect`` can say
*why* it chose an image, not only which.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydicom.dataset import Dataset

from medcf.vocab import ViewPosition

_VIEW_POSITION_WORDS = {
    "PA": ViewPosition.PA,
    "AP": ViewPosition.AP,
    "LL": ViewPosition.LL,
    "RL": ViewPosition.RL,
    "LAT": ViewPosition.LATERAL,
    "LATERAL": ViewPosition.LATERAL,
    "LLAT": ViewPosition.LL,
    "RLAT": ViewPosition.RL,
}


@dataclass(frozen=True)
class ViewEvidence:
    """A view and the attribute that told us."""

    view: ViewPosition
    evidence: str


def _from_view_code(ds: Dataset) -> ViewEvidence | None:
    for item in ds.get("ViewCodeSequence", []) or []:
        meaning = str(item.get("CodeMeaning", "")).lower()
        code = f"{item.get('CodeValue', '')}"
        if "postero-anterior" in meaning or "posteroanterior" in meaning or "postero anterior" in meaning:
            view = ViewPosition.PA
        elif "antero-posterior" in meaning or "anteroposterior" in meaning or "antero posterior" in meaning:
            view = ViewPosition.AP
        elif "left lateral" in meaning:
            view = ViewPosition.LL
        elif "right lateral" in meaning:
            view = ViewPosition.RL
        elif "lateral" in meaning:
            view = ViewPosition.LATERAL
        else:
            continue
        return ViewEvidence(view, f'View Code Sequence (0054,0220) = {code} "{item.get("CodeMeaning", "")}"')
    return None


def _from_patient_orientation(ds: Dataset) -> ViewEvidence | None:
    orientation = ds.get("PatientOrientation")
    if not orientation or len(orientation) < 2:
        return None
    row_dir = str(orientation[0]).upper()[:1]
    value = "\\".join(str(v) for v in orientation)
    if row_dir in ("L", "R"):
        # Rows run across the patient: a frontal projection; PA vs AP is not encoded here.
        return ViewEvidence(ViewPosition.UNKNOWN, f"Patient Orientation (0020,0020) = {value} (frontal)")
    if row_dir in ("A", "P"):
        return ViewEvidence(ViewPosition.LATERAL, f"Patient Orientation (0020,0020) = {value} (lateral)")
    return None


def _from_text(ds: Dataset) -> ViewEvidence | None:
    for keyword in ("SeriesDescription", "ProtocolName", "AcquisitionDeviceProcessingDescription"):
        text = str(ds.get(keyword, "") or "").upper()
        words = re.findall(r"[A-Z]+", text)
        for word in words:
            if word in _VIEW_POSITION_WORDS:
                return ViewEvidence(_VIEW_POSITION_WORDS[word], f'{keyword} "{ds.get(keyword)}" names {word}')
            if word in ("FRONTAL", "PORTABLE"):
                view = ViewPosition.AP if word == "PORTABLE" else ViewPosition.UNKNOWN
                return ViewEvidence(view, f'{keyword} "{ds.get(keyword)}" names {word} (frontal)')
    return None


def classify_view(ds: Dataset) -> tuple[ViewEvidence, bool]:
    """Return the view with its evidence, and whether the image is frontal.

    Order of trust: View Position, View Code Sequence, Patient Orientation,
    then series/protocol text. A frontal image whose PA/AP is unknown is still
    frontal (``ViewPosition.UNKNOWN`` with ``is_frontal=True``).
    """
    raw = str(ds.get("ViewPosition", "") or "").strip().upper()
    if raw in _VIEW_POSITION_WORDS:
        view = _VIEW_POSITION_WORDS[raw]
        return ViewEvidence(view, f"View Position (0018,5101) = {raw}"), view.is_frontal
    for source in (_from_view_code, _from_patient_orientation, _from_text):
        found = source(ds)
        if found is not None:
            frontal = found.view.is_frontal or (
                found.view is ViewPosition.UNKNOWN and "frontal" in found.evidence
            )
            return found, frontal
    return ViewEvidence(ViewPosition.UNKNOWN, "no view attribute (View Position, View Code, "
                        "Patient Orientation, descriptions) names the projection"), False
