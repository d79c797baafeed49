"""Where a lesion goes on this film: the bank's lesion, registered onto the film's anatomy.

The lesion bank (:mod:`medcf.insertion.bank`) holds each finding as the world drew it on
one canonical film, together with that film's projected lungs and heart. Placement
registers that anatomy onto *this* film's masks (given, corrected or segmented) with
SimpleITK (:func:`medcf.anatomy.registration.register_anatomy`: an affine, then a
B-spline), samples the lesion's channel, extent and replaced share through the same map
onto the film's native grid, and checks the anatomy rules there, after the warp, because a
registration can be wrong where the masks are: a nodule lies inside the lung and off the
heart, a pneumothorax at the apex and lateral pleura, an effusion reaches the costophrenic
angle, cardiomegaly borders the heart. A lesion that breaks its rule is replaced by the
bank's next seed; when none keeps it, placement refuses in one line.

An *oracle* placement (``centre``) puts the lesion's centroid at a given film pixel, so an
evaluation can measure the lesion itself apart from where placement would put it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medcf.anatomy.masks import AnatomyMasks
from medcf.anatomy.registration import Anatomy2D, AnatomyRegistration, register_anatomy
from medcf.errors import InputError
from medcf.insertion.bank import BankEntry, BankLesion, LesionBank
from medcf.insertion.placed import PlacedLesion
from medcf.vocab import Finding, Organ, Severity, Side, Zone

CORE = 0.25  # a lesion's core: where its channel reaches this share of its peak
INSIDE_NODULE, ON_HEART_NODULE = 0.9, 0.1  # shares of a nodule's core in the lung / on the heart
INSIDE_LUNG = 0.8  # share of any other lung finding's core inside the (slightly widened) lung
WIDEN = 0.02  # the lung and heart widened by this share of the film's width for the rules
APEX_SHARE = 0.6  # a pneumothorax's centroid lies in this upper share of its lung's height
BASE_SHARE = 0.1  # an effusion reaches this lowest share of its lung's height
BORDERS_HEART = 0.5  # share of an enlarged heart's core within the widened heart


@dataclass(frozen=True)
class LesionRequest:
    """The lesion asked for, in the bank's terms (the editor settles side and zone first)."""

    finding: Finding
    side: Side | None
    zone: Zone | None
    severity: Severity
    seed: int

    def describe(self) -> str:
        where = " ".join(v.value for v in (self.side, self.zone) if v)
        return f"{self.severity.value} {self.finding.value}" + (f" ({where})" if where else "")


def film_anatomy(masks: AnatomyMasks) -> Anatomy2D:
    return Anatomy2D(masks.lung(Side.BILATERAL), masks.organs[Organ.HEART])


def bank_anatomy(bank: LesionBank) -> Anatomy2D:
    return Anatomy2D(bank.organ(Organ.LUNG_RIGHT) | bank.organ(Organ.LUNG_LEFT), bank.organ(Organ.HEART))


@dataclass(frozen=True)
class Warped:
    """One bank lesion on a box of the film (rows ``r0:r1``, cols ``c0:c1``)."""

    box: tuple[int, int, int, int]
    channel: np.ndarray
    extent: np.ndarray
    replaced: np.ndarray

    def shifted(self, rows: int, cols: int, shape: tuple[int, int]) -> "Warped | None":
        """The same lesion moved by (rows, cols) film pixels, cut to the film; None if it leaves it."""
        r0, c0, r1, c1 = self.box
        n0, m0, n1, m1 = r0 + rows, c0 + cols, r1 + rows, c1 + cols
        a0, b0, a1, b1 = max(n0, 0), max(m0, 0), min(n1, shape[0]), min(m1, shape[1])
        if a1 <= a0 or b1 <= b0:
            return None
        cut = (slice(a0 - n0, a1 - n0), slice(b0 - m0, b1 - m0))
        return Warped((a0, b0, a1, b1), self.channel[cut], self.extent[cut], self.replaced[cut])


