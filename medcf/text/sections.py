"""Split a report into its sections and say which describe the current image.

A finding named under INDICATION ("evaluate for pneumonia"), HISTORY or
COMPARISON ("prior study showed an effusion") is a question or the past, not a
finding of this image, so the reader skips those sections. Text before any
header (a pasted impression, a one-liner) counts as current.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Headers whose text describes the image being read.
CURRENT = frozenset({"FINDINGS", "IMPRESSION", "CONCLUSION", "CONCLUSIONS", "OPINION", "REPORT", "BODY"})
#: Headers whose text is context: the question asked, the past, how it was done.
CONTEXT = frozenset({
    "INDICATION", "INDICATIONS", "CLINICAL INDICATION", "REASON FOR EXAM", "REASON FOR EXAMINATION",
    "HISTORY", "CLINICAL HISTORY", "CLINICAL INFORMATION", "CLINICAL DETAILS", "COMPARISON",
    "COMPARISONS", "TECHNIQUE", "EXAM", "EXAMINATION", "PROCEDURE",
})
_HEADER = re.compile(
    r"(?:^|(?<=[\s.]))(" + "|".join(sorted((re.escape(h) for h in CURRENT | CONTEXT), key=len, reverse=True))
    + r")\s*:",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Section:
    name: str  # upper-case header, or "BODY" for text before any header
    text: str

    @property
    def is_current(self) -> bool:
        """True when the section's findings belong to this image (unknown headers too)."""
        return self.name not in CONTEXT


def _starts_a_section(text: str, match: re.Match) -> bool:
    """A header opens a section at the start of the text or of a line, after a sentence end, or
    when written in capitals ("... no effusion IMPRESSION: ..."). A title-case word inside a
    sentence ("FINDINGS: Chest Comparison: There is ...") is a label within the section: reading
    it as a header would drop the rest of the findings as context (issue 23)."""
    before = text[:match.start()].rstrip(" \t")
    return not before or before[-1] in "\n." or match.group(1).isupper()


def split_sections(text: str) -> list[Section]:
    """Sections in reading order; empty sections are dropped."""
    sections: list[Section] = []
    name, start = "BODY", 0
    for match in _HEADER.finditer(text):
        if not _starts_a_section(text, match):
            continue
        body = text[start:match.start()].strip()
        if body:
            sections.append(Section(name, body))
        name, start = " ".join(match.group(1).upper().split()), match.end()
    body = text[start:].strip()
    if body:
        sections.append(Section(name, body))
    return sections
