"""Segmenters: the default network and the registry that lets a site choose another.

A segmenter turns a display image (float32 in [0, 1], MONOCHROME2 sense, any size) into
:class:`~medcf.anatomy.masks.AnatomyMasks` at that size. Sites plug in their own by name:
``register_segmenter("name")`` on a factory in their code, or a Python entry point in the
group ``medcf.segmenters``; the bundle config (``monai_bundle/configs/anatomy.json``)
names the one to use. Whatever it is, its output passes the same contract checks.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from scipy import ndimage

from medcf.anatomy.masks import MIN_CONFIDENCE, AnatomyMasks, SegmentationError, lateral_direction
from medcf.anatomy.network import DEFAULT_INPUT_SIZE, Letterbox, build_network
from medcf.errors import InputError
from medcf.models.package import segmenter_weights
from medcf.vocab import Organ

ENTRY_POINT_GROUP = "medcf.segmenters"
MIN_COMPONENT_SHARE = 0.002  # of the image: smaller specks are dropped
LUNG_FIELD_SHARE = 0.25  # of the largest lung field: a smaller field is not a lung of its own
_REGISTRY: dict[str, Callable[..., "Segmenter"]] = {}


class Segmenter(Protocol):
    name: str

    def segment_image(self, image: np.ndarray) -> AnatomyMasks:
        """Masks for a (rows, cols) display image in [0, 1] (MONOCHROME2 sense)."""


def register_segmenter(name: str) -> Callable:
    """Decorator: make a segmenter factory selectable by ``name``."""
    def decorate(factory: Callable[..., Segmenter]) -> Callable[..., Segmenter]:
        _REGISTRY[name] = factory
        return factory
    return decorate


def available_segmenters() -> list[str]:
    _load_entry_points()
    return sorted(_REGISTRY)


def _load_entry_points() -> None:
    from importlib.metadata import entry_points

    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name not in _REGISTRY:
            _REGISTRY[entry.name] = entry.load()


def get_segmenter(name: str, options: dict | None = None, **more) -> Segmenter:
    """The segmenter registered as ``name``, built with ``options`` (the bundle config's
    ``segmenter_options[name]``) and ``more`` (``weights``, say)."""
    options = {**(options or {}), **more}
    if name not in _REGISTRY:
        _load_entry_points()
    if name not in _REGISTRY:
        raise InputError(f"no segmenter named {name!r}; available: {', '.join(available_segmenters())}")
    return _REGISTRY[name](**options)


def checked(masks: AnatomyMasks, shape: tuple[int, ...], min_confidence: float = MIN_CONFIDENCE) -> AnatomyMasks:
    """Apply the output contract: masks at the input's size, each organ found, and (for
    segmenters that give probabilities) drawn with at least ``min_confidence``."""
    if masks.shape != tuple(shape):
        raise SegmentationError(f"segmenter {masks.segmenter!r} returned masks of {masks.shape} for an image "
                                f"of {tuple(shape)}; masks must be at the input's native size")
    empty = [organ.value for organ in Organ if not masks.organs[organ].any()]
    if empty:
        raise SegmentationError(f"no {', '.join(empty)} found in the image: is it a frontal chest radiograph?")
    confidence = masks.confidence()
    if confidence is not None and confidence < min_confidence:
        raise SegmentationError(f"segmenter {masks.segmenter!r} is unsure of this image (confidence {confidence:.2f} "
                                f"< {min_confidence:.2f}): is it a frontal chest radiograph? "
                                "(--min-confidence lowers the bar)")
    return masks


def segment(image: np.ndarray, segmenter: Segmenter, min_confidence: float = MIN_CONFIDENCE) -> AnatomyMasks:
    """Run ``segmenter`` on a display image and check its output."""
    image = np.asarray(image)
    if image.ndim != 2:
        raise InputError(f"expected a single-channel 2D image, got shape {image.shape}")
    return checked(segmenter.segment_image(image.astype(np.float32, copy=False)), image.shape, min_confidence)


def _largest(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if count <= 1:
        return ndimage.binary_fill_holes(mask)
    sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, count + 1))
    return ndimage.binary_fill_holes(labels == (1 + int(np.argmax(sizes))))


def assign_lungs(probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Right and left lung masks from the two lung probability maps.

    Sides are decided per connected lung field, not per pixel, so one lung is never split
    between labels: each of the two largest fields takes the side its probabilities vote
    for; if both vote for the same side, the field that votes more weakly takes the other.
    """
    right_p, left_p = probabilities[list(Organ).index(Organ.LUNG_RIGHT)], probabilities[list(Organ).index(Organ.LUNG_LEFT)]
    lungs = np.maximum(right_p, left_p) > 0.5
    labels, count = ndimage.label(lungs)
    if count == 0:
        return lungs, lungs.copy()
    index = np.arange(1, count + 1)
    sizes = ndimage.sum_labels(lungs, labels, index)
    # A field far smaller than the largest is a speck, not a lung: when the lungs touch they
    # form one field, and a speck must not then be taken for the other lung.
    floor = max(MIN_COMPONENT_SHARE * lungs.size, LUNG_FIELD_SHARE * sizes.max())
    keep = [i for i in index[np.argsort(sizes)[::-1]] if sizes[i - 1] >= floor][:2]
    if len(keep) == 1:
        # Both lungs in one field (they touch): split it by the per-pixel vote.
        field_mask = labels == keep[0]
        return _largest(field_mask & (right_p >= left_p)), _largest(field_mask & (left_p > right_p))
    votes = [float(ndimage.sum_labels(left_p - right_p, labels, [k])[0]) for k in keep]  # >0: left
    first_left = votes[0] > 0
    if (votes[1] > 0) == first_left:
        first_left = abs(votes[0]) > abs(votes[1]) if first_left else abs(votes[0]) < abs(votes[1])
    left_field, right_field = (keep[0], keep[1]) if first_left else (keep[1], keep[0])
    return ndimage.binary_fill_holes(labels == right_field), ndimage.binary_fill_holes(labels == left_field)


