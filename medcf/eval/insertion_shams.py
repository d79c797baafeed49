"""Shams for insertion (issue 47): changes that carry a true lesion's energy but not the finding.

An inserted lesion adds contrast where none was; a judge that flips on *any* added contrast
of that size would count every insertion as a success. Each sham takes the world's true
change ``delta = truth - source`` of one ``add`` case and keeps its energy (the sum of
``delta**2`` over the lesion and its margin) while taking away what makes it the finding:

- ``blob``: a smooth elongated Gaussian (4 : 1, long axis across the film) at the lesion's
  centroid, with the change's sign: the right amount of density, of the wrong shape (no
  finding the world models is a horizontal spindle).
- ``texture``: the change with its Fourier phases drawn at random and its mean removed: the
  same spatial scales and energy, no shape and no added density.

The judge should call neither the finding; their flip rates sit beside ``insert``'s in the
counterfactual suite (:func:`medcf.eval.bench.insertion_sham_flip_rates`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medcf.vocab import StrEnum

MARGIN_PX = 3  # the true change reaches past the lesion's mask by blur and scatter
ASPECT = 4.0


class InsertionSham(StrEnum):
    BLOB = "blob"
    TEXTURE = "texture"


SHAM_WHAT = {
    InsertionSham.BLOB: "equal-energy elongated blob (4:1, horizontal) at the lesion's centroid, the change's sign",
    InsertionSham.TEXTURE: "the change with random Fourier phases, mean removed: equal energy and scales, no shape",
}


def lesion_support(lesion: np.ndarray) -> np.ndarray:
    """Where the true change is counted: the lesion's mask and a margin."""
    return ndimage.binary_dilation(np.asarray(lesion, bool), iterations=MARGIN_PX)


def _scaled(change: np.ndarray, energy: float) -> np.ndarray:
    current = float((change ** 2).sum())
    return change * np.sqrt(energy / current) if current > 0 else change


def sham_change(sham: InsertionSham, source: np.ndarray, truth: np.ndarray, lesion: np.ndarray,
                seed: int) -> np.ndarray:
    """The sham's change (float64, the film's shape) for one ``add`` case, with the energy of
    the true change ``truth - source`` on the lesion's support."""
    support = lesion_support(lesion)
    delta = np.where(support, np.asarray(truth, np.float64) - np.asarray(source, np.float64), 0.0)
    energy = float((delta ** 2).sum())
    if energy <= 0 or not support.any():
        return np.zeros(delta.shape)
    if sham is InsertionSham.BLOB:
        rows, cols = np.nonzero(lesion if np.asarray(lesion).any() else support)
        radius = max(np.sqrt(rows.size / np.pi), 1.0)
        r, c = np.mgrid[:delta.shape[0], :delta.shape[1]]
        long, short = radius, max(radius / ASPECT, 1.0)
        blob = np.exp(-0.5 * (((r - rows.mean()) / short) ** 2 + ((c - cols.mean()) / long) ** 2))
        return _scaled(np.sign(delta.sum()) * blob, energy)
    # TEXTURE: phase randomisation on the support's bounding box, kept to the support.
    rows, cols = np.nonzero(support)
    box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
    spectrum = np.abs(np.fft.rfft2(delta[box]))
    phases = np.random.default_rng(seed).uniform(-np.pi, np.pi, spectrum.shape)
    spectrum[0, 0] = 0.0  # no added density: texture only
    texture = np.zeros(delta.shape)
    texture[box] = np.fft.irfft2(spectrum * np.exp(1j * phases), s=delta[box].shape)
    texture = np.where(support, texture, 0.0)
    texture[support] -= texture[support].mean()
    return _scaled(texture, energy)


def sham_film(sham: InsertionSham, source: np.ndarray, truth: np.ndarray, lesion: np.ndarray, seed: int) -> np.ndarray:
    """``source`` with the sham's change, clipped to [0, 1] (float32)."""
    return np.clip(source + sham_change(sham, source, truth, lesion, seed), 0.0, 1.0).astype(np.float32)
