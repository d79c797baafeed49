"""Augmentation aimed at real radiographs, for training the anatomy network.

The simulated world has one body and one detector model; real films differ in window and
gamma, polarity mistakes (MONOCHROME1 shown as MONOCHROME2), noise (low exposure), blur,
collimation and cropping, rotation, magnification (AP at short distance) and, now and
then, a mirrored image. Each of these is drawn here, on a dict ``{"image": (1, s, s),
"label": (len(Organ), s, s)}``, with MONAI's transforms where MONAI has one; the one
MONAI lacks is a mirror that keeps labels anatomical.

Before those, the world is moved toward real films (``medcf.world.film``): lung outlines
warped toward real ones, anti-scatter grid lines, collimation, and a vendor's processing
chain (multi-scale contrast, unsharp masking, range compression, VOI LUT). They come first
because a film is acquired and processed before it is windowed, cropped or mirrored.
"""

from __future__ import annotations

import numpy as np
import torch
from monai import transforms as T

from medcf.anatomy.network import normalize_intensity
from medcf.vocab import Organ
from medcf.world.film import (FilmLook, RandCollimationd, RandFilmProcessingd, RandGridLinesd, RandLungShaped,
                              ShapeBank)

KEYS = ("image", "label")
LUNG_CHANNELS = tuple(i for i, organ in enumerate(Organ) if organ in (Organ.LUNG_RIGHT, Organ.LUNG_LEFT))


def mirror_sides(image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip image and labels left-right. Labels stay anatomical: the patient's left lung
    keeps the ``lung_left`` channel wherever it now lies on the image, so the network must
    tell the sides from anatomy (the heart's side), not from image position."""
    return torch.flip(torch.as_tensor(image), dims=(-1,)), torch.flip(torch.as_tensor(label), dims=(-1,))


class RandMirrorSidesd(T.RandomizableTransform, T.MapTransform):
    """With probability ``prob``, :func:`mirror_sides` on ``image`` and ``label``."""

    def __init__(self, prob: float = 0.25):
        T.RandomizableTransform.__init__(self, prob)
        T.MapTransform.__init__(self, KEYS)

    def __call__(self, data: dict) -> dict:
        self.randomize(None)
        if not self._do_transform:
            return data
        image, label = mirror_sides(data["image"], data["label"])
        return {**data, "image": image, "label": label}


def invert(image):
    return 1.0 - image


def binarize(label):
    return (torch.as_tensor(label) > 0.5).float()


def realism_transforms(look: FilmLook | None, bank: ShapeBank | None) -> list:
    """The steps that make a render look like a real film, in acquisition order; none when
    ``look`` is None, no lung warp when ``bank`` is None."""
    if look is None:
        return []
    steps: list = [] if bank is None else [RandLungShaped(bank, LUNG_CHANNELS, look)]
    return steps + [RandGridLinesd(look), RandCollimationd(look), RandFilmProcessingd(look)]


def training_transform(size: int, seed: int, look: FilmLook | None = None, bank: ShapeBank | None = None
                       ) -> T.Compose:
    """The MONAI ``Compose`` applied to every training sample, seeded; ``look`` (and the
    lung-shape ``bank``) add the real-film steps of :func:`realism_transforms` first."""
    crop_and_letterbox = T.Compose([
        T.RandSpatialCropd(keys=KEYS, roi_size=(int(size * 0.7), int(size * 0.7)), max_roi_size=(size, size),
                           random_size=True),
        T.Resized(keys=KEYS, spatial_size=size, size_mode="longest", mode=("area", "area")),
        T.ResizeWithPadOrCropd(keys=KEYS, spatial_size=(size, size)),
    ])
    transform = T.Compose([
        *realism_transforms(look, bank),
        # Intensity (image only), then the same normalisation inference uses.
        T.RandLambdad(keys="image", func=invert, prob=0.1),  # polarity mistake
        T.RandAdjustContrastd(keys="image", prob=0.5, gamma=(0.5, 2.0)),
        T.RandScaleIntensityd(keys="image", prob=0.3, factors=0.3),
        T.RandShiftIntensityd(keys="image", prob=0.3, offsets=0.15),
        T.RandHistogramShiftd(keys="image", prob=0.2, num_control_points=(5, 10)),
        T.RandGaussianSmoothd(keys="image", prob=0.3, sigma_x=(0.3, 1.5), sigma_y=(0.3, 1.5)),
        T.RandGaussianNoised(keys="image", prob=0.3, std=0.06),
        T.Lambdad(keys="image", func=normalize_intensity),
        # Geometry (image and label); padding is black, as inference's letterbox.
        T.OneOf([T.Identityd(keys=KEYS), crop_and_letterbox], weights=(0.6, 0.4)),
        T.RandZoomd(keys=KEYS, prob=0.5, min_zoom=0.8, max_zoom=1.2, mode=("bilinear", "bilinear"),
                    padding_mode="constant", keep_size=True),
        T.RandRotated(keys=KEYS, prob=0.5, range_x=float(np.deg2rad(10)), mode=("bilinear", "bilinear"),
                      padding_mode="zeros"),
        RandMirrorSidesd(prob=0.25),
        T.Lambdad(keys="label", func=binarize),
        T.ToTensord(keys=KEYS, track_meta=False),
    ])
    transform.set_random_state(seed=seed)
    return transform
