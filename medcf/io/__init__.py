"""DICOM at the two ends of MedCF: read and inspect radiographs, write synthetic ones."""

from medcf.io.display import DisplayTransform, pixel_spacing, to_display
from medcf.io.provenance import Provenance
from medcf.io.reader import (
    InstanceSummary,
    Radiograph,
    StudyInspection,
    inspect_study,
    load_radiograph,
    radiograph_from_dataset,
)
from medcf.io.writer import WrittenImage, burn_watermark, write_synthetic

__all__ = [
    "DisplayTransform",
    "InstanceSummary",
    "Provenance",
    "Radiograph",
    "StudyInspection",
    "WrittenImage",
    "burn_watermark",
    "inspect_study",
    "load_radiograph",
    "pixel_spacing",
    "radiograph_from_dataset",
    "to_display",
    "write_synthetic",
]
