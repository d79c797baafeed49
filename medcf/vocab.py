"""Controlled vocabularies shared by every part of MedCF.

One module so that the command line, the bundle configs, the report reader,
the simulated world and the benchmark spell a finding, a side or a view the
same way. Values are the strings users type and files store.
"""

from __future__ import annotations

from enum import Enum


class StrEnum(str, Enum):
    """An enum whose members compare equal to, and print as, their value."""

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.value

    @classmethod
    def parse(cls, value: str) -> "StrEnum":
        """Return the member for ``value`` (case-insensitive) or raise ``ValueError``
        naming the accepted spellings, so that CLI and config errors are precise."""
        key = value.strip().lower()
        for member in cls:
            if member.value.lower() == key:
                return member
        choices = ", ".join(m.value for m in cls)
        raise ValueError(f"{value!r} is not a valid {cls.__name__}; choose one of: {choices}")


# --- DICOM vocabularies ---------------------------------------------------


class Photometric(StrEnum):
    """Photometric Interpretation (0028,0004) values MedCF accepts."""

    MONOCHROME1 = "MONOCHROME1"  # high stored value = dark (bone dark)
    MONOCHROME2 = "MONOCHROME2"  # high stored value = bright


class ViewPosition(StrEnum):
    """Radiographic projection, as View Position (0018,5101) spells it."""

    PA = "PA"
    AP = "AP"
    LL = "LL"
    RL = "RL"
    LATERAL = "LATERAL"  # lateral, side not stated
    UNKNOWN = "UNKNOWN"

    @property
    def is_frontal(self) -> bool:
        return self in (ViewPosition.PA, ViewPosition.AP)

    @property
    def is_lateral(self) -> bool:
        return self in (ViewPosition.LL, ViewPosition.RL, ViewPosition.LATERAL)


class SpacingSource(StrEnum):
    """Which attribute a pixel spacing came from.

    Pixel Spacing is calibrated to the patient plane; Imager Pixel Spacing is
    at the detector (includes geometric magnification); Nominal Scanned Pixel
    Spacing belongs to digitised film and secondary captures.
    """

    PIXEL_SPACING = "PixelSpacing"
    IMAGER_PIXEL_SPACING = "ImagerPixelSpacing"
    NOMINAL_SCANNED_PIXEL_SPACING = "NominalScannedPixelSpacing"
    NONE = "none"


class OutputSOPClass(StrEnum):
    """SOP classes MedCF writes synthetic radiographs as."""

    SECONDARY_CAPTURE = "sc"
    DX_FOR_PRESENTATION = "dx"


# --- Clinical vocabularies ------------------------------------------------


class Finding(StrEnum):
    """Findings the editor can add, remove or resize."""

    PLEURAL_EFFUSION = "pleural_effusion"
    CONSOLIDATION = "consolidation"
    ATELECTASIS = "atelectasis"
    CARDIOMEGALY = "cardiomegaly"
    PNEUMOTHORAX = "pneumothorax"
    NODULE = "nodule"
    EDEMA = "edema"


class Organ(StrEnum):
    """Anatomical regions of a frontal chest radiograph that MedCF segments. Lungs are the
    whole projected lung, including the parts behind the heart and below the dome of the
    diaphragm (docs/anatomy.md), so the masks overlap."""

    LUNG_RIGHT = "lung_right"
    LUNG_LEFT = "lung_left"
    HEART = "heart"

    @property
    def side(self) -> "Side | None":
        return {"lung_right": Side.RIGHT, "lung_left": Side.LEFT}.get(self.value)


class Action(StrEnum):
    ADD = "add"
    REMOVE = "remove"


class Side(StrEnum):
    """Side in patient terms (never image left/right)."""

    LEFT = "left"
    RIGHT = "right"
    BILATERAL = "bilateral"


class Zone(StrEnum):
    UPPER = "upper"
    MIDDLE = "middle"
    LOWER = "lower"