def warp_lesion(lesion: BankLesion, registration: AnatomyRegistration, shape: tuple[int, int]) -> Warped | None:
    """The bank lesion sampled onto the film through ``registration`` (bilinear), on the
    film box that maps into the lesion's crop; None when no film pixel does."""
    from scipy.ndimage import map_coordinates

    r0, c0, r1, c1 = lesion.entry.bbox
    coarse = registration.coarse
    inside = ((coarse[0] >= r0 - 1) & (coarse[0] <= r1) & (coarse[1] >= c0 - 1) & (coarse[1] <= c1))
    if not inside.any():
        return None
    rows, cols = np.nonzero(inside)
    sr, sc = registration.step
    box = (max(0, int(np.floor((rows.min() - 1) * sr))), max(0, int(np.floor((cols.min() - 1) * sc))),
           min(shape[0], int(np.ceil((rows.max() + 2) * sr))), min(shape[1], int(np.ceil((cols.max() + 2) * sc))))
    grid_r, grid_c = np.mgrid[box[0]:box[2], box[1]:box[3]]
    where = registration.coordinates(grid_r, grid_c) - np.array([r0, c0], np.float32)[:, None, None]

    def sample(array: np.ndarray) -> np.ndarray:
        return map_coordinates(array.astype(np.float32), where, order=1, mode="constant", cval=0.0)

    extent = sample(lesion.extent) > 0.5
    channel = np.where(extent, sample(lesion.channel), 0.0).astype(np.float32)
    replaced = np.where(extent, np.clip(sample(lesion.replaced), 0.0, 1.0), 0.0).astype(np.float32)
    if not extent.any():
        return None
    return Warped(box, channel, extent, replaced)


def _centroid(warped: Warped) -> tuple[float, float]:
    weight = np.abs(warped.channel)
    if weight.sum() <= 0:
        weight = warped.extent.astype(np.float32)
    rows, cols = np.mgrid[0:weight.shape[0], 0:weight.shape[1]]
    total = float(weight.sum())
    return (warped.box[0] + float((weight * rows).sum()) / total, warped.box[1] + float((weight * cols).sum()) / total)


def _widened(mask: np.ndarray, box: tuple[int, int, int, int], pixels: float) -> np.ndarray:
    """``mask`` on ``box``, widened by ``pixels`` (a distance transform on the box and a band around it)."""
    from scipy.ndimage import distance_transform_edt

    pad = int(np.ceil(pixels)) + 1
    r0, c0, r1, c1 = box
    a0, b0 = max(0, r0 - pad), max(0, c0 - pad)
    a1, b1 = min(mask.shape[0], r1 + pad), min(mask.shape[1], c1 + pad)
    part = mask[a0:a1, b0:b1]
    near = distance_transform_edt(~part) <= pixels if part.any() else part
    return near[r0 - a0:r1 - a0, c0 - b0:c1 - b0]


