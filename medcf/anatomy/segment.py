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

from medcf.anatomy.adapters import xrv_pspnet_segmenter
from medcf.anatomy.masks import (MIN_CONFIDENCE, AnatomyMasks, SegmentationError, lateral_direction,
                                 masks_from_probabilities)
from medcf.anatomy.network import DEFAULT_INPUT_SIZE, Letterbox, build_network
from medcf.errors import InputError
from medcf.models.package import segmenter_weights
from medcf.vocab import Organ

ENTRY_POINT_GROUP = "medcf.segmenters"
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
                                f"< {min_confidence:.2f}): is it a frontal chest radiograph? Give a corrected "
                                "segmentation with --masks (3D Slicer or MONAI Label), or --min-confidence lowers "
                                "the bar")
    return masks


def segment(image: np.ndarray, segmenter: Segmenter, min_confidence: float = MIN_CONFIDENCE) -> AnatomyMasks:
    """Run ``segmenter`` on a display image and check its output."""
    image = np.asarray(image)
    if image.ndim != 2:
        raise InputError(f"expected a single-channel 2D image, got shape {image.shape}")
    return checked(segmenter.segment_image(image.astype(np.float32, copy=False)), image.shape, min_confidence)


class NetworkSegmenter:
    """A network that maps a letterboxed square image to one logit map per :class:`Organ`.

    ``inferer``: how the network is run on the packed square, a MONAI ``Inferer`` (the bundle
    config's ``inferer``, ``SimpleInferer`` by default: one forward pass), so that a site can
    swap in, say, a ``SlidingWindowInferer`` in configs/anatomy.json without code."""

    def __init__(self, network: torch.nn.Module, input_size: int = DEFAULT_INPUT_SIZE, name: str = "medcf-unet",
                 weights_path: Path | None = None, inferer: Callable | None = None):
        self.network = network.eval()
        self.input_size = input_size
        self.name = name
        self.weights_path = weights_path
        self.inferer = inferer

    @torch.no_grad()
    def segment_image(self, image: np.ndarray) -> AnatomyMasks:
        box = Letterbox(image.shape, self.input_size)
        packed = box.pack(image)
        logits = self.inferer(packed, self.network) if self.inferer is not None else self.network(packed)
        probabilities = torch.sigmoid(box.unpack(logits)).numpy()
        return masks_from_probabilities(probabilities, self.name)


@register_segmenter("medcf-unet")
def default_segmenter(weights: str | Path | None = None, network: dict | None = None,
                      input_size: int = DEFAULT_INPUT_SIZE, inferer: Callable | None = None) -> NetworkSegmenter:
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
    return NetworkSegmenter(model, input_size=input_size, weights_path=path, inferer=inferer)


register_segmenter("medcf")(default_segmenter)  # the name `--segmenter medcf` gives


@register_segmenter("torchxrayvision")
def torchxrayvision_segmenter(weights: str | Path | None = None, **options) -> Segmenter:
    """TorchXRayVision's ChestX-Det PSPNet from a local weights file (:mod:`medcf.anatomy.adapters`)."""
    return xrv_pspnet_segmenter(weights, **options)
