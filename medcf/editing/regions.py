"""Where an edit may act: the edit region at native size, and the same anatomy on the
model's pixel, latent and attention-token grids.

The model sees the radiograph resized to its own square input (the default model's
256×256, as it was trained on whole-field films). Every mask is derived once on that
*working* grid, then

- pooled to each attention site's token grid (organ labels for regulation, the target
  zone for enhancement, energy and the steering gate);
- pooled to the latent grid (latent blending outside the region);
- feathered and resized back to the native grid, where it weighs the transferred
  difference. A feathered mask is exactly zero wherever every working pixel under it is
  zero, so the output equals the input outside the region by construction.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from medcf.anatomy.masks import AnatomyMasks
from medcf.editing.spec import SIDELESS, EditSpec
from medcf.errors import InputError
from medcf.metrics import gaussian_blur
from medcf.vocab import FINDING_ZONES, Action, Finding, Organ, Severity, Side, Zone

#: token labels on attention grids: background attends freely
ORGAN_LABELS = {Organ.LUNG_RIGHT: 1, Organ.LUNG_LEFT: 2, Organ.HEART: 3}
#: how far the region reaches beyond the anatomy it is built from, as a fraction of the working size
MARGIN = {Finding.PLEURAL_EFFUSION: 0.05, Finding.CONSOLIDATION: 0.03, Finding.ATELECTASIS: 0.04,
          Finding.CARDIOMEGALY: 0.10, Finding.PNEUMOTHORAX: 0.04, Finding.NODULE: 0.03, Finding.EDEMA: 0.03}
FEATHER = 0.02  # Gaussian feathering of the blend weight, fraction of the working size


def resize_mask(mask: np.ndarray | torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Area-average a mask (bool or float, ``(H, W)``) to ``size``: the covered fraction per cell."""
    tensor = torch.as_tensor(np.asarray(mask, dtype=np.float32))[None, None]
    return F.interpolate(tensor, size=size, mode="area")[0, 0]


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Anti-aliased resize of display values (area when shrinking, bilinear when enlarging)."""
    tensor = torch.as_tensor(np.asarray(image, dtype=np.float32))[None, None]
    shrinking = size[0] <= tensor.shape[2] and size[1] <= tensor.shape[3]
    if shrinking:
        out = F.interpolate(tensor, size=size, mode="area")
    else:
        out = F.interpolate(tensor, size=size, mode="bilinear", align_corners=False)
    return out[0, 0].numpy()


def _disk_dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    if radius <= 0:
        return mask
    r = torch.arange(-radius, radius + 1, dtype=torch.float32)
    disk = ((r[:, None] ** 2 + r[None, :] ** 2) <= radius ** 2).float()[None, None]
    return (F.conv2d(mask.float()[None, None], disk, padding=radius)[0, 0] > 0)


def anatomy_source(masks: AnatomyMasks, spec: EditSpec, placed_by_model: bool = False) -> np.ndarray:
    """The anatomy (native size, bool) an edit of ``spec`` starts from, before the margin.

    ``placed_by_model``: the film's finding was placed by the model, not by a reader — a pair
    made from scratch, whose factual film the model drew from a prompt. Two things follow.

    - Zone: the prompt names no zone, so the model draws the finding in any zone its
      training world gave it (``medcf.vocab.FINDING_ZONES``: atelectasis lower
      *or* middle), while a reader's edit without a zone starts where the finding usually
      starts (``DEFAULT_ZONES``: atelectasis lower). With no zone asked, the region covers
      every zone the finding can take (tuning seeds, atelectasis removals the benchmark's
      judge agrees with: 0 of 8 with the lower zone, 4 of 8 with the whole lung).
    - Side, for a removal: the model does not keep to the prompted side (the judge finds
      the finding of 40 tuning factual films on the other side in 17), so a removal re-draws
      the finding's zones on both sides; an addition draws on the asked side. Tuning seeds,
      removals the judge agrees with, asked side → both sides: effusion 3 → 7 of 8,
      consolidation 0 → 4, atelectasis 4 → 7, pneumothorax 5 → 7, nodule 3 → 2
      (docs/editing.md, "Pairs from scratch")."""
    if placed_by_model and spec.action is Action.REMOVE and spec.finding not in SIDELESS:
        spec = replace(spec, side=Side.BILATERAL)
    finding, side = spec.finding, spec.side or Side.BILATERAL
    if placed_by_model and spec.zone is None:
        zones = FINDING_ZONES.get(finding)
        if zones and len(zones) > 1:
            return np.logical_or.reduce([masks.zone(side, zone) for zone in zones])
    if finding is Finding.CARDIOMEGALY:
        return masks.organs[Organ.HEART]
    if finding is Finding.PLEURAL_EFFUSION:
        region = masks.zone(side, spec.zone or Zone.LOWER) | masks.costophrenic(side)
        if spec.severity is Severity.SEVERE and spec.zone is None:
            region |= masks.zone(side, Zone.MIDDLE)
        return region
    if finding is Finding.PNEUMOTHORAX and spec.zone is None and spec.severity is not Severity.MILD:
        return masks.lung(side)
    return masks.zone(side, spec.region_zone)


@dataclass
class EditRegion:
    """The anatomy of one radiograph on the working grid, and the region one edit may change.

    ``labels``: ``(h, w)`` int64 organ labels (:data:`ORGAN_LABELS`, heart over lungs);
    ``organs``: per organ a ``(h, w)`` float mask; ``target``: the edit region (float,
    after the margin) on the working grid; ``native_weight``: the feathered blend weight at
    the native size (float32, 0 outside the region).
    """

    working_size: tuple[int, int]
    native_size: tuple[int, int]
    labels: torch.Tensor
    organs: dict[Organ, torch.Tensor]
    target: torch.Tensor
    native_weight: np.ndarray
    native_region: np.ndarray
    _cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, masks: AnatomyMasks, spec: EditSpec, working_size: tuple[int, int],
              placed_by_model: bool = False) -> "EditRegion":
        """``placed_by_model``: the finding was placed by the model (a pair from scratch), see
        :func:`anatomy_source`."""
        native = masks.shape
        organs = {organ: (resize_mask(masks.organs[organ], working_size) >= 0.5).float() for organ in Organ}
        labels = torch.zeros(working_size, dtype=torch.long)
        for organ in (Organ.LUNG_RIGHT, Organ.LUNG_LEFT, Organ.HEART):
            labels[organs[organ] > 0] = ORGAN_LABELS[organ]
        source = resize_mask(anatomy_source(masks, spec, placed_by_model), working_size) >= 0.5
        if not source.any():
            raise InputError(f"the {spec.describe()} region is empty on this radiograph "
                             "(the segmented anatomy has no such zone)")
        radius = int(round(MARGIN[spec.finding] * max(working_size)))
        target = _disk_dilate(source, radius).float()
        # 0 on the region's border, rising to 1 about two sigmas inside: no seam at the edge.
        feathered = (2 * gaussian_blur(target, FEATHER * max(working_size)) - 1).clamp(0, 1) * target
        weight = F.interpolate(feathered[None, None], size=native, mode="bilinear", align_corners=False)[0, 0]
        region = F.interpolate(target[None, None], size=native, mode="nearest")[0, 0] > 0
        weight = (weight * region).numpy().astype(np.float32)
        return cls(tuple(working_size), tuple(native), labels, organs, target, weight, region.numpy())

    @classmethod
    def of_extent(cls, masks: AnatomyMasks, extent: np.ndarray, working_size: tuple[int, int]) -> "EditRegion":
        """The region of a method that edits the film itself: exactly ``extent`` (native,
        bool), unfeathered (the method tapers its own change), with the anatomy on
        ``working_size`` for the record."""
        organs = {organ: (resize_mask(masks.organs[organ], working_size) >= 0.5).float() for organ in Organ}
        labels = torch.zeros(working_size, dtype=torch.long)
        for organ in (Organ.LUNG_RIGHT, Organ.LUNG_LEFT, Organ.HEART):
            labels[organs[organ] > 0] = ORGAN_LABELS[organ]
        target = (resize_mask(extent, working_size) > 0).float()
        return cls(tuple(working_size), tuple(masks.shape), labels, organs, target, extent.astype(np.float32),
                   extent.copy())

    def on_grid(self, mask: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """A working-grid mask as covered fractions on ``grid`` (flattened row-major)."""
        return resize_mask(mask, grid).flatten()

    def target_tokens(self, grid: tuple[int, int]) -> torch.Tensor:
        """``M_T`` on a token grid: 1 where the region covers at least a third of the token
        (always at least the most covered token, so a small target is never lost)."""
        key = ("target", grid)
        if key not in self._cache:
            fraction = self.on_grid(self.target, grid)
            mask = (fraction >= 1 / 3).float()
            mask[int(fraction.argmax())] = 1.0
            self._cache[key] = mask
        return self._cache[key]

    def organ_tokens(self, organ: Organ, grid: tuple[int, int]) -> torch.Tensor:
        key = ("organ", organ, grid)
        if key not in self._cache:
            self._cache[key] = (self.on_grid(self.organs[organ], grid) >= 0.5).float()
        return self._cache[key]

    def label_tokens(self, grid: tuple[int, int]) -> torch.Tensor:
        """Organ label per token (majority of the working pixels under it; 0 = background)."""
        key = ("labels", grid)
        if key not in self._cache:
            onehot = F.one_hot(self.labels, num_classes=len(ORGAN_LABELS) + 1).permute(2, 0, 1).float()
            pooled = F.interpolate(onehot[None], size=grid, mode="area")[0]
            self._cache[key] = pooled.argmax(0).flatten()
        return self._cache[key]

    def latent_mask(self, latent_hw: tuple[int, int]) -> torch.Tensor:
        """Blend mask on the latent grid: 1 on every latent cell the region touches, dilated by one cell."""
        touched = resize_mask(self.target, latent_hw) > 0
        return _disk_dilate(touched, 1).float()
