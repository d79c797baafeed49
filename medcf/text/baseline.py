"""Keyword + simple NegEx baseline, the yardstick the rule reader must beat.

What a careful quick script would do, no more: a short keyword list per finding
(the finding's name, its plural and its everyday synonyms: "airspace disease"
for consolidation, "infiltrate" for opacity, "enlarged heart" for
cardiomegaly), sentences split at ``.``, INDICATION / HISTORY / COMPARISON /
TECHNIQUE sections skipped (the same header list as the reader), and a finding
negated when a NegEx trigger (``no``, ``not``, ``without``, ``negative for``,
``free of``, ``no evidence of``, ``resolved``) appears earlier in its sentence.
No uncertainty, no pseudo-negations, no scope terminators, no zone, no severity;
side is the first side word of the sentence.

``BaselineReader(naive=True)`` is the first version (one keyword per finding,
no sections), kept so the figures of both can be reported.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from medcf.text.schema import Mention
from medcf.text.sections import split_sections

_NAIVE = {
    "pleural_effusion": r"effusions?", "consolidation": r"consolidations?", "opacity": r"opacit(?:y|ies)",
    "atelectasis": r"atelectasis", "cardiomegaly": r"cardiomegaly", "pneumothorax": r"pneumothorax",
    "nodule": r"nodules?", "mass": r"mass(?:es)?", "edema": r"edema", "pneumonia": r"pneumonia",
    "emphysema": r"emphysema", "granuloma": r"granulomas?", "fracture": r"fractures?",
}
_KEYWORDS = {
    **_NAIVE,
    "consolidation": r"consolidations?|air\s*-?\s*space (?:disease|consolidation)",
    "opacity": r"opacit(?:y|ies)|infiltrates?|densit(?:y|ies)",
    "atelectasis": r"atelectasis|atelectatic",
    "cardiomegaly": r"cardiomegaly|enlarged (?:heart|cardiac silhouette)|heart (?:size )?is enlarged",
    "pneumothorax": r"pneumothorax|pneumothoraces",
    "pneumonia": r"pneumonias?|pneumonitis",
    "emphysema": r"emphysema|emphysematous",
    "granuloma": r"granulomas?|granulomatous",
    "fracture": r"fractures?|fractured",
}
_NEGATION = re.compile(r"\b(?:no|not|without|negative for|free of|no evidence of|resolved)\b", re.IGNORECASE)
_NAIVE_NEGATION = re.compile(r"\b(?:no|not|without|negative for|free of)\b", re.IGNORECASE)
_SIDE = re.compile(r"\b(left|right|bilateral)\b", re.IGNORECASE)


class BaselineReader:
    name = "baseline"

    def __init__(self, naive: bool = False) -> None:
        keywords = _NAIVE if naive else _KEYWORDS
        self._patterns = {name: re.compile(rf"\b(?:{regex})\b", re.IGNORECASE) for name, regex in keywords.items()}
        self._negation = _NAIVE_NEGATION if naive else _NEGATION
        self._naive = naive

    def parse(self, text: str) -> list[Mention]:
        if not self._naive:
            text = "\n".join(section.text for section in split_sections(text) if section.is_current)
        mentions = []
        for sentence in re.split(r"[.\n]", text):
            side = _SIDE.search(sentence)
            for name, pattern in self._patterns.items():
                match = pattern.search(sentence)
                if match is None:
                    continue
                negated = self._negation.search(sentence, 0, match.start()) is not None
                mentions.append(Mention(name, not negated, False, side.group(1).lower() if side else None,
                                        None, None, sentence.strip()))
        return mentions

    def parse_many(self, texts: Iterable[str]) -> Iterator[list[Mention]]:
        return (self.parse(text) for text in texts)
