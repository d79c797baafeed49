"""Slicer-side helpers of the MedCF module; the work itself is done by ``medcf``.

Importing this package pulls in neither Slicer nor Qt (a test checks it). ``MedCFLib.mrml`` (the
scene work; needs Slicer's MRML, the application's or slicer-core's) and ``MedCFLib.remote`` (the
MONAI Label client) and ``MedCFLib.install`` (first-use install of the carried wheel) are imported
by name where they are used."""

from .logic import (
    CORONAL_IJK_TO_RAS,
    DEFAULT_SPACING_MM,
    DISPLAY_LEVEL,
    DISPLAY_WINDOW,
    EDIT_CHOICES,
    EDIT_OPTIONS,
    EDIT_START,
    MIN_SLICER_VERSION,
    SEGMENT_TERMINOLOGY,
    VolumeArrays,
    WorkFolders,
    load_into_scene,
    radiograph_to_volume_arrays,
    run_folder,
    slicer_version_problem,
    with_device,
    with_report,
)
from .process import (
    CANCELLED,
    FAILED,
    FINISHED,
    RUNNING,
    BackgroundEdit,
    default_interpreter,
    edit_arguments,
    parse_progress,
)

__all__ = [
    "BackgroundEdit",
    "CANCELLED",
    "FAILED",
    "FINISHED",
    "RUNNING",
    "default_interpreter",
    "edit_arguments",
    "parse_progress",
    "CORONAL_IJK_TO_RAS",
    "DEFAULT_SPACING_MM",
    "DISPLAY_LEVEL",
    "DISPLAY_WINDOW",
    "EDIT_CHOICES",
    "EDIT_OPTIONS",
    "EDIT_START",
    "VolumeArrays",
    "load_into_scene",
    "radiograph_to_volume_arrays",
    "MIN_SLICER_VERSION",
    "slicer_version_problem",
    "SEGMENT_TERMINOLOGY",
    "WorkFolders",
    "run_folder",
    "with_device",
    "with_report",
]
