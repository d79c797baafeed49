"""Every range of simulated patients, named once.

A simulated patient is a seed: the world renders the same film from the same seed on any
machine. A figure means something only when the patients it was measured on were never
seen by what is measured, so the ranges are declared here, side by side, and every suite
or trainer takes its start from this table instead of a number of its own. Training uses
seeds below :data:`HELD_OUT_START`; everything measured for a report starts at or above it.
A command that is asked for evaluation patients in a training range refuses
(:func:`require_held_out`): that was once a silent slip (a suite's ``--first-seed`` reached
another option and the suite rendered training patients under a "held-out" header).
"""

from __future__ import annotations

from enum import Enum

from medcf.errors import InputError

HELD_OUT_START = 1_000_000  # training seeds lie in [0, HELD_OUT_START); held-out ones from here on


class SeedRange(Enum):
    """A named block of seeds: its first seed, and what it is for.

    Ranges of one kind never overlap another's use: training sets below
    :data:`HELD_OUT_START`, the rest above it. The tuning patients (where settings are
    chosen) and the benchmark's patients (where they are reported) are apart on purpose.
    """

    GENERATOR_TRAIN = (0, "the default model's training films (world sets, medcf train)")
    SEGMENTER_TRAIN = (100_000, "the anatomy segmenter's training films")
    JUDGE_TRAIN = (500_000, "the benchmark judge's training pairs")
    AUGMENT_TRAIN = (600_000, "the augmentation suite's rendered training pairs")
    SEGMENTER_HELD_OUT = (900_000, "the segmenter's own held-out films (below HELD_OUT_START: never a report's)")
    GENERATOR_HELD_OUT = (HELD_OUT_START, "the default model's held-out world sets (medcf model evaluate)")
    TUNING = (1_100_000, "the editor's tuning patients: where its settings are chosen")
    PLAUSIBILITY = (1_300_000, "the judge's held-out pairs and the plausibility benchmark")
    BENCHMARK = (1_400_000, "the counterfactual suite's patients: where figures are reported")
    AUGMENT_HELD_OUT = (1_500_000, "the augmentation suite's held-out pairs")
    PAIRS = (1_600_000, "the augmentation suite's generator noise seeds and pair specs")
    SWAP = (1_700_000, "the causal swap test's held-out patients")
    LONGTAIL = (1_800_000, "the long-tail suite's patients")
    REALISM = (1_900_000, "the insertion realism discriminator's patients (world lesions vs inserted ones)")
    INSERT_REPORT = (2_000_000, "insert's first counterfactual-suite report, with auto beside it (drawn fresh, "
                                "nothing chosen on it; draw a new range after any decision made on it)")
    NORMAL_SAMPLES = (2_700_000, "the judge suite's normal samples of the generator")

    def __init__(self, start: int, purpose: str) -> None:
        self.start = start
        self.purpose = purpose

    @property
    def held_out(self) -> bool:
        return self.start >= HELD_OUT_START


def require_held_out(first: int, last: int, what: str) -> None:
    """Refuse evaluation patients ``first..last`` that reach into the training seeds.

    ``what`` names the suite in the one-line error, which also says where held-out seeds
    start and which range is meant for reporting.
    """
    if first > last:
        raise InputError(f"{what}: empty seed range {first}..{last}")
    if first < HELD_OUT_START:
        raise InputError(f"{what}: patient seeds {first}..{last} reach into the training seeds "
                         f"(0..{HELD_OUT_START - 1}); held-out seeds start at {HELD_OUT_START} "
                         f"(report on {SeedRange.BENCHMARK.start}, tune on {SeedRange.TUNING.start})")
