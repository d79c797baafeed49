"""The attributes the Digital X-Ray IOD (PS3.3 A.26) requires beyond a plain image.

One place for them, used by the synthetic writer (DX For Presentation output)
and by the simulated world's portable studies, so both pass ``dciodvfy``.
"""

from __future__ import annotations

import highdicom as hd
from pydicom.dataset import Dataset

from medcf.vocab import ViewPosition

CHEST = ("43799004", "SCT", "Chest")
VIEW_CODES = {  # CID 4010 DX View (SNOMED CT)
    ViewPosition.PA: ("272479007", "SCT", "postero-anterior"),
    ViewPosition.AP: ("399348003", "SCT", "antero-posterior"),
    ViewPosition.LL: ("260421009", "SCT", "left lateral"),
    ViewPosition.RL: ("260422002", "SCT", "right lateral"),
}


def complete_dx_modules(ds: Dataset, view: ViewPosition, laterality: str = "U") -> Dataset:
    """Fill the DX Series/Anatomy/Image/Detector/Positioning attributes that are absent.

    Never replaces what is there (a source's rescale or Presentation LUT Shape wins).
    """
    defaults = {
        "ImageLaterality": laterality,
        "PositionerType": "",
        "DetectorType": "",
        "AcquisitionContextSequence": [],
        "RescaleIntercept": 0,
        "RescaleSlope": 1,
        "RescaleType": "US",
        "PresentationLUTShape": "INVERSE" if ds.get("PhotometricInterpretation") == "MONOCHROME1" else "IDENTITY",
        "LossyImageCompression": "00",
        "BurnedInAnnotation": "NO",
        "PixelIntensityRelationship": "LOG",
    }
    for keyword, value in defaults.items():
        if keyword not in ds:
            setattr(ds, keyword, value)
    if "AnatomicRegionSequence" not in ds:
        ds.AnatomicRegionSequence = [hd.sr.CodedConcept(*CHEST)]
    if "ViewCodeSequence" not in ds and view in VIEW_CODES:
        ds.ViewCodeSequence = [hd.sr.CodedConcept(*VIEW_CODES[view])]
    return ds
