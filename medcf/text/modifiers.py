"""Side, zone and severity of one finding mention, read from the words around it.

Why windows and not a parser: a blank spaCy pipeline has no dependency parse
offline, and report sentences are short lists ("small left pleural effusion and
right basilar atelectasis"). Each finding owns the words between the previous
finding (or the sentence start) and itself, then its own words; only when those
name nothing does it look after itself, up to the next finding or a clause
break ("effusion on the left, ..."). A finding that still has no location and
is linked to the previous one ("left basilar opacity, likely atelectasis";
"atelectasis versus pneumonia"; "opacity, subsegmental atelectasis"; two findings
side by side) takes that one's side and zone; one still without a location that
is coordinated with the next ("atelectasis or infiltrate in the right base")
takes the next one's.

One phrase can name several places for one finding. When the sides differ,
the words are split into place groups, one per side word ("left apical | and
right basilar"); a group without a zone takes the next group's ("left | and
right mid lung"). Groups that end up in the same zone are one bilateral
finding; groups in different zones are separate places (the finding is
reported once per place: "left apical and right basilar airspace disease" is a
left upper and a right lower consolidation, not a bilateral one). Within the
words before a finding, the part after the last clause break ("effusions, small
on the left, with associated left basilar atelectasis") is read first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from medcf.text.lexicon import (
    COORDINATION,
    LINKING,
    NO_LOCATION,
    POST_STOP,
    PRE_BREAK,
    SEVERITY_WORDS,
    SIDE_HINTS,
    SIDE_WORDS,
    ZONE_WORDS,
)
from medcf.vocab import ReportFinding, Severity, Side, Zone


@dataclass
class Attributes:
    laterality: Side | None = None
    zone: Zone | None = None
    severity: Severity | None = None
    #: further (side, zone) places of the same finding in the same phrase
    extra: list[tuple[Side | None, Zone | None]] = field(default_factory=list)

    @property
    def located(self) -> bool:
        return self.laterality is not None or self.zone is not None

    def places(self) -> list[tuple[Side | None, Zone | None]]:
        return [(self.laterality, self.zone), *self.extra]

    def take_place(self, other: Attributes) -> None:
        """Take the side, zone and further places of ``other`` (a linked finding)."""
        self.laterality, self.zone, self.extra = other.laterality, other.zone, list(other.extra)


def _first(words: Sequence[str], table: dict) -> object | None:
    for word in words:
        if word in table:
            return table[word]
    return None


def _plain_side(words: Sequence[str]) -> Side | None:
    sides = {SIDE_WORDS[w] for w in words if w in SIDE_WORDS}
    if Side.BILATERAL in sides or {Side.LEFT, Side.RIGHT} <= sides:
        return Side.BILATERAL
    return sides.pop() if sides else None


def _hint(words: Sequence[str]) -> Side | None:
    hints = [SIDE_HINTS[w] for w in words if w in SIDE_HINTS]
    return hints[0] if hints else None


def _places(words: Sequence[str]) -> list[tuple[Side | None, Zone | None]]:
    """(side, zone) places named by ``words``; one unless several sides name different zones."""
    marks = [i for i, w in enumerate(words) if w in SIDE_WORDS]
    sides = {SIDE_WORDS[words[i]] for i in marks}
    zone = _first(words, ZONE_WORDS)
    if len(sides) < 2:
        return [(_plain_side(words), zone)]  # type: ignore[list-item]
    bounds = [0, *marks[1:], len(words)]
    groups = [(SIDE_WORDS[words[marks[k]]], _first(words[bounds[k]:bounds[k + 1]], ZONE_WORDS))
              for k in range(len(marks))]
    for k in range(len(groups) - 2, -1, -1):  # "left and right mid lung": the zone is shared
        if groups[k][1] is None:
            groups[k] = (groups[k][0], groups[k + 1][1])
    zones = {z for _, z in groups}
    if len(zones) == 1:
        return [(Side.BILATERAL, zones.pop())]  # type: ignore[list-item]
    return list(dict.fromkeys(groups))  # type: ignore[arg-type]


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
    severity = _severity(words)
    if finding in NO_LOCATION:
        return Attributes(severity=severity)
    (side, zone), *extra = _places(words)
    return Attributes(side, zone, severity, extra)


def _near(words: Sequence[str]) -> list[str]:
    """The words after the last clause break: the phrase that directly modifies what follows."""
    cut = max((i + 1 for i, w in enumerate(words) if w in PRE_BREAK), default=0)
    return list(words[cut:])


def _post_window(words: Sequence[str], last: bool) -> list[str]:
    """Words after a finding up to a clause break; when no other finding follows, a
    place list goes on past "and"/"or" ("in the right upper lobe and left lower lobe")."""
    out: list[str] = []
    for i, word in enumerate(words):
        if word in POST_STOP:
            following = words[i + 1] if i + 1 < len(words) else ""
            if not (last and word in ("and", "or") and (following in SIDE_WORDS or following in ZONE_WORDS)):
                break
        out.append(word)
    return out


def _compared_sides(words: Sequence[str]) -> bool:
    """"right greater than left", "left worse than right": both sides are involved."""
    for i in range(len(words) - 3):
        if words[i] in ("left", "right") and words[i + 2] == "than" and words[i + 3] in ("left", "right") \
                and words[i + 3] != words[i]:
            return True
    return False


def _linked(between: Sequence[str]) -> bool:
    """Words between two findings that make them one thing or one list: nothing, a
    conjunction, a characterisation ("likely", "versus"), or an appositive comma
    followed by at most two words ("opacity, subsegmental atelectasis"), or only
    ``XXXX``, the de-identification placeholder of a redacted word ("opacity XXXX
    atelectasis", where a word like "likely" was removed)."""
    return (not between or not set(between).isdisjoint(LINKING) or (between[0] == "," and len(between) <= 3)
            or all(w == "xxxx" for w in between))


def sentence_attributes(words: Sequence[str], spans: Sequence[tuple[int, int, ReportFinding]]) -> list[Attributes]:
    """Attributes of each finding span ``(start, end, finding)`` (token indices into
    ``words``, lower-cased, sorted by start) of one sentence."""
    result: list[Attributes] = []
    for index, (start, end, finding) in enumerate(spans):
        previous_end = spans[index - 1][1] if index else 0
        last = index + 1 == len(spans)
        next_start = len(words) if last else spans[index + 1][0]
        before = list(words[previous_end:start])
        near = _near(before)
        own = list(words[start:end])
        attrs = _read(near + own, finding)
        if not attrs.located:
            attrs = _read(before + own, finding)
        post = _post_window(words[end:next_start], last)
        after = _read(post, finding)
        if attrs.laterality is None:
            attrs.laterality, attrs.extra = after.laterality, after.extra
        attrs.zone = attrs.zone or after.zone
        attrs.severity = attrs.severity or after.severity
        if finding not in NO_LOCATION and attrs.laterality is None:
            if _compared_sides(words[end:next_start]):
                attrs.laterality = Side.BILATERAL
            else:
                attrs.laterality = _hint(near + own) or _hint(before) or _hint(post)
        if finding not in NO_LOCATION and not attrs.located and index and _linked(before):
            for k in range(index - 1, -1, -1):  # the nearest previous finding that has a place
                if spans[k][2] not in NO_LOCATION:
                    if result[k].located:
                        attrs.take_place(result[k])
                    break
                if not _linked(words[spans[k - 1][1] if k else 0:spans[k][0]]):
                    break
        result.append(attrs)
    # backwards: "atelectasis or infiltrate in the right base"
    for index in range(len(spans) - 2, -1, -1):
        finding = spans[index][2]
        if finding in NO_LOCATION or result[index].located:
            continue
        nxt = result[index + 1]
        if spans[index + 1][2] not in NO_LOCATION and nxt.located \
                and set(words[spans[index][1]:spans[index + 1][0]]) <= COORDINATION:
            result[index].take_place(nxt)
    return result
