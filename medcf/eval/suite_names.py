"""The benchmark suites' method names and patient ranges, with no heavy imports: the
command line builds its parser from them (its ``--methods`` choices and defaults) without
importing the suites, which import torch, MONAI and the world."""

from __future__ import annotations

from medcf.editing.baseline_names import BASELINES, MASKED_BASELINES
from medcf.editing.spec import Method
from medcf.world.seeds import SeedRange

BENCH_SEED = SeedRange.BENCHMARK.start
TUNING_SEED = SeedRange.TUNING.start  # the editor's tuning patients: where its settings are chosen (never BENCH_SEED)
OURS = tuple(m.value for m in Method)
METHODS = BASELINES + MASKED_BASELINES + OURS
OUR_SETTINGS = ("depth", "strength", "energy", "passes", "guidance", "renoise")  # EditSpec fields the suite may set for MedCF's methods
DEFAULT_PAIR_METHODS = (Method.STEER, Method.REGULATED_STEER)  # the augmentation suite's pair methods
