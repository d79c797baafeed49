"""What placement hands to composition: one lesion registered onto one film.

Placement (:mod:`medcf.insertion.placement`) builds it from the lesion bank and the film's
anatomy; composition (:mod:`medcf.insertion.film_domain`) adds it to the film in the film's
own attenuation domain. This dataclass is the seam between the two, so that each can be
tested without the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class PlacedLesion:
    """One lesion on the film's native pixel grid (every array ``(rows, cols)``).

    - ``channel``: the water-equivalent line integral the finding adds, in mm (> 0 adds
      density: fluid, soft tissue; < 0 removes it: the air of a pneumothorax).
    - ``extent``: where the output may differ from the input (the finding's projected
      outline plus its blending margin); outside it the output equals the input.
    - ``replaced``: the share, 0..1, of the film's own lung texture the finding takes away
      (aerated lung replaced by fluid or collapsed; the lung markings beyond a pneumothorax's
      pleural line); 0 outside the lungs and where nothing is replaced.
    - ``background``: the world's lesion-free line integral (water mm), warped onto the film
      the same way, so that composition can fit the film's mapping from line integral to
      pixel value on the film's own lungs, heart and soft tissue.
    - ``record``: what ``edit.json`` keeps: the lesion spec and seed, the bank entry, where
      it was placed (centroid and bounding box in film pixels), the registration and its fit.
    """

    channel: np.ndarray
    extent: np.ndarray
    replaced: np.ndarray
    background: np.ndarray
    record: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        shapes = {name: getattr(self, name).shape for name in ("channel", "extent", "replaced", "background")}
        if len(set(shapes.values())) != 1 or len(shapes["channel"]) != 2:
            raise ValueError(f"a placed lesion's arrays must share one 2D shape, got {shapes}")
        if self.extent.dtype != bool:
            raise ValueError("extent must be a boolean mask")
