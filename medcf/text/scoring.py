"""Score a report reader against the IU expert MeSH indexing.

Presence: per report, the reference set is the scored findings its MeSH terms
map to (:data:`medcf.text.iu.SCORED`, mapping in :mod:`medcf.text.iu`); the
predicted set is the scored findings the reader calls present and certain
(hedged mentions are not counted: the indexers index the observed finding -
"opacity" - and only sometimes the differential - "may represent pneumonia";
counting hedges lowers precision more than it raises recall). Each (report, finding) is a
TP, FP or FN; reports with reference ``normal`` and no findings count for
precision. Reports indexed "No Indexing" are left out.

Side, zone, severity: over true-positive (report, finding) pairs whose MeSH
term states that attribute (e.g. ``Pleural Effusion/bilateral/small`` states
side and severity, not zone). It is correct when at least one of the reader's
present mentions of that finding in that report carries the same value; a
mention without the attribute counts as wrong. When the reader states an
attribute the reference does not, nothing is scored.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from medcf.text.iu import SCORED, IUReport
from medcf.text.schema import Mention

ATTRIBUTES = ("laterality", "zone", "severity")


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


@dataclass
class Scores:
    per_finding: dict[str, Counts] = field(default_factory=lambda: {f.value: Counts() for f in SCORED})
    attribute: dict[str, list[int]] = field(default_factory=lambda: {a: [0, 0] for a in ATTRIBUTES})
    reports: int = 0
    seconds: float = 0.0
    errors: list[tuple[int, str, str]] = field(default_factory=list)  # (report id, kind, finding or attribute)

    @property
    def micro(self) -> Counts:
        total = Counts()
        for c in self.per_finding.values():
            total.tp, total.fp, total.fn = total.tp + c.tp, total.fp + c.fp, total.fn + c.fn
        return total

    def accuracy(self, attribute: str) -> float:
        correct, total = self.attribute[attribute]
        return correct / total if total else 0.0

    @property
    def reports_per_minute(self) -> float:
        return 60 * self.reports / self.seconds if self.seconds else 0.0


def score(reports: list[IUReport], parse_many: Callable[[Iterable[str]], Iterator[list[Mention]]]) -> Scores:
    """Run ``parse_many`` on the indexed reports (timed) and score it."""
    reports = [r for r in reports if r.indexed]
    start = time.perf_counter()
    parsed = list(parse_many([r.text for r in reports]))
    scores = Scores(reports=len(reports), seconds=time.perf_counter() - start)
    scored = set(scores.per_finding)
    for report, mentions in zip(reports, parsed):
        reference = [f for f in report.reference() if f.finding in scored]
        present = [m for m in mentions if m.present and not m.uncertain and m.finding in scored]
        truth, predicted = {f.finding for f in reference}, {m.finding for m in present}
        for name in scored:
            counts = scores.per_finding[name]
            if name in truth and name in predicted:
                counts.tp += 1
            elif name in predicted:
                counts.fp += 1
                scores.errors.append((report.id, "fp", name))
            elif name in truth:
                counts.fn += 1
                scores.errors.append((report.id, "fn", name))
        for ref in reference:
            if ref.finding not in predicted:
                continue
            for attribute in ATTRIBUTES:
                wanted = getattr(ref, attribute)
                if wanted is None:
                    continue
                ok = any(getattr(m, attribute) == wanted for m in present if m.finding == ref.finding)
                scores.attribute[attribute][0] += ok
                scores.attribute[attribute][1] += 1
                if not ok:
                    scores.errors.append((report.id, attribute, f"{ref.finding}: want {wanted}"))
    return scores


def format_scores(named: dict[str, Scores]) -> str:
    """Side-by-side table of several readers' scores (e.g. rules vs baseline)."""
    names = list(named)
    lines = ["finding".ljust(18) + "".join(f"{n + ' P/R/F1':>24}" for n in names) + "   support"]
    first = named[names[0]]
    for finding in first.per_finding:
        row = finding.ljust(18)
        for n in names:
            c = named[n].per_finding[finding]
            row += f"{c.precision:>10.3f}{c.recall:>7.3f}{c.f1:>7.3f}"
        c = first.per_finding[finding]
        lines.append(row + f"{c.tp + c.fn:>10d}")
    row = "micro".ljust(18)
    for n in names:
        c = named[n].micro
        row += f"{c.precision:>10.3f}{c.recall:>7.3f}{c.f1:>7.3f}"
    lines.append(row + f"{first.micro.tp + first.micro.fn:>10d}")
    lines.append("")
    for attribute, label in (("laterality", "side"), ("zone", "zone"), ("severity", "severity")):
        row = f"{label} accuracy".ljust(18)
        for n in names:
            correct, total = named[n].attribute[attribute]
            row += f"{named[n].accuracy(attribute):>12.3f} ({correct}/{total})".ljust(24)
        lines.append(row)
    lines.append("reports/minute".ljust(18) + "".join(f"{named[n].reports_per_minute:>24,.0f}" for n in names))
    lines.append(f"reports scored: {first.reports}")
    return "\n".join(lines)