def masks_from_probabilities(probabilities: np.ndarray, segmenter: str) -> AnatomyMasks:
    """Threshold at 0.5, keep the main fields, assign lung sides (see :func:`assign_lungs`)."""
    right, left = assign_lungs(probabilities)
    heart = _largest(probabilities[list(Organ).index(Organ.HEART)] > 0.5)
    return AnatomyMasks({Organ.LUNG_RIGHT: right, Organ.LUNG_LEFT: left, Organ.HEART: heart}, segmenter,
                        probabilities=probabilities)


class NetworkSegmenter:
    """A network that maps a letterboxed square image to one logit map per :class:`Organ`."""

    def __init__(self, network: torch.nn.Module, input_size: int = DEFAULT_INPUT_SIZE, name: str = "medcf-unet",
                 weights_path: Path | None = None):
        self.network = network.eval()
        self.input_size = input_size
        self.name = name
        self.weights_path = weights_path

    @torch.no_grad()
    def segment_image(self, image: np.ndarray) -> AnatomyMasks:
        box = Letterbox(image.shape, self.input_size)
        logits = self.network(box.pack(image))
        probabilities = torch.sigmoid(box.unpack(logits)).numpy()
        return masks_from_probabilities(probabilities, self.name)


@register_segmenter("medcf-unet")
def default_segmenter(weights: str | Path | None = None, network: dict | None = None,
                      input_size: int = DEFAULT_INPUT_SIZE) -> NetworkSegmenter:
    """MedCF's default: a MONAI UNet trained on the simulated world (docs/anatomy.md)."""
    from safetensors.torch import load_file

    path = Path(weights) if weights else segmenter_weights()
    if not path.is_file():
        raise InputError(f"anatomy weights not found: {path} (train them with `medcf train segmenter`)")
    model = build_network(network)
    state = load_file(str(path))
    try:
        model.load_state_dict({k: v.float() for k, v in state.items()})
    except RuntimeError as error:
        raise InputError(f"{path} does not fit the network definition: {str(error).splitlines()[0]}") from None
    return NetworkSegmenter(model, input_size=input_size, weights_path=path)


register_segmenter("medcf")(default_segmenter)  # the name `--segmenter medcf` gives


@register_segmenter("torchxrayvision")
def torchxrayvision_segmenter(weights: str | Path | None = None, **options) -> Segmenter:
    """TorchXRayVision's ChestX-Det PSPNet from a local weights file (:mod:`medcf.anatomy.adapters`)."""
    from medcf.anatomy.adapters import xrv_pspnet_segmenter

    return xrv_pspnet_segmenter(weights, **options)
