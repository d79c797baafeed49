"""Deliberately rare combinations: the long-tail suite's skewed training set, and the
frequency buckets (``head`` / ``medium`` / ``tail``, the thresholds of
:mod:`medcf.editing.report_mix`) of every (finding, side, zone) combination in a set."""

from __future__ import annotations

from collections import Counter
from fnmatch import fnmatchcase

import numpy as np

from medcf.causal.factors import Attributes
from medcf.editing.report_mix import HEAD_SHARE, TAIL_SHARE, Bucket
from medcf.errors import InputError


def combination(attributes: Attributes) -> str:
    """``finding/side/zone`` (severity is spread evenly by the world, so it does not make a
    combination rare)."""
    return f"{attributes.finding}/{attributes.side}/{attributes.zone}"


def matches(attributes: Attributes, pattern: str) -> bool:
    return fnmatchcase(combination(attributes), pattern)


def skewed_subset(pairs, rare: dict[str, float], seed: int = 0):
    """``pairs`` with each ``rare`` pattern's pairs cut down so that they make up the given
    share of the result (at least one pair each); the frequency of every combination in
    the result."""
    rng = np.random.default_rng([seed, 22])
    total = len(pairs)
    drop: set[int] = set()
    for pattern, share in rare.items():
        matching = [i for i, a in enumerate(pairs.attributes) if matches(a, pattern)]
        if not matching:
            raise InputError(f"--rare {pattern}: no training pair matches (combinations look like "
                             f"{combination(pairs.attributes[0])})")
        keep = min(len(matching), max(1, round(share * total)))
        drop.update(rng.choice(matching, len(matching) - keep, replace=False).tolist())
    kept = pairs.subset(i for i in range(total) if i not in drop)
    return kept, frequencies(kept.attributes)


def frequencies(attributes: list[Attributes]) -> dict[str, float]:
    """Share of the set's films-with-a-finding each combination holds."""
    counts = Counter(combination(a) for a in attributes if a.present)
    n = sum(counts.values())
    return {key: round(count / n, 5) for key, count in counts.most_common()}


def bucket_of(share: float) -> Bucket:
    if share >= HEAD_SHARE:
        return Bucket.HEAD
    return Bucket.MEDIUM if share >= TAIL_SHARE else Bucket.TAIL
