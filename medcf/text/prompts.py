"""Text prompts in radiology phrasing, built from structured findings.

One function for the simulated world's pair records, the generator's training
captions and the editor's conditioning, so that the model is always asked in
the words it learned from: "PA chest radiograph. Moderate left pleural
effusion." / "PA chest radiograph. Normal chest radiograph."
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from medcf.vocab import Finding, Lobe, Severity, Side, ViewPosition, Zone

NORMAL_PHRASE = "Normal chest radiograph."

_NOUNS = {
    Finding.PLEURAL_EFFUSION: "pleural effusion",
    Finding.CONSOLIDATION: "consolidation",
    Finding.ATELECTASIS: "atelectasis",
    Finding.CARDIOMEGALY: "cardiomegaly",
    Finding.PNEUMOTHORAX: "pneumothorax",
    Finding.NODULE: "nodule",
    Finding.EDEMA: "pulmonary edema",
}
# Size words radiologists use for nodules instead of mild/moderate/severe.
_NODULE_WORDS = {Severity.MILD: "Small", Severity.MODERATE: "", Severity.SEVERE: ""}


def view_phrase(view: ViewPosition) -> str:
    if view.is_lateral:
        return "Lateral chest radiograph."
    return f"{view.value} chest radiograph." if view.is_frontal else "Chest radiograph."


def finding_phrase(finding: Finding, side: Side | None = None, zone: Zone | None = None,
                   severity: Severity | None = None, count: int = 1, lobe: Lobe | None = None) -> str:
    """One sentence for one finding, e.g. "Moderate left lower zone consolidation." or,
    with a lobe, "Severe right lower lobe consolidation."."""
    noun = _NOUNS[finding]
    if finding is Finding.NODULE and severity is Severity.SEVERE:
        noun = "mass"
    if finding is Finding.NODULE and count > 1:
        noun = "nodules" if noun == "nodule" else "masses"
    words: list[str] = []
    if severity is not None:
        words.append(_NODULE_WORDS[severity] if finding is Finding.NODULE else severity.value)
    if lobe is not None:
        words.append(lobe.value.replace("_", " "))
    elif side is not None:
        words.append(side.value)
    if zone is not None and lobe is None and finding not in (Finding.PLEURAL_EFFUSION, Finding.PNEUMOTHORAX):
        words.append(f"{zone.value} zone")
    words.append(noun)
    text = " ".join(w for w in words if w)
    return text[0].upper() + text[1:] + "."


class PromptStyle(Protocol):
    """A model's own prompt style (:class:`medcf.models.convention.Convention`: a template
    from ``medcf_convention.json``)."""

    def format_prompt(self, view_sentence: str, finding_sentence: str | None) -> str: ...


def prompt(view: ViewPosition, finding: Finding | None = None, side: Side | None = None,
           zone: Zone | None = None, severity: Severity | None = None, count: int = 1,
           lobe: Lobe | None = None, style: PromptStyle | None = None) -> str:
    """The full prompt: view sentence plus the finding sentence, or the normal sentence;
    in ``style`` when the model has its own (None: MedCF's, the words the default model learned)."""
    body = None if finding is None else finding_phrase(finding, side, zone, severity, count, lobe)
    if style is not None:
        return style.format_prompt(view_phrase(view), body)
    return f"{view_phrase(view)} {NORMAL_PHRASE if body is None else body}"


class FindingLike(Protocol):
    """Anything that names a finding the way the world and the editor do."""

    finding: Finding
    side: Side | None
    zone: Zone | None
    severity: Severity | None
    count: int
    lobe: Lobe | None


def prompt_for(view: ViewPosition, findings: Sequence[FindingLike]) -> str:
    """View sentence plus one sentence per finding, or the normal sentence when there is none."""
    if not findings:
        return prompt(view)
    sentences = [finding_phrase(f.finding, f.side, f.zone, f.severity, f.count, f.lobe) for f in findings]
    return f"{view_phrase(view)} {' '.join(sentences)}"
