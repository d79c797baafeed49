"""``medcf segment``: one radiograph in, its anatomy out, in the forms people use.

- ``anatomy.nii.gz``: organ label map (legend in ``anatomy.json`` and the NIfTI
  description); the heart lies over the lungs, as lung fields are usually drawn.
- ``zones.nii.gz``: upper/middle/lower zone of each lung and the costophrenic regions.
- ``anatomy-seg.dcm``: DICOM SEG referencing the source image, every region whole
  (overlapping segments), when the input is DICOM.
- ``overlay.png``: the radiograph, the organs and the zones side by side.
- ``anatomy.json``: legends, segmenter and weights (SHA-256), areas, cardiothoracic
  ratio, the plausibility check (:mod:`~medcf.anatomy.plausibility`), timing, and the
  research-only notice.

Masks that fail the plausibility check are refused (one line, nothing written) unless
``accept_anatomy`` (``--accept-anatomy``) overrides it; the record then says so.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import medcf
from medcf.anatomy.calibration import calibrated_confidence
from medcf.anatomy.dicom_seg import write_anatomy_seg
from medcf.anatomy.masks import LABEL_LEGEND, MIN_CONFIDENCE, ZONE_LEGEND, AnatomyMasks
from medcf.anatomy.plausibility import require_plausible
from medcf.anatomy.segment import segment
from medcf.bundle import bundle_config
from medcf.devices import place_network
from medcf.errors import InputError, MedCFError
from medcf.io.atomic import new_output_dir, sha256_of_file, write_new_text
from medcf.io.inputs import InputFormat, InputImage, radiograph_affine, read_input, write_nifti_2d
from medcf.viz import Tile, overlay, render_grid, save_png
from medcf.vocab import Organ, Side, Zone

MODEL_NOTICE = "anatomy model trained on simulated radiographs only"
ZONE_COLOURS = {"upper": (0.3, 0.7, 1.0), "middle": (0.3, 1.0, 0.6), "lower": (1.0, 0.8, 0.2),
                "costophrenic": (1.0, 0.3, 0.8)}


@dataclass
class SegmentationResult:
    masks: AnatomyMasks
    files: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0
    plausibility: object = None  # PlausibilityResult


def load_segmenter(name: str | None = None, weights: str | Path | None = None, placement=None):
    """The segmenter the bundle config names (``segmenter_name``), optionally another
    registered name (``--segmenter``: ``medcf``, ``torchxrayvision``, a site's own) or other
    weights (``--weights``), on ``placement``'s device and dtype (:func:`place_segmenter`)."""
    segmenter = _configured_segmenter(name, weights)
    return segmenter if placement is None else place_segmenter(segmenter, placement)


def place_segmenter(segmenter, placement):
    """Run ``segmenter``'s network (its ``network`` attribute) on ``placement``
    (:func:`medcf.devices.place_network`: segmenters keep making CPU float32 tensors). A
    segmenter without a ``network`` module cannot be moved: asking for anything but CPU
    float32 is then one :class:`InputError` line rather than a silent CPU run."""
    import torch


    network = getattr(segmenter, "network", None)
    if isinstance(network, torch.nn.Module):
        place_network(network, placement)
    elif placement.device.type != "cpu" or placement.half:
        raise InputError(f"segmenter {getattr(segmenter, 'name', type(segmenter).__name__)} has no `network` module "
                         f"MedCF can move to {placement.device} / {placement.dtype_name}; run it with --device cpu "
                         "--dtype float32, or give your own masks with --masks")
    segmenter.placement = placement
    return segmenter


def _configured_segmenter(name: str | None, weights: str | Path | None):
    overrides = {}
    if name:
        overrides["segmenter_name"] = name
    if weights:
        overrides["weights"] = str(weights)
    config = bundle_config("anatomy", overrides)
    if name and not weights and name != bundle_config("anatomy").get("segmenter_name"):
        config["weights"] = None  # the bundle's weights belong to its own segmenter, not to this one
    try:
        return config.get_parsed_content("segmenter")
    except RuntimeError as error:
        # MONAI wraps what the factory raised; a user's mistake (a missing or wrong weights
        # file, an unknown name) keeps its own one-line message.
        cause = error.__cause__
        while cause is not None and not isinstance(cause, MedCFError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise


def cardiothoracic_ratio(masks: AnatomyMasks) -> float:
    """Widest heart span over widest span of both lungs, in image columns."""
    heart = masks.organs[Organ.HEART].any(axis=0)
    lungs = masks.lung(Side.BILATERAL).any(axis=0)
    span = lambda cols: np.flatnonzero(cols).max() - np.flatnonzero(cols).min() + 1  # noqa: E731
    return float(span(heart) / span(lungs)) if heart.any() and lungs.any() else float("nan")


def overlay_panel(image: InputImage, masks: AnatomyMasks, title: str):
    organs = overlay(image.display, {organ.value: masks.organs[organ] for organ in Organ})
    zones = {}
    for side in (Side.RIGHT, Side.LEFT):
        for zone in Zone:
            zones[f"{side.value}_{zone.value}"] = (masks.zone(side, zone), ZONE_COLOURS[zone.value])
        zones[f"{side.value}_costophrenic"] = (masks.costophrenic(side), ZONE_COLOURS["costophrenic"])
    base = np.repeat(np.clip(image.display, 0, 1)[..., None], 3, axis=2).astype(np.float32)
    for mask, colour in zones.values():
        base[mask] = 0.6 * base[mask] + 0.4 * np.asarray(colour, np.float32)
    tiles = [Tile(image.display, "input"), Tile(organs, "lungs (R blue, L green), heart (red)"),
             Tile(base, "zones upper/middle/lower,\ncostophrenic (magenta)")]
    return render_grid(tiles, title, columns=3, footer=f"{medcf.RESEARCH_ONLY_NOTICE} ({MODEL_NOTICE})")


def segmenter_record(masks: AnatomyMasks, segmenter) -> dict:
    """Where segmented masks came from, for ``anatomy.json`` and ``edit.json`` alike: the
    segmenter's name, its weights file (path and SHA-256) and its confidence."""
    weights = getattr(segmenter, "weights_path", None)
    confidence = masks.confidence()
    return {"segmenter": masks.segmenter,
            "weights": {"path": str(weights), "sha256": sha256_of_file(weights)} if weights else None,
            "confidence": None if confidence is None else round(confidence, 4),
            "confidence_calibrated": calibrated_confidence(confidence, sha256_of_file(weights) if weights else None),
            "placement": segmenter_placement(segmenter)}


def segmenter_placement(segmenter) -> dict | None:
    """Device and dtype the segmenter's network runs on (None when it has no network to ask)."""
    placement = getattr(segmenter, "placement", None)
    if placement is not None:
        return placement.to_dict()
    first = next(segmenter.network.parameters(), None) if hasattr(getattr(segmenter, "network", None),
                                                                   "parameters") else None
    return None if first is None else {"device": str(first.device), "dtype": str(first.dtype).removeprefix("torch.")}


def segment_input(path: str | Path, out_dir: str | Path, segmenter=None,
                  min_confidence: float | None = None, accept_anatomy: bool = False) -> SegmentationResult:
    """Segment the radiograph at ``path`` and write every output into ``out_dir`` (new or empty).
    Implausible masks are refused before anything is written, unless ``accept_anatomy``."""
    image = read_input(path)  # errors about the input come before anything is created
    segmenter = segmenter or load_segmenter()
    started = time.perf_counter()
    masks = segment(image.display, segmenter, MIN_CONFIDENCE if min_confidence is None else min_confidence)
    seconds = time.perf_counter() - started
    plausibility = require_plausible(masks, image.display, str(path), accept_anatomy)
    out = new_output_dir(out_dir)
    result = SegmentationResult(masks, seconds=seconds, plausibility=plausibility)
    affine = image.affine if image.affine is not None else radiograph_affine(image.spacing_mm)
    result.files["anatomy"] = write_nifti_2d(out / "anatomy.nii.gz", masks.label_map(), affine,
                                             "MedCF anatomy: " + " ".join(f"{v}={k}" for k, v in LABEL_LEGEND.items()))
    result.files["zones"] = write_nifti_2d(out / "zones.nii.gz", masks.zone_map(), affine, "MedCF lung zones")
    if image.format is InputFormat.DICOM:
        result.files["seg"] = write_anatomy_seg(out / "anatomy-seg.dcm", masks, image.radiograph.dataset)
    result.files["overlay"] = save_png(overlay_panel(image, masks, f"MedCF segment: {Path(path).name}"),
                                       out / "overlay.png")
    record = {
        "input": str(image.path), "format": image.format.value, "shape": list(image.shape),
        "spacing_mm": list(image.spacing_mm) if image.spacing_mm else None,
        **segmenter_record(masks, segmenter),
        "labels": LABEL_LEGEND, "zones": ZONE_LEGEND,
        "areas_px": {name: int(mask.sum()) for name, mask in masks.regions().items()},
        "cardiothoracic_ratio": round(cardiothoracic_ratio(masks), 4),
        "plausibility": plausibility.to_dict(),
        "seconds": round(seconds, 3), "medcf_version": medcf.__version__,
        "notice": f"{medcf.RESEARCH_ONLY_NOTICE} ({MODEL_NOTICE})",
    }
    result.files["record"] = write_new_text(out / "anatomy.json", json.dumps(record, indent=2) + "\n")
    return result
