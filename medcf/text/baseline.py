"""Keyword + simple NegEx baseline, the yardstick the rule reader must beat.

One keyword per finding (plus its plural), sentences split at ``.``, a finding
negated when ``no``/``not``/``without``/``negative for``/``free of`` appears
earlier in its sentence. No sections, no uncertainty, no zone, no severity; side
is the first side word of the sentence. Kept deliberately naive: it is what a
quick script would do, so the figures show what the real reader buys.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from medcf.text.schema import Mention

_KEYWORDS = {
    "pleural_effusion": r"effusions?", "consolidation": r"consolidations?", "opacity": r"opacit(?:y|ies)",
    "atelectasis": r"atelectasis", "cardiomegaly": r"cardiomegaly", "pneumothorax": r"pneumothorax",
    "nodule": r"nodules?", "mass": r"mass(?:es)?", "edema": r"edema", "pneumonia": r"pneumonia",
    "emphysema": r"emphysema", "granuloma": r"granulomas?", "fracture": r"fractures?",
}
_PATTERNS = {name: re.compile(rf"\b{regex}\b", re.IGNORECASE) for name, regex in _KEYWORDS.items()}
_NEGATION = re.compile(r"\b(?:no|not|without|negative for|free of)\b", re.IGNORECASE)
_SIDE = re.compile(r"\b(left|right|bilateral)\b", re.IGNORECASE)


class BaselineReader:
    name = "baseline"

    def parse(self, text: str) -> list[Mention]:
        mentions = []
        for sentence in re.split(r"[.\n]", text):
            side = _SIDE.search(sentence)
            for name, pattern in _PATTERNS.items():
                match = pattern.search(sentence)
                if match is None:
                    continue
                negated = _NEGATION.search(sentence, 0, match.start()) is not None
                mentions.append(Mention(name, not negated, False, side.group(1).lower() if side else None,
                                        None, None, sentence.strip()))
        return mentions

    def parse_many(self, texts: Iterable[str]) -> Iterator[list[Mention]]:
        return (self.parse(text) for text in texts)
