"""The default, deterministic, offline report reader: negspacy on a blank spaCy pipeline.

Pipeline (one spaCy ``Doc`` per report section):

1. ``sentencizer`` - sentence boundaries, which negspacy also uses as the end of
   every negation and uncertainty scope (ConText's sentence-level scope: "No
   pneumothorax. Small left effusion." must not negate the effusion); without
   it a scope would run to the end of the section.
2. ``entity_ruler`` - finding phrases from :mod:`medcf.text.lexicon`, each
   labelled with its canonical name; the longest match wins.
3. ``negex`` twice: once with negation cues (``ent._.negex``), once with
   uncertainty cues (``ent._.uncertain``); both are ConText-style preceding /
   following cues with pseudo-cues ("no change", "cannot exclude") and
   terminators ("but", "however").
4. :mod:`medcf.text.modifiers` - side, zone and severity from the words around
   each finding in its sentence.

Sections that do not describe this image (INDICATION, HISTORY, COMPARISON, ...)
are skipped; see :mod:`medcf.text.sections`. spaCy models are not needed (and
cannot be downloaded here): ``spacy.blank("en")`` has a rule tokenizer only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from medcf.text.lexicon import (
    ANAPHORA_PHRASES,
    ANAPHORA_WORDS,
    CHEST_BONE_WORDS,
    FINDING_PHRASES,
    LUNG_PLACE_WORDS,
    NEGATION_TERMSET,
    NO_LOCATION,
    NON_CHEST_BONE_WORDS,
    NOT_A_FINDING,
    NOT_A_FINDING_PHRASES,
    UNCERTAINTY_TERMSET,
)
from medcf.text.modifiers import Attributes, sentence_attributes
from medcf.text.schema import Mention
from medcf.text.sections import split_sections
from medcf.vocab import ReportFinding

_DENSITY = re.compile(r"densit(?:y|ies)$", re.IGNORECASE)
_DOTS = re.compile(r"\.(?:\s*\.)+")  # "effusion.. Minimal" -> one sentence end
#: Words inside a finding phrase that negate it ("heart is not enlarged").
_INNER_NEGATION = frozenset({"not", "no", "without"})


def _token_pattern(phrase: str) -> list[dict]:
    """``"pleural effusions?"`` -> spaCy token pattern; a token ending in ``?``
    after a closing parenthesis or a word is optional when written ``(...)?``."""
    pattern = []
    for part in phrase.split():
        optional = part.endswith(")?") or part.endswith("}?")
        regex = part[:-1] if optional else part
        token: dict = {"LOWER": {"REGEX": f"^(?:{regex})$"}}
        if optional:
            token["OP"] = "?"
        pattern.append(token)
    return pattern


def _register_context_component() -> None:
    """Register ``medcf_context``: negspacy's ``negex`` where a terminator inside a
    longer cue does not end that cue's scope (ConText: the longest cue wins). In
    "opacity which may be compatible with pneumonia" the hedge "may be compatible
    with" reaches pneumonia; the terminator "compatible with" alone would cut it."""
    from negspacy.negation import Negex, default_ts
    from spacy.language import Language

    if Language.has_factory("medcf_context"):
        return

    @Language.factory("medcf_context", default_config={"neg_termset": default_ts, "ent_types": None,
                                                       "extension_name": "negex", "chunk_prefix": None,
                                                       "span_keys": None})
    class ContextCues(Negex):
        def process_negations(self, doc):
            preceding, following, terminating = super().process_negations(doc)
            cues = preceding + following
            terminating = [t for t in terminating if not any(c[1] < t[1] < c[2] for c in cues)]
            return preceding, following, terminating


def build_pipeline():
    """The spaCy pipeline described in the module docstring."""
    import spacy

    _register_context_component()
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    ruler = nlp.add_pipe("entity_ruler", config={"phrase_matcher_attr": "LOWER"})
    ruler.add_patterns([
        {"label": finding.value, "pattern": _token_pattern(phrase)}
        for finding, phrases in FINDING_PHRASES.items() for phrase in phrases
    ] + [{"label": NOT_A_FINDING, "pattern": _token_pattern(phrase)} for phrase in NOT_A_FINDING_PHRASES])
    nlp.add_pipe("medcf_context", name="negation",
                 config={"neg_termset": NEGATION_TERMSET, "extension_name": "negex"})
    nlp.add_pipe("medcf_context", name="uncertainty",
                 config={"neg_termset": UNCERTAINTY_TERMSET, "extension_name": "uncertain"})
    return nlp


def _anaphoric(words: list[str]) -> bool:
    """The sentence opens by pointing back ("These opacities ...", "The appearance suggests ...")."""
    return bool(words) and (words[0] in ANAPHORA_WORDS or " ".join(words[:2]) in ANAPHORA_PHRASES)


