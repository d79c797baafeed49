"""Image and mask measures shared by the product and the lab: one definition of each, so that
a trainer's held-out figure, the editor's self-check and a suite's row compute the same thing.

- :func:`dice`: overlap of two boolean masks (the segmenter's held-out figure, the suites'
  anatomy-kept measure, the lung-shape registration's before/after);
- :func:`psnr`: peak signal-to-noise ratio of images in [0, 1] (the autoencoder's held-out
  figure, ``medcf model check``, the suites' fidelity);
- :func:`gaussian_blur`: a separable Gaussian blur with edge replication (the edit region's
  feathering, the judge's look augmentation and its sham "blur" edit).

Kept light on purpose (numpy and torch only): the runtime imports it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean masks (1.0 when both are empty: nothing to find, nothing found)."""
    total = prediction.sum() + truth.sum()
    return 1.0 if total == 0 else float(2.0 * np.logical_and(prediction, truth).sum() / total)


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """PSNR in dB for images in [0, 1] (peak 1); infinity for identical images."""
    mse = float(np.mean((reference.astype(np.float64) - test.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10(1.0 / mse)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur (standard deviation ``sigma`` px) of the last two axes of ``x`` (``(H, W)``,
    ``(B, 1, H, W)`` or any leading shape), as float32 of the same shape.

    The kernel is sampled out to 3σ and normalised; borders are replicated rather than
    zero-padded, so a blurred film keeps its grey level at the edge (zero padding darkens a
    film's border, a look change no radiograph has) and a blurred mask keeps its value.
    ``sigma <= 0`` returns ``x`` unchanged (as float)."""
    if sigma <= 0:
        return x.float()
    radius = max(1, int(round(3 * sigma)))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-offsets ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    shape = x.shape
    out = x.float().reshape(-1, 1, *shape[-2:])
    out = F.conv2d(F.pad(out, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    out = F.conv2d(F.pad(out, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return out.reshape(shape)