def check_rule(request: LesionRequest, warped: Warped, masks: AnatomyMasks) -> str | None:
    """None when the warped lesion keeps its finding's anatomy rule; else why not, in words."""
    r0, c0, r1, c1 = warped.box
    peak = float(np.abs(warped.channel).max())
    if peak <= 0:
        return "it has no density left on this film"
    sign = -1.0 if request.finding is Finding.PNEUMOTHORAX else 1.0
    core = sign * warped.channel >= CORE * peak
    if not core.any():
        core = np.abs(warped.channel) >= CORE * peak
    size = float(core.sum())
    side = request.side or Side.BILATERAL
    lung_full = masks.lung(side)
    lung = lung_full[r0:r1, c0:c1]
    widen = WIDEN * masks.shape[1]
    finding = request.finding
    if finding is Finding.NODULE:
        inside = float((core & lung).sum()) / size
        on_heart = float((core & masks.organs[Organ.HEART][r0:r1, c0:c1]).sum()) / size
        if inside < INSIDE_NODULE:
            return f"{inside:.0%} of it lies inside the {side.value} lung (needs {INSIDE_NODULE:.0%})"
        if on_heart > ON_HEART_NODULE:
            return f"{on_heart:.0%} of it lies on the heart (at most {ON_HEART_NODULE:.0%})"
        return None
    if finding is Finding.CARDIOMEGALY:
        heart = _widened(masks.organs[Organ.HEART], warped.box, widen)
        share = float((core & heart).sum()) / size
        return None if share >= BORDERS_HEART else f"only {share:.0%} of it borders the heart"
    inside = float((core & _widened(lung_full, warped.box, widen)).sum()) / size
    if inside < INSIDE_LUNG:
        return f"{inside:.0%} of it lies inside the {side.value} lung (needs {INSIDE_LUNG:.0%})"
    rows = np.nonzero(lung_full.any(axis=1))[0]
    top, bottom = float(rows.min()), float(rows.max())
    if finding is Finding.PNEUMOTHORAX:
        row = (_centroid(Warped(warped.box, np.where(core, warped.channel, 0.0), core, core)))[0]
        if (row - top) / max(bottom - top, 1.0) > APEX_SHARE:
            return "its air is not at the apex or the lateral pleura"
    if finding is Finding.PLEURAL_EFFUSION:
        lowest = r0 + float(np.nonzero(warped.extent.any(axis=1))[0].max())  # the thin fluid of the recess counts
        if lowest < bottom - BASE_SHARE * (bottom - top):
            return "it does not reach the costophrenic angle"
    return None


def place_lesion(bank: LesionBank, request: LesionRequest, masks: AnatomyMasks,
                 centre: tuple[float, float] | None = None) -> PlacedLesion:
    """The bank's lesion for ``request`` on this film (``masks``' grid): registered, warped,
    checked against its anatomy rule (the next seed of the bank while it is not kept), with
    its record. ``centre``: oracle placement, the lesion's centroid moved to this film pixel
    (row, col); its rule is checked and recorded, never used to refuse."""
    entries = bank.candidates(request.finding, request.side, request.zone, request.severity)
    if not entries:
        raise InputError(f"insert: the lesion bank holds no {request.describe()}; it holds "
                         f"{', '.join(bank.choices(request.finding)) or 'none'} (side/zone)")
    registration = register_anatomy(bank_anatomy(bank), film_anatomy(masks))
    shape = masks.shape
    start = request.seed % len(entries)
    tried: list[str] = []
    first: tuple[BankEntry, Warped] | None = None
    for attempt in range(len(entries)):
        entry = entries[(start + attempt) % len(entries)]
        warped = warp_lesion(bank.lesion(entry), registration, shape)
        if warped is None:
            tried.append(f"seed {entry.seed}: off the film")
            continue
        first = first or (entry, warped)
        oracle = None
        if centre is not None:
            row, col = _centroid(warped)
            moved = warped.shifted(int(round(centre[0] - row)), int(round(centre[1] - col)), shape)
            if moved is None:
                raise InputError(f"insert: the oracle centre {centre} puts the lesion off the film")
            warped, oracle = moved, [round(float(centre[0]), 2), round(float(centre[1]), 2)]
        why = check_rule(request, warped, masks)
        if why is None or centre is not None:
            return _placed(bank, request, entry, warped, registration, shape, attempt + 1, why, oracle)
        tried.append(f"seed {entry.seed}: {why}")
    if request.finding is Finding.NODULE and first is not None:
        moved = relocate_nodule(first[1], request, masks)
        if moved is not None and check_rule(request, moved, masks) is None:
            return _placed(bank, request, first[0], moved, registration, shape, len(entries), None, None,
                           relocated=f"moved from where the bank put it ({tried[0]})")
    raise InputError(f"insert: no {request.describe()} of the lesion bank keeps its anatomy rule on this film "
                     f"(registration lung Dice {registration.dice_lungs:.2f}; {'; '.join(tried)}); check the "
                     "anatomy masks (--masks)")


