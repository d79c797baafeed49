"""What a report corpus asks the editor for: how often each (finding, side, zone, severity)
combination is stated, and edit specs drawn with those frequencies.

Each report goes through the same path as ``medcf edit --from-report`` and ``medcf batch
--from-report`` (:func:`medcf.editing.api.specs_from_report`): present, certain, editable
findings only; no side stated → both sides; no severity stated → the command's severity.
So a combination counted here is exactly the edit the editor would make for that report.

The buckets (head / medium / tail, by share of the stated findings) are the frequency
buckets of the long-tail suite of issue 22: they show how thin the tail of real reports is.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field, replace
from enum import Enum

import numpy as np

from medcf.editing.api import specs_from_report
from medcf.editing.spec import EditSpec
from medcf.errors import InputError
from medcf.text.corpus import ReportCorpus
from medcf.vocab import Action, Finding, Severity, Side, Zone


class Bucket(str, Enum):
    HEAD = "head"
    MEDIUM = "medium"
    TAIL = "tail"


#: A combination holding at least this share of the stated findings is in the head.
HEAD_SHARE = 0.05
#: Below this share, in the tail.
TAIL_SHARE = 0.01


@dataclass(frozen=True, order=True)
class Combination:
    finding: str
    side: str
    zone: str
    severity: str

    @classmethod
    def of(cls, spec: EditSpec) -> "Combination":
        def text(value) -> str:
            return "-" if value is None else getattr(value, "value", str(value))

        return cls(text(spec.finding), text(spec.side), text(spec.zone), text(spec.severity))

    def spec(self, base: EditSpec, seed: int) -> EditSpec:
        def member(enum, value: str):
            return None if value == "-" else enum(value)

        return replace(base, finding=Finding(self.finding), side=member(Side, self.side),
                       zone=member(Zone, self.zone), severity=member(Severity, self.severity), seed=seed)

    @property
    def label(self) -> str:
        return " ".join(v for v in (self.severity, self.side, self.zone, self.finding) if v != "-")


@dataclass
class ReportMix:
    corpus: str
    reports: int
    without: int  # reports that state no present, certain, editable finding
    counts: Counter = field(default_factory=Counter)  # Combination -> reports stating it

    @property
    def stated(self) -> int:
        return sum(self.counts.values())

    def share(self, combination: Combination) -> float:
        return self.counts[combination] / self.stated if self.stated else 0.0

    def bucket(self, combination: Combination) -> Bucket:
        share = self.share(combination)
        return Bucket.HEAD if share >= HEAD_SHARE else Bucket.TAIL if share < TAIL_SHARE else Bucket.MEDIUM

    def ordered(self) -> list[Combination]:
        """Most frequent first; ties in a fixed order, so that a draw is reproducible."""
        return sorted(self.counts, key=lambda c: (-self.counts[c], c))

    def draw(self, n: int, base: EditSpec) -> list[EditSpec]:
        """``n`` specs, each combination with its corpus frequency, drawn with ``base.seed``;
        spec ``i`` samples from seed ``base.seed + i`` as ``medcf pairs`` always does."""
        if not self.counts:
            raise InputError(f"--from-reports: none of the {self.reports} report(s) of {self.corpus} states a present, "
                             f"certain finding the editor can {base.action.value}")
        ordered = self.ordered()
        weights = np.array([self.counts[c] for c in ordered], dtype=float)
        picks = np.random.default_rng(base.seed).choice(len(ordered), size=n, p=weights / weights.sum())
        return [ordered[k].spec(base, base.seed + i) for i, k in enumerate(picks)]

    def to_dict(self, drawn: list[EditSpec] | None = None) -> dict:
        made = Counter(Combination.of(s) for s in drawn or [])
        return {
            "corpus": self.corpus, "reports": self.reports, "reports_without_editable_finding": self.without,
            "stated_findings": self.stated, "buckets": {"head_share_at_least": HEAD_SHARE,
                                                        "tail_share_below": TAIL_SHARE},
            "combinations": [{"finding": c.finding, "side": c.side, "zone": c.zone, "severity": c.severity,
                              "reports": self.counts[c], "share": round(self.share(c), 4),
                              "bucket": self.bucket(c).value, "pairs": made[c]} for c in self.ordered()],
        }

    def to_markdown(self, drawn: list[EditSpec] | None = None) -> str:
        facts = self.to_dict(drawn)
        lines = [f"# Findings of {self.corpus}, as the editor would make them",
                 "",
                 f"{self.reports} reports; {self.without} state no present, certain, editable finding; "
                 f"{self.stated} findings in the others. Bucket: head ≥ {HEAD_SHARE:.0%} of the findings, "
                 f"tail < {TAIL_SHARE:.0%}. Side '-' = no side (cardiomegaly); zone '-' = the finding's default zone.",
                 "",
                 "| finding | side | zone | severity | reports | share | bucket | pairs |",
                 "| --- | --- | --- | --- | ---: | ---: | --- | ---: |"]
        lines += [f"| {c['finding']} | {c['side']} | {c['zone']} | {c['severity']} | {c['reports']} | "
                  f"{c['share']:.3f} | {c['bucket']} | {c['pairs']} |" for c in facts["combinations"]]
        return "\n".join(lines) + "\n"

    def to_json(self, drawn: list[EditSpec] | None = None) -> str:
        return json.dumps(self.to_dict(drawn), indent=2) + "\n"


def mix_of(corpus: ReportCorpus, action: Action, base: EditSpec, progress: bool = False) -> ReportMix:
    """Read every report of ``corpus`` with the rule reader and count the edits it states."""
    from tqdm import tqdm


    mix = ReportMix(corpus.name, len(corpus), 0)
    for _, text in tqdm(corpus.reports, desc="reading reports", unit="report", disable=not progress):
        try:
            specs, _ = specs_from_report(text, action, base)
        except InputError:  # states no editable finding: a normal study, or only hedged findings
            mix.without += 1
            continue
        mix.counts.update(Combination.of(s) for s in specs)
    return mix
