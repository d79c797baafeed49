"""Training and evaluation data for the anatomy segmenter, rendered from the simulated world.

Every image comes with its exact projected organ masks, so no one has to draw a contour.
The set mixes what a segmenter meets in practice: PA and portable AP films, every finding
at every severity (a large effusion hides the lung edge the network must still place),
co-occurring findings, habitus, pose, exposure. Each sample gives two images: the
counterfactual (findings other than the main one only) and the factual, with its own
anatomy (cardiomegaly enlarges the heart mask).

Seeds: training uses ``TRAIN_SEED`` onwards, evaluation ``HELD_OUT_SEED`` onwards; the
ranges never meet (checked in :func:`render_set`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medcf.errors import InputError
from medcf.io.atomic import write_new_file
from medcf.vocab import Finding, Organ, ViewPosition
from medcf.world import World, draw_acquisition, load_chest_ct
from medcf.world.pairs import PhantomRequest, draw_lesion, plan_background
from medcf.world.render import anatomy_channel
from medcf.world.seeds import SeedRange

DATASET_VERSION = 1  # bump when the world's rendering or this sampling changes: cached sets are redone
TRAIN_SEED = SeedRange.SEGMENTER_TRAIN.start
HELD_OUT_SEED = SeedRange.SEGMENTER_HELD_OUT.start
SEED_SPAN = 100_000  # a set may use at most this many seeds from its start
ORGAN_BITS = {Organ.LUNG_RIGHT: "lung_right", Organ.LUNG_LEFT: "lung_left", Organ.HEART: "heart"}
VIEW_SHARE = {ViewPosition.PA: 0.6, ViewPosition.AP: 0.4}
COMORBIDITY = 0.3


@dataclass
class AnatomySet:
    """Rendered radiographs (display, [0, 1]) and their organ masks (bool, one channel per
    :class:`Organ`), with the view and seed of each image."""

    images: np.ndarray  # (n, s, s) float32
    masks: np.ndarray  # (n, len(Organ), s, s) bool
    views: list[ViewPosition]
    seeds: np.ndarray
    pixel_mm: np.ndarray

    def __len__(self) -> int:
        return len(self.images)

    def save(self, path: Path) -> Path:
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.savez_compressed(handle, images=np.round(self.images * 65535).astype(np.uint16),
                                    masks=np.packbits(self.masks, axis=-1), size=self.images.shape[-1],
                                    views=np.array([v.value for v in self.views]), seeds=self.seeds,
                                    pixel_mm=self.pixel_mm)
        return write_new_file(path, write)

    @classmethod
    def load(cls, path: Path) -> "AnatomySet":
        with np.load(path) as data:
            size = int(data["size"])
            return cls(images=data["images"].astype(np.float32) / 65535.0,
                       masks=np.unpackbits(data["masks"], axis=-1, count=size).astype(bool),
                       views=[ViewPosition(v) for v in data["views"]], seeds=data["seeds"],
                       pixel_mm=data["pixel_mm"])


def organ_masks(bits: np.ndarray) -> np.ndarray:
    """(len(Organ), h, w) bool masks from the world's bit-coded anatomy label map."""
    return np.stack([anatomy_channel(bits, ORGAN_BITS[organ]) for organ in Organ])


def render_set(n: int, first_seed: int, size: int, progress: bool = True) -> AnatomySet:
    """Render ``n`` patients (2 images each) starting at seed ``first_seed``."""
    from tqdm import tqdm

    for start in (TRAIN_SEED, HELD_OUT_SEED):
        inside = start <= first_seed and first_seed + n <= start + SEED_SPAN
        apart = first_seed + n <= start or first_seed >= start + SEED_SPAN
        if not (inside or apart):
            raise InputError(f"seeds {first_seed}..{first_seed + n - 1} straddle the range "
                             f"{start}..{start + SEED_SPAN - 1}: a set lies inside it or apart from it")
    world = World(load_chest_ct())
    findings = list(Finding)
    views = list(VIEW_SHARE)
    weights = np.array(list(VIEW_SHARE.values()))
    request = PhantomRequest(n=1, comorbidity=COMORBIDITY)
    images, masks, view_list, seeds, pixel = [], [], [], [], []
    for index in tqdm(range(n), desc="rendering anatomy set", unit="patient", disable=not progress):
        seed = first_seed + index
        rng = np.random.default_rng([seed, 0])
        view = views[int(rng.choice(len(views), p=weights))]
        lesion = draw_lesion(rng, findings[index % len(findings)], seed)
        background = plan_background(request, seed, lesion, world.ct)
        rendering = world.render(draw_acquisition(seed, view, size), lesion, background=background)
        for image, bits in ((rendering.counterfactual, rendering.anatomy),
                            (rendering.factual[lesion.severity], rendering.anatomy_factual[lesion.severity])):
            images.append(image.astype(np.float32))
            masks.append(organ_masks(bits))
            view_list.append(view)
            seeds.append(seed)
            pixel.append(rendering.pixel_mm)
    return AnatomySet(np.stack(images), np.stack(masks), view_list, np.array(seeds), np.array(pixel))
