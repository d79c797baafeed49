"""How sure is the segmenter of each film? (``medcf anatomy-score``)

Active learning asks for the film whose labels would teach the segmenter most; the cheap
proxy is the film it is least sure of. Two signals, both already computed by ``medcf
segment``: the plausibility rules (:mod:`~medcf.anatomy.plausibility`; a film whose masks
break rules is the clearest case for a human) and the network's confidence
(:meth:`AnatomyMasks.confidence`, the least sure organ's mean probability). Films are
ranked by failed rules first (more is less sure), then by confidence (lower is less sure).
A film the segmenter cannot draw at all (no heart found, say) ranks first of all.
"""

from __future__ import annotations

from pathlib import Path

from medcf.anatomy.plausibility import check_anatomy
from medcf.anatomy.segment import segment
from medcf.errors import MedCFError
from medcf.io.inputs import read_input


def score_input(path: str | Path, segmenter) -> dict:
    """Confidence and plausibility of the segmenter's masks on one film. A film it cannot
    segment is scored too (``error``), never raised: one bad film must not stop a ranking."""
    try:
        image = read_input(path)
        masks = segment(image.display, segmenter, min_confidence=0.0)
    except MedCFError as error:
        return {"input": str(path), "confidence": 0.0, "plausible": False, "failed": [], "error": str(error)}
    verdict = check_anatomy(masks, image.display)
    confidence = masks.confidence()
    return {"input": str(path), "confidence": None if confidence is None else round(confidence, 4),
            "plausible": verdict.passed, "failed": verdict.failed, "error": None}


def sureness(record: dict) -> tuple:
    """Sort key: least sure first (see module docstring)."""
    failed = len(record["failed"]) + (100 if record["error"] else 0)
    confidence = record["confidence"] if record["confidence"] is not None else 1.0
    return (-failed, confidence, record["input"])


def rank_inputs(paths: list[str | Path], segmenter) -> list[dict]:
    """Every film's score, least sure first."""
    return sorted((score_input(path, segmenter) for path in paths), key=sureness)