def _outside_the_chest(words: list[str]) -> bool:
    """The sentence names only bones a chest radiograph does not show ("subcapital fracture of the
    left hip"): its fracture belongs to another exam of the same report, not to this image."""
    return not NON_CHEST_BONE_WORDS.isdisjoint(words) and CHEST_BONE_WORDS.isdisjoint(words)


def _doc_mentions(doc) -> list[Mention]:
    mentions = []
    antecedent: Attributes | None = None  # the last placed finding of the previous sentence
    for sent in doc.sents:
        ents = [e for e in doc.ents if sent.start <= e.start < sent.end and e.label_ != NOT_A_FINDING]
        if not ents:
            antecedent = None
            continue
        words = [t.lower_ for t in sent]
        spans = [(e.start - sent.start, e.end - sent.start, ReportFinding(e.label_)) for e in ents]
        evidence = " ".join(sent.text.split())
        lung_sentence = not LUNG_PLACE_WORDS.isdisjoint(words)
        found = sentence_attributes(words, spans)
        if antecedent is not None and _anaphoric(words):
            for (_, _, finding), attrs in zip(spans, found):
                if finding not in NO_LOCATION and not attrs.located:
                    attrs.take_place(antecedent)
        placed = [a for (_, _, f), a in zip(spans, found) if f not in NO_LOCATION and a.located]
        antecedent = placed[-1] if placed else None
        for ent, attrs in zip(ents, found):
            if _DENSITY.match(ent.text) and not lung_sentence:
                continue  # "density over the heart / a rib": not a lung opacity
            if ent.label_ == ReportFinding.FRACTURE and _outside_the_chest(words):
                continue  # "fracture of the left hip": another exam, not this chest image
            negated = bool(ent._.negex) or any(t.lower_ in _INNER_NEGATION for t in ent)
            names = [ent.label_]
            if ent.label_ == ReportFinding.OPACITY and ent.start > sent.start and doc[ent.start - 1].lower_ == "nodular":
                names.append(ReportFinding.NODULE.value)  # a nodular opacity is a nodule
            mentions.extend(Mention(
                finding=name,
                present=not negated,
                uncertain=bool(ent._.uncertain) and not negated,
                laterality=side.value if side else None,
                zone=zone.value if zone else None,
                severity=attrs.severity.value if attrs.severity else None,
                evidence=evidence,
            ) for name in names for side, zone in attrs.places())
    return mentions


def merge_mentions(mentions: list[Mention]) -> list[Mention]:
    """Drop repeats: a mention that says nothing the kept one does not (same
    finding, presence and certainty; every attribute equal or null) is folded
    into it, so "Small left effusion." + "IMPRESSION: Left effusion." is one."""
    kept: list[Mention] = []
    attrs = ("laterality", "zone", "severity")
    for mention in mentions:
        for i, other in enumerate(kept):
            if (other.finding, other.present, other.uncertain) != (mention.finding, mention.present, mention.uncertain):
                continue
            pairs = [(getattr(other, a), getattr(mention, a)) for a in attrs]
            if all(x is None or y is None or x == y for x, y in pairs):
                merged = {a: x if x is not None else y for a, (x, y) in zip(attrs, pairs)}
                kept[i] = Mention(finding=other.finding, present=other.present, uncertain=other.uncertain,
                                  evidence=other.evidence, **merged)
                break
        else:
            kept.append(mention)
    return kept


class RuleReader:
    """Deterministic reader; builds its spaCy pipeline once (about 0.3 s)."""

    name = "rules"

    def __init__(self) -> None:
        self._nlp = build_pipeline()

    def parse(self, text: str) -> list[Mention]:
        return next(self.parse_many([text]))

    def parse_many(self, texts: Iterable[str], batch_size: int = 512) -> Iterator[list[Mention]]:
        """Mentions of each text, in order; sections of many reports go through
        ``nlp.pipe`` together, which is what makes batch mode fast."""
        batch: list[str] = []
        for text in texts:
            batch.append(text)
            if len(batch) >= batch_size:
                yield from self._batch(batch)
                batch = []
        if batch:
            yield from self._batch(batch)

    def _batch(self, texts: list[str]) -> Iterator[list[Mention]]:
        owners, chunks = [], []
        for index, text in enumerate(texts):
            for section in split_sections(text):
                if section.is_current:
                    owners.append(index)
                    chunks.append(_DOTS.sub(".", section.text))
        found: list[list[Mention]] = [[] for _ in texts]
        for owner, doc in zip(owners, self._nlp.pipe(chunks)):
            found[owner].extend(_doc_mentions(doc))
        for mentions in found:
            yield merge_mentions(mentions)