class Lobe(StrEnum):
    """Lung lobes (the lingula belongs to the left upper lobe)."""

    RIGHT_UPPER = "right_upper_lobe"
    RIGHT_MIDDLE = "right_middle_lobe"
    RIGHT_LOWER = "right_lower_lobe"
    LEFT_UPPER = "left_upper_lobe"
    LEFT_LOWER = "left_lower_lobe"

    @property
    def side(self) -> "Side":
        return Side.RIGHT if self.value.startswith("right") else Side.LEFT


class Severity(StrEnum):
    MILD = "mild"
    MODERATE = "moderate"
    SEVERE = "severe"


class ReportFinding(StrEnum):
    """Every finding name the report reader (:mod:`medcf.text`) can emit.

    The first thirteen are the names issue 8 fixes; the rest are frequent chest
    radiograph findings that would otherwise be mistaken for one of them (a
    pericardial effusion is not a pleural effusion, subcutaneous emphysema is not
    emphysema) or that a user may want to read back. Only the members that are
    also :class:`Finding` members can be edited; see :mod:`medcf.text.editable`.
    """

    PLEURAL_EFFUSION = "pleural_effusion"
    CONSOLIDATION = "consolidation"
    OPACITY = "opacity"
    ATELECTASIS = "atelectasis"
    CARDIOMEGALY = "cardiomegaly"
    PNEUMOTHORAX = "pneumothorax"
    NODULE = "nodule"
    MASS = "mass"
    EDEMA = "edema"
    PNEUMONIA = "pneumonia"
    EMPHYSEMA = "emphysema"
    GRANULOMA = "granuloma"
    FRACTURE = "fracture"
    # Others, documented in docs/reports.md.
    HYPERINFLATION = "hyperinflation"
    LOW_LUNG_VOLUMES = "low_lung_volumes"
    SCARRING = "scarring"
    CALCIFICATION = "calcification"
    VASCULAR_CONGESTION = "vascular_congestion"
    PLEURAL_THICKENING = "pleural_thickening"
    PERICARDIAL_EFFUSION = "pericardial_effusion"
    SUBCUTANEOUS_EMPHYSEMA = "subcutaneous_emphysema"
    HIATAL_HERNIA = "hiatal_hernia"
    FIBROSIS = "fibrosis"
    COPD = "copd"
    BULLA = "bulla"


# --- Where findings occur, and how anatomy is stored ----------------------

# Which sides and zones make sense per finding (None: the attribute does not apply): the
# simulated world draws findings there, and the editor takes a finding's region from them
# when none is asked.
FINDING_SIDES: dict[Finding, tuple[Side, ...] | None] = {
    Finding.PLEURAL_EFFUSION: (Side.LEFT, Side.RIGHT, Side.BILATERAL),
    Finding.CONSOLIDATION: (Side.LEFT, Side.RIGHT, Side.BILATERAL),
    Finding.ATELECTASIS: (Side.LEFT, Side.RIGHT),
    Finding.CARDIOMEGALY: None,
    Finding.PNEUMOTHORAX: (Side.LEFT, Side.RIGHT),
    Finding.NODULE: (Side.LEFT, Side.RIGHT),
    Finding.EDEMA: (Side.BILATERAL,),
}
FINDING_ZONES: dict[Finding, tuple[Zone, ...] | None] = {
    Finding.PLEURAL_EFFUSION: (Zone.LOWER,),
    Finding.CONSOLIDATION: (Zone.LOWER, Zone.MIDDLE, Zone.UPPER),
    Finding.ATELECTASIS: (Zone.LOWER, Zone.MIDDLE),
    Finding.CARDIOMEGALY: None,
    Finding.PNEUMOTHORAX: (Zone.UPPER,),
    Finding.NODULE: (Zone.UPPER, Zone.MIDDLE, Zone.LOWER),
    Finding.EDEMA: None,
}

LOBAR_FINDINGS = (Finding.CONSOLIDATION,)

# Anatomy label map: one bit per structure, so overlapping structures (the
# heart over the lungs) survive in one 8-bit image. Zones combine with the
# lung bits: left lower zone = lung_left & zone_lower.
ANATOMY_BITS: dict[str, int] = {
    "lung_right": 1, "lung_left": 2, "heart": 4, "mediastinum": 8,
    "zone_upper": 16, "zone_middle": 32, "zone_lower": 64,
}
