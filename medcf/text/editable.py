"""From a parsed report to what the editor can act on.

Only findings that are stated as present and certain, and that the editor
knows (:class:`medcf.vocab.Finding`), become editable: a hedged finding
("possible small effusion") is not a claim to add or remove. Two names map onto
editable ones because the editor draws the same thing for them:

* ``opacity`` -> ``consolidation`` (a focal lung opacity is drawn as airspace
  consolidation);
* ``mass`` -> ``nodule`` (a mass is a nodule over 3 cm; severity keeps the size: a mass
  the report gives no severity for is a severe nodule, the words
  :func:`medcf.text.prompts.finding_phrase` writes for one).

Repeats (same finding, side and zone, e.g. from FINDINGS and IMPRESSION) are
kept once, with the first evidence. The editor (issue 8, later) turns these
into edit specifications; nothing here edits images.
"""

from __future__ import annotations

from dataclasses import dataclass

from medcf.text.schema import Mention
from medcf.vocab import Finding, Severity, Side, Zone

ALIASES: dict[str, Finding] = {"opacity": Finding.CONSOLIDATION, "mass": Finding.NODULE}
# The size an alias implies when the report states none.
ALIAS_SEVERITY: dict[str, Severity] = {"mass": Severity.SEVERE}


@dataclass(frozen=True)
class EditableFinding:
    finding: Finding
    side: Side | None
    zone: Zone | None
    severity: Severity | None
    evidence: str


def editable_findings(mentions: list[Mention]) -> list[EditableFinding]:
    """Present, certain mentions whose finding the editor knows, in report order."""
    known = {f.value: f for f in Finding}
    out: list[EditableFinding] = []
    seen: set[tuple] = set()
    for m in mentions:
        if not m.present or m.uncertain:
            continue
        finding = known.get(m.finding) or ALIASES.get(m.finding)
        if finding is None:
            continue
        key = (finding, m.laterality, m.zone)
        if key in seen:
            continue
        seen.add(key)
        out.append(EditableFinding(
            finding=finding,
            side=Side(m.laterality) if m.laterality else None,
            zone=Zone(m.zone) if m.zone else None,
            severity=Severity(m.severity) if m.severity else ALIAS_SEVERITY.get(m.finding),
            evidence=m.evidence,
        ))
    return out
