"""Side, zone and severity of one finding mention, read from the words around it.

Why windows and not a parser: a blank spaCy pipeline has no dependency parse
offline, and report sentences are short lists ("small left pleural effusion and
right basilar atelectasis"). Each finding owns the words between the previous
finding (or the sentence start) and itself, then its own words; only when those
name nothing does it look after itself, up to the next finding or a clause
break ("effusion on the left, ..."). A finding that still has no location and
is linked to the previous one ("left basilar opacity, likely atelectasis";
"atelectasis versus pneumonia") takes that one's side and zone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from medcf.text.lexicon import (LINKING, NO_LOCATION, POST_STOP, SEVERITY_WORDS, SIDE_HINTS,
                                SIDE_WORDS, ZONE_WORDS)
from medcf.vocab import ReportFinding, Severity, Side, Zone


@dataclass
class Attributes:
    laterality: Side | None = None
    zone: Zone | None = None
    severity: Severity | None = None


def _side(words: Sequence[str]) -> Side | None:
    sides = {SIDE_WORDS[w] for w in words if w in SIDE_WORDS}
    if Side.BILATERAL in sides or {Side.LEFT, Side.RIGHT} <= sides:
        return Side.BILATERAL
    if sides:
        return sides.pop()
    hints = [SIDE_HINTS[w] for w in words if w in SIDE_HINTS]
    return hints[0] if hints else None


def _first(words: Sequence[str], table: dict) -> object | None:
    for word in words:
        if word in table:
            return table[word]
    return None




def _severity(words: Sequence[str]) -> Severity | None:
    """First severity word; in a range ("small to moderate", "mild-to-moderate")
    the upper end, which is what a reader of the range is told to expect."""
    for i, word in enumerate(words):
        if word in SEVERITY_WORDS:
            rest = [w for w in words[i + 1:i + 4] if w != "-"]
            if len(rest) >= 2 and rest[0] == "to" and rest[1] in SEVERITY_WORDS:
                return SEVERITY_WORDS[rest[1]]
            return SEVERITY_WORDS[word]
    return None


def _read(words: Sequence[str], finding: ReportFinding) -> Attributes:
    located = finding not in NO_LOCATION
    return Attributes(
        laterality=_side(words) if located else None,
        zone=_first(words, ZONE_WORDS) if located else None,  # type: ignore[arg-type]
        severity=_severity(words),
    )


def _post_window(words: Sequence[str]) -> list[str]:
    out = []
    for word in words:
        if word in POST_STOP:
            break
        out.append(word)
    return out


def sentence_attributes(words: Sequence[str], spans: Sequence[tuple[int, int, ReportFinding]]) -> list[Attributes]:
    """Attributes of each finding span ``(start, end, finding)`` (token indices into
    ``words``, lower-cased, sorted by start) of one sentence."""
    result: list[Attributes] = []
    for index, (start, end, finding) in enumerate(spans):
        previous_end = spans[index - 1][1] if index else 0
        next_start = spans[index + 1][0] if index + 1 < len(spans) else len(words)
        attrs = _read(list(words[previous_end:end]), finding)
        after = _read(_post_window(words[end:next_start]), finding)
        attrs.laterality = attrs.laterality or after.laterality
        attrs.zone = attrs.zone or after.zone
        attrs.severity = attrs.severity or after.severity
        if index and finding not in NO_LOCATION and attrs.laterality is None and attrs.zone is None:
            between = set(words[previous_end:start])
            if between & LINKING:
                attrs.laterality, attrs.zone = result[-1].laterality, result[-1].zone
        result.append(attrs)
    return result
