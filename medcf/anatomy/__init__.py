"""Anatomy of a frontal chest radiograph: lungs and heart from a MONAI network (or a
segmenter a site registers), lung zones and costophrenic regions derived geometrically,
written as NIfTI label maps, DICOM SEG and an overlay picture.

Pipeline: :mod:`~medcf.anatomy.network` (network, letterbox) -> :mod:`~medcf.anatomy.segment`
(segmenters, registry, post-processing) -> :mod:`~medcf.anatomy.masks` (``AnatomyMasks``,
zones) -> :mod:`~medcf.anatomy.plausibility` (rules any chest film meets, with the lungs'
:mod:`~medcf.anatomy.shape_model` from the :mod:`~medcf.anatomy.real_shapes` of real chests) ->
:mod:`~medcf.anatomy.outputs` / :mod:`~medcf.anatomy.dicom_seg`. A user's own masks:
:mod:`~medcf.anatomy.given`. What the confidence means: :mod:`~medcf.anatomy.calibration`.
Training lives in the lab: :mod:`medcf.training.segmenter`, :mod:`medcf.training.segmenter_labels`.
"""

from importlib import import_module

# Resolved on first use, so that `medcf --help` does not import torch or MONAI.
_EXPORTS = {
    "AnatomyMasks": "masks", "SegmentationError": "masks",
    "Segmenter": "segment", "get_segmenter": "segment", "register_segmenter": "segment",
    "available_segmenters": "segment", "segment": "segment", "NetworkSegmenter": "segment",
    "segment_input": "outputs", "load_segmenter": "outputs",
    "check_anatomy": "plausibility", "PlausibilityResult": "plausibility", "read_masks": "given",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'medcf.anatomy' has no attribute {name!r}")
    return getattr(import_module(f"medcf.anatomy.{_EXPORTS[name]}"), name)
