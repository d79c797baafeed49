"""DICOM Segmentation (highdicom) of the anatomy, referencing the source radiograph.

Every region is its own segment (masks overlap: lungs behind the heart, costophrenic
regions inside lower zones), BINARY, coded with SNOMED CT where a code exists (lung,
heart) and a MedCF-private description for the geometric zones. The segmentation
algorithm is identified (AUTOMATIC, artificial intelligence, name and version), and the
series says in words that the model learned from simulated radiographs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import medcf
from medcf.anatomy.masks import AnatomyMasks
from medcf.io.atomic import write_new_dataset
from medcf.vocab import Organ, Side, Zone

SERIES_DESCRIPTION = "MedCF anatomy, model trained on simulated CXR, research only"


def _segment_descriptions(masks: AnatomyMasks, algorithm_name: str, version: str):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name, version=version, family=codes.cid7162.ArtificialIntelligence)
    lung = codes.SCT.Lung
    laterality = {Side.RIGHT: codes.SCT.Right, Side.LEFT: codes.SCT.Left}
    descriptions, arrays = [], []

    def add(label: str, property_type, mask: np.ndarray, side: Side | None) -> None:
        modifier = [laterality[side]] if side in laterality else None
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=len(descriptions) + 1, segment_label=label,
            segmented_property_category=codes.SCT.Organ if property_type is not None and label in
            ("lung_right", "lung_left", "heart") else codes.SCT.BodyStructure,
            segmented_property_type=property_type,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm,
            tracking_uid=hd.UID(), tracking_id=f"MedCF {label}",
            anatomic_regions=None, primary_anatomic_structures=None,
        ))
        if modifier:  # laterality qualifies the property type (nested, as the macro says)
            descriptions[-1].SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
                hd.sr.CodedConcept(modifier[0].value, modifier[0].scheme_designator, modifier[0].meaning)]
        arrays.append(mask)

    for organ in Organ:
        add(organ.value, codes.SCT.Heart if organ is Organ.HEART else lung, masks.organs[organ], organ.side)
    for side in (Side.RIGHT, Side.LEFT):
        for zone in Zone:
            add(f"{side.value}_{zone.value}_zone", lung, masks.zone(side, zone), side)
        add(f"{side.value}_costophrenic", codes.SCT.Lung, masks.costophrenic(side), side)
    return descriptions, np.stack(arrays, axis=-1)[None]


def write_anatomy_seg(path: str | Path, masks: AnatomyMasks, source, algorithm_name: str = "MedCF anatomy UNet",
                      version: str | None = None) -> Path:
    """Write ``masks`` as a DICOM SEG of the source dataset ``source`` (new series, same study)."""
    import highdicom as hd


    version = version or medcf.__version__
    descriptions, pixels = _segment_descriptions(masks, algorithm_name, version)
    seg = hd.seg.Segmentation(
        source_images=[source], pixel_array=pixels.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
        series_instance_uid=hd.UID(), series_number=int(getattr(source, "SeriesNumber", 0) or 0) + 900,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="MedCF",
        manufacturer_model_name="MedCF anatomy", software_versions=f"medcf {version}",
        device_serial_number="none", series_description=SERIES_DESCRIPTION,
    )
    # General Image, Type 2C: a radiograph's SEG has no Image Orientation (Patient), so it
    # carries the source's Patient Orientation (empty when the source has none).
    seg.PatientOrientation = getattr(source, "PatientOrientation", None) or ""
    return write_new_dataset(Path(path), seg)
