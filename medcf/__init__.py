"""MedCF: counterfactual chest radiographs for research.

The core library is free of Slicer and Qt. DICOM stays at the two ends of the
data path (``medcf.io``); everything in between works on arrays and small
dataclasses. Outputs are synthetic and for research only, never for diagnosis.
"""

__version__ = "0.1.0"

RESEARCH_ONLY_NOTICE = (
    "MedCF output is synthetic, for research only, never for diagnosis."
)
