"""Who the simulated patient is, beyond the one CT's anatomy: breasts, body fat, bone density.

Both matter for what a model learns: breast shadows overlie the lung bases
like an effusion or consolidation would, and a thick soft-tissue envelope
raises scatter and noise and flattens contrast. They belong to the patient,
so they appear identically in the factual and the counterfactual image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medcf.vocab import Side
from medcf.world.ct import ChestCT
from medcf.world.pathology import Frame, LesionVolume, midline_mm, half_width_mm

BREAST_DENSITY = 0.97  # fibroglandular tissue in fat, water-like units


@dataclass(frozen=True)
class Habitus:
    """Seeded patient traits the CT does not carry."""

    breasts: bool = False
    breast_radius_mm: float = 65.0  # lateral radius; depth and height follow
    breast_ptosis_mm: float = 20.0  # how far the breast hangs below its base
    soft_tissue_mm: float = 0.0  # extra subcutaneous tissue along every ray through the body
    bone_density: float = 1.0  # bone mineral relative to the CT's patient (osteopenia < 1)


def draw_habitus(seed: int) -> Habitus:
    rng = np.random.default_rng([seed, 5])
    return Habitus(breasts=bool(rng.random() < 0.5), breast_radius_mm=float(rng.uniform(45.0, 75.0)),
                   breast_ptosis_mm=float(rng.uniform(5.0, 40.0)), soft_tissue_mm=float(rng.gamma(2.0, 10.0)),
                   bone_density=float(rng.uniform(0.7, 1.15)))


def body(ct: ChestCT) -> np.ndarray:
    """The patient (prepared CTs hold exactly -1000 HU outside the body; the lungs are inside)."""
    return ct.memo("body", lambda: (ct.hu > -995) | ct.lung(Side.BILATERAL))


def breast_volume(ct: ChestCT, habitus: Habitus) -> LesionVolume | None:
    """Two half-ellipsoids of breast tissue on the anterior chest wall over the lower
    lungs, added where there is no body yet (a male CT gains them in front)."""
    if not habitus.breasts:
        return None
    patient = body(ct)
    y_axis, z_axis = ct.axis_mm(1), ct.axis_mm(2)
    parts = []
    for side, sign in ((Side.LEFT, -1.0), (Side.RIGHT, 1.0)):  # RAS: the patient's left is -x
        base, apex = ct.lung_z_range(side)
        x_c = midline_mm(ct) + sign * 0.5 * half_width_mm(ct, side)
        z_c = base + 0.55 * (apex - base) - habitus.breast_ptosis_mm
        i = int(np.argmin(np.abs(ct.axis_mm(0) - x_c)))
        k = int(np.argmin(np.abs(z_axis - (z_c + habitus.breast_ptosis_mm))))
        column = np.flatnonzero(patient[i, :, k])
        if column.size == 0:
            continue
        y_c = float(y_axis[column.max()]) - 10.0  # the base sits on the anterior chest wall
        radii = np.array([habitus.breast_radius_mm, 0.8 * habitus.breast_radius_mm, 0.9 * habitus.breast_radius_mm])
        centre = np.array([x_c, y_c, z_c])
        frame = Frame.ball(ct, centre, float(radii.max()) + 5.0)
        inside = (((frame.x - x_c) / radii[0]) ** 2 + ((frame.y - y_c) / radii[1]) ** 2
                  + ((frame.z - z_c) / radii[2]) ** 2) < 1.0
        parts.append((frame, inside & (frame.y > y_c - 15.0) & ~frame.crop(patient)))
    if not parts:
        return None
    box = tuple(slice(min(f.box[a].start for f, _ in parts), max(f.box[a].stop for f, _ in parts)) for a in range(3))
    whole = Frame(ct, box)
    mask = np.zeros(whole.shape, bool)
    for frame, inside in parts:
        local, _ = whole.clip(frame)
        mask[local] |= inside
    return LesionVolume(np.where(mask, BREAST_DENSITY, 0.0).astype(np.float32), mask, box)
