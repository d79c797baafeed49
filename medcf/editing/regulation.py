"""Anatomy-aware attention regularization and pathology-guided enhancement (docs/methods.md §1–2),
as attention-logit biases the :class:`~medcf.editing.control.AttentionController` adds.

- :class:`AnatomyRegulation`: self-attention queries inside an organ see keys of other
  regions at ``-beta`` (structure cannot leak across organ borders); prompt tokens that
  name an organ (``heart``, ``left`` …) may only be attended from inside that organ.
- :class:`PathologyEnhancement`: the finding's words gain ``+gamma`` inside the target
  region (and ``-gamma_out`` outside it) during the early steps, where layout is decided.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from medcf.editing.control import ControlMethod, rows_bias
from medcf.editing.regions import EditRegion
from medcf.models.base import CROSS, SELF, TextEncoding
from medcf.models.sampling import COND, UNCOND
from medcf.vocab import Finding, Organ

#: prompt words that name an organ, and the organ(s) they may attend to
ORGAN_WORDS: dict[str, tuple[Organ, ...]] = {
    "heart": (Organ.HEART,), "cardiac": (Organ.HEART,), "cardiomegaly": (Organ.HEART,),
    "left": (Organ.LUNG_LEFT,), "right": (Organ.LUNG_RIGHT,),
    "lung": (Organ.LUNG_LEFT, Organ.LUNG_RIGHT), "lungs": (Organ.LUNG_LEFT, Organ.LUNG_RIGHT),
    "pulmonary": (Organ.LUNG_LEFT, Organ.LUNG_RIGHT), "pleural": (Organ.LUNG_LEFT, Organ.LUNG_RIGHT),
}
#: the words of each finding in the prompts (medcf.text.prompts), whose attention is steered
PATHOLOGY_WORDS: dict[Finding, tuple[str, ...]] = {
    Finding.PLEURAL_EFFUSION: ("effusion", "pleural"), Finding.CONSOLIDATION: ("consolidation",),
    Finding.ATELECTASIS: ("atelectasis",), Finding.CARDIOMEGALY: ("cardiomegaly",),
    Finding.PNEUMOTHORAX: ("pneumothorax",), Finding.NODULE: ("nodule", "mass"), Finding.EDEMA: ("edema", "pulmonary"),
}
EPSILON = 1e-3


def word_tokens(text: TextEncoding, words: Sequence[str], prompt_index: int = 0) -> list[int]:
    """Token indices of every word of ``words`` present in one prompt (sorted, unique)."""
    return sorted({i for word in words for i in text.token_indices(word, prompt_index)})


def pathology_tokens(text: TextEncoding, finding: Finding, prompt_index: int = 0) -> list[int]:
    """The tokens that carry ``finding`` in one prompt: its words (:data:`PATHOLOGY_WORDS`)."""
    return word_tokens(text, PATHOLOGY_WORDS[finding], prompt_index)


@dataclass
class AnatomyRegulation(ControlMethod):
    """§1: organ-gated self-attention and anatomy-token cross-attention gating."""

    region: EditRegion
    text: TextEncoding
    beta_self: float = 4.0
    window: tuple[float, float] = (0.0, 1.0)
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.organ_tokens: dict[int, tuple[Organ, ...]] = {}
        for word, organs in ORGAN_WORDS.items():
            for index in self.text.token_indices(word):
                self.organ_tokens[index] = organs

    def _self_bias(self, grid: tuple[int, int]) -> torch.Tensor:
        key = ("self", grid)
        if key not in self._cache:
            labels = self.region.label_tokens(grid)
            differs = labels[:, None] != labels[None, :]
            inside = (labels > 0)[:, None]
            self._cache[key] = -self.beta_self * (differs & inside).float()
        return self._cache[key]

    def _cross_bias(self, grid: tuple[int, int], keys: int) -> torch.Tensor | None:
        key = ("cross", grid, keys)
        if key not in self._cache:
            tokens = [k for k in self.organ_tokens if k < keys]
            if not tokens:
                self._cache[key] = None
            else:
                bias = torch.zeros(grid[0] * grid[1], keys)
                for k in tokens:
                    allowed = sum(self.region.organ_tokens(o, grid) for o in self.organ_tokens[k]).clamp(max=1)
                    bias[:, k] = torch.log(allowed + EPSILON)
                self._cache[key] = bias
        return self._cache[key]

    def bias(self, call, queries, keys):
        if not call.within(self.window) or queries != call.grid[0] * call.grid[1]:
            return None
        if call.site.kind == SELF:
            if keys != queries:
                return None
            return self._self_bias(call.grid)[None, None]
        bias = self._cross_bias(call.grid, keys)
        return None if bias is None else rows_bias(call, bias, (COND,))


@dataclass
class PathologyEnhancement(ControlMethod):
    """§2: amplify the finding's words inside the target region, damp them outside."""

    region: EditRegion
    tokens: list[int]
    gamma: float = 2.0
    gamma_out: float = 1.0
    window: tuple[float, float] = (0.0, 0.5)
    branches: tuple[str, ...] = (COND,)
    _cache: dict = field(default_factory=dict, repr=False)

    def bias(self, call, queries, keys):
        if (call.site.kind != CROSS or not self.tokens or not call.within(self.window)
                or queries != call.grid[0] * call.grid[1]):
            return None
        key = (call.grid, keys)
        if key not in self._cache:
            target = self.region.target_tokens(call.grid)
            bias = torch.zeros(queries, keys)
            column = self.gamma * target - self.gamma_out * (1 - target)
            for k in self.tokens:
                if k < keys:
                    bias[:, k] = column
            self._cache[key] = bias
        return rows_bias(call, self._cache[key], self.branches)


__all__ = ["AnatomyRegulation", "PathologyEnhancement", "word_tokens", "pathology_tokens", "PATHOLOGY_WORDS", "ORGAN_WORDS", "UNCOND"]
