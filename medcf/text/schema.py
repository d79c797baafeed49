"""The one output schema every report-reader backend returns, and its validator.

Issue 8 fixes the JSON exactly::

    {"findings": [{"finding": str, "present": bool, "uncertain": bool,
                   "laterality": "left"|"right"|"bilateral"|null,
                   "zone": "upper"|"middle"|"lower"|null,
                   "severity": "mild"|"moderate"|"severe"|null,
                   "evidence": str}]}

Both the rule backend and the LLM backend go through :func:`validate_report`, so
a model that answers with an unknown finding name or an extra key is refused in
one line instead of leaking a malformed record to the editor.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from medcf.errors import InputError
from medcf.vocab import ReportFinding, Severity, Side, Zone

FIELDS = ("finding", "present", "uncertain", "laterality", "zone", "severity", "evidence")
_CHOICES: dict[str, frozenset[str]] = {
    "finding": frozenset(m.value for m in ReportFinding),
    "laterality": frozenset(m.value for m in Side),
    "zone": frozenset(m.value for m in Zone),
    "severity": frozenset(m.value for m in Severity),
}


@dataclass(frozen=True)
class Mention:
    """One statement about one finding: what, whether, where, how much, and the
    sentence that says so (``evidence``), so a person can check every claim."""

    finding: str
    present: bool
    uncertain: bool
    laterality: str | None
    zone: str | None
    severity: str | None
    evidence: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def report_to_dict(mentions: list[Mention]) -> dict[str, Any]:
    """The schema's top-level object."""
    return {"findings": [m.to_dict() for m in mentions]}


def validate_report(data: Any, source: str = "report") -> list[Mention]:
    """Check ``data`` against the schema and return its mentions.

    Raises :class:`InputError` naming the first problem (``source`` says whose
    answer it was) so that callers print one line.
    """
    if not isinstance(data, dict) or set(data) != {"findings"} or not isinstance(data["findings"], list):
        raise InputError(f"{source}: expected an object with exactly one key 'findings' holding a list")
    mentions = []
    for index, item in enumerate(data["findings"]):
        where = f"{source}: findings[{index}]"
        if not isinstance(item, dict) or set(item) != set(FIELDS):
            keys = sorted(item) if isinstance(item, dict) else type(item).__name__
            raise InputError(f"{where}: expected exactly the keys {', '.join(FIELDS)}; got {keys}")
        for key in ("present", "uncertain"):
            if not isinstance(item[key], bool):
                raise InputError(f"{where}: {key!r} must be true or false, not {item[key]!r}")
        if not isinstance(item["evidence"], str):
            raise InputError(f"{where}: 'evidence' must be a string")
        for key, allowed in _CHOICES.items():
            value = item[key]
            if key == "finding" and value is None:
                raise InputError(f"{where}: 'finding' must be one of {', '.join(sorted(allowed))}")
            if value is not None and value not in allowed:
                raise InputError(f"{where}: {key} {value!r} is not one of {', '.join(sorted(allowed))}"
                                 + ("" if key == "finding" else " or null"))
        mentions.append(Mention(**{k: item[k] for k in FIELDS}))
    return mentions