ZONE_THIRDS = (Zone.UPPER, Zone.MIDDLE, Zone.LOWER)  # a zone is a third of the lung's height, top down


def relocate_nodule(warped: Warped, request: LesionRequest, masks: AnatomyMasks) -> Warped | None:
    """The nodule moved to the nearest film pixel where all of it lies inside the asked lung
    and clear of the heart, or None when the lung has no such place. Why this is sound: a
    nodule is a local change of density, so its projected channel does not depend on where
    in the lung it sits; the world's lower-lobe nodules often project behind the heart (the
    lower lobes lie behind it), where the rule does not keep them."""
    from scipy.ndimage import distance_transform_edt

    core = np.abs(warped.channel) >= CORE * float(np.abs(warped.channel).max())
    rows, cols = np.nonzero(core)
    radius = 0.5 * max(rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) + 2.0
    factor = max(1, int(max(masks.shape) // 512))  # distances on a grid of at most ~512 pixels a side
    lung = masks.lung(request.side or Side.BILATERAL)[::factor, ::factor]
    heart = masks.organs[Organ.HEART][::factor, ::factor]
    room = (distance_transform_edt(lung) * factor > radius) & (distance_transform_edt(~heart) * factor > radius)
    if request.zone is not None and lung.any():  # stay in the asked zone: its third of the lung's height
        lung_rows = np.nonzero(lung.any(axis=1))[0]
        top, height = lung_rows.min(), lung_rows.max() + 1 - lung_rows.min()
        third = ZONE_THIRDS.index(request.zone)
        band = np.zeros(lung.shape[0], bool)
        band[top + third * height // 3: top + (third + 1) * height // 3] = True
        room &= band[:, None]
    if not room.any():
        return None
    row, col = _centroid(warped)
    places = np.argwhere(room) * factor
    target = places[np.argmin(((places - np.array([row, col])) ** 2).sum(axis=1))]
    return warped.shifted(int(round(target[0] - row)), int(round(target[1] - col)), masks.shape)


def _placed(bank: LesionBank, request: LesionRequest, entry: BankEntry, warped: Warped,
            registration: AnatomyRegistration, shape: tuple[int, int], tries: int, why: str | None,
            oracle: list[float] | None, relocated: str | None = None) -> PlacedLesion:
    import torch
    import torch.nn.functional as F
    from scipy.ndimage import map_coordinates

    r0, c0, r1, c1 = warped.box
    channel, replaced = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    extent = np.zeros(shape, bool)
    channel[r0:r1, c0:c1], extent[r0:r1, c0:c1], replaced[r0:r1, c0:c1] = warped.channel, warped.extent, warped.replaced
    # the background is smooth: warped on the coarse grid, enlarged bilinearly
    coarse_bg = map_coordinates(bank.background, registration.coarse, order=1, mode="nearest").astype(np.float32)
    background = F.interpolate(torch.from_numpy(coarse_bg)[None, None], size=shape, mode="bilinear",
                               align_corners=False)[0, 0].numpy()
    rows, cols = np.nonzero(extent)
    row, col = _centroid(warped)
    record = {
        "lesion": {"finding": request.finding.value, "side": request.side and request.side.value,
                   "zone": request.zone and request.zone.value, "severity": request.severity.value,
                   "seed": request.seed},
        "bank_entry": {**entry.to_dict(), "describe": entry.describe()},
        "bank": bank.record(),
        "placement": {"centroid_rc": [round(row, 1), round(col, 1)],
                      "bbox_rc": [int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1],
                      "extent_px": int(extent.sum()), "peak_mm": round(float(np.abs(warped.channel).max()), 3),
                      "seeds_tried": tries, "rule": "kept" if why is None else f"broken: {why}",
                      "oracle_centre_rc": oracle, "relocated": relocated},
        "registration": registration.to_dict(),
    }
    return PlacedLesion(channel, extent, replaced, background, record)
