"""Findings built in 3D inside the chest CT, each at mild/moderate/severe.

Every finding is a change of the water-like basis density (see ``physics``)
inside the thorax, plus the 3D mask of where it is, so that the factual image
is the counterfactual plus one more projected channel: nothing else about the
patient, the pose, the exposure or the noise differs between the two.

A finding's random choices (where the nodule sits, the shape of the
consolidation, which septal lines) come from its own seed and do not depend
on the severity, so the severity ladder grows the *same* lesion: regions are
nested and the attenuation change is monotone in severity (tests check it).

Water-like densities used: fluid and collapsed lung 1.0, soft tissue and
blood 1.04-1.05, aerated lung ~0.15-0.25 (from the CT), air 0.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from medcf.vocab import FINDING_SIDES, FINDING_ZONES, LOBAR_FINDINGS, Finding, Lobe, Severity, Side, Zone
from medcf.world.ct import LOBE_LABELS, ChestCT, Structure
from medcf.world.physics import basis_densities

FLUID = 1.0
SOFT_TISSUE = 1.04
AIRWAY_HU = -950  # lung whose 3x3x3 mean is below this is an airway and stays aerated

COLLAPSED_BAND_MM = 10.0  # pneumothorax: depth of compressed lung under the visceral pleura
COLLAPSED_SHARE = 0.5  # share of the displaced lung mass that densifies that band
CARDIOTHORACIC_TARGET = {Severity.MILD: 0.55, Severity.MODERATE: 0.62, Severity.SEVERE: 0.70}


@dataclass(frozen=True)
class LesionSpec:
    """One finding as the world renders it."""

    finding: Finding
    side: Side | None
    zone: Zone | None
    severity: Severity
    seed: int
    count: int = 1  # nodules only
    lobe: Lobe | None = None  # consolidation only: lobar instead of zonal (zone is then None)

    def __post_init__(self) -> None:
        if self.lobe is not None:
            if self.finding not in LOBAR_FINDINGS:
                raise ValueError(f"{self.finding.value}: a lobe applies to {', '.join(f.value for f in LOBAR_FINDINGS)} only")
            if self.side is not self.lobe.side or self.zone is not None:
                raise ValueError(f"{self.lobe.value} lies in the {self.lobe.side.value} lung and takes no zone")
            return
        sides, zones = FINDING_SIDES[self.finding], FINDING_ZONES[self.finding]
        if (sides is None) != (self.side is None) or (sides is not None and self.side not in sides):
            allowed = "none" if sides is None else ", ".join(s.value for s in sides)
            raise ValueError(f"{self.finding.value}: side {self.side and self.side.value} not allowed (allowed: {allowed})")
        if (zones is None) != (self.zone is None) or (zones is not None and self.zone not in zones):
            allowed = "none" if zones is None else ", ".join(z.value for z in zones)
            raise ValueError(f"{self.finding.value}: zone {self.zone and self.zone.value} not allowed (allowed: {allowed})")
        if self.count < 1 or (self.count > 1 and self.finding is not Finding.NODULE):
            raise ValueError("count > 1 applies to nodules only")


@dataclass
class LesionVolume:
    """Change of water-like density and the 3D extent of the finding, inside ``box``
    (a tuple of three slices of the CT grid; outside it nothing changes)."""

    delta: np.ndarray
    mask: np.ndarray
    box: tuple[slice, slice, slice]

    def full(self, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Delta and mask on the whole CT grid (for tests and inspection)."""
        delta, mask = np.zeros(shape, np.float32), np.zeros(shape, bool)
        delta[self.box], mask[self.box] = self.delta, self.mask
        return delta, mask


class Frame:
    """A box of the CT grid that holds a finding: every 3D computation of the finding
    runs on the box only (a lung is ~1/4 of the volume, a nodule ~1/1000)."""

    def __init__(self, ct: ChestCT, box: tuple[slice, slice, slice]):
        self.ct, self.box = ct, box
        self.x, self.y, self.z = (ct.axis_mm(a)[box[a]] for a in range(3))
        self.x, self.y, self.z = self.x[:, None, None], self.y[None, :, None], self.z[None, None, :]
        self.shape = tuple(b.stop - b.start for b in box)

    @classmethod
    def around(cls, ct: ChestCT, mask: np.ndarray, margin_mm: float = 6.0) -> "Frame":
        """The bounding box of ``mask`` plus a margin."""
        box = []
        for axis in range(3):
            others = tuple(a for a in range(3) if a != axis)
            idx = np.flatnonzero(mask.any(axis=others))
            if idx.size == 0:
                raise ValueError("no room for this finding in the chosen side/zone")
            pad = int(np.ceil(margin_mm / ct.spacing[axis]))
            box.append(slice(max(0, idx.min() - pad), min(mask.shape[axis], idx.max() + 1 + pad)))
        return cls(ct, tuple(box))

    @classmethod
    def ball(cls, ct: ChestCT, centre: np.ndarray, radius_mm: float) -> "Frame":
        box = []
        for axis in range(3):
            coords = ct.axis_mm(axis)
            inside = np.flatnonzero(np.abs(coords - centre[axis]) <= radius_mm)
            if inside.size == 0:
                inside = np.array([int(np.argmin(np.abs(coords - centre[axis])))])
            box.append(slice(int(inside.min()), int(inside.max()) + 1))
        return cls(ct, tuple(box))

    def crop(self, volume: np.ndarray) -> np.ndarray:
        return volume[self.box]

    def clip(self, inner: "Frame") -> tuple[tuple[slice, slice, slice], "Frame"]:
        """``inner`` clipped to this frame: where it lies in this frame's arrays, and the clipped frame."""
        box = tuple(slice(max(i.start, o.start), min(i.stop, o.stop)) for i, o in zip(inner.box, self.box))
        local = tuple(slice(b.start - o.start, b.stop - o.start) for b, o in zip(box, self.box))
        return local, Frame(self.ct, box)


def water_density(ct: ChestCT) -> np.ndarray:
    return ct.memo("bases", lambda: basis_densities(ct.hu))[0]


def airways(ct: ChestCT) -> np.ndarray:
    """Airways inside the lungs: where the local (3x3x3) mean density is that of air.

    Averaging first keeps the bronchi and drops single dark voxels of CT noise,
    which would otherwise pepper every consolidation with holes."""
    def compute():
        from scipy.ndimage import uniform_filter

        return (uniform_filter(ct.hu.astype(np.float32), size=3) <= AIRWAY_HU) & ct.lung(Side.BILATERAL)
    return ct.memo("airways", compute)


def midline_mm(ct: ChestCT) -> float:
    def compute():
        x = ct.axis_mm(0)
        lungs = ct.lung(Side.BILATERAL).any(axis=(1, 2))
        idx = np.flatnonzero(lungs)
        return float((x[idx.min()] + x[idx.max()]) / 2.0)
    return ct.memo("midline", compute)


def half_width_mm(ct: ChestCT, side: Side) -> float:
    x = ct.axis_mm(0)[np.flatnonzero(ct.lung(side).any(axis=(1, 2)))]
    return float(np.max(np.abs(x - midline_mm(ct))))


def _pick_voxel(rng: np.random.Generator, candidates: np.ndarray, ct: ChestCT) -> np.ndarray:
    """A random voxel (as mm coordinates) of a boolean volume."""
    idx = np.flatnonzero(candidates)
    if idx.size == 0:
        raise ValueError("no room for this finding in the chosen side/zone")
    i, j, k = np.unravel_index(rng.choice(idx), candidates.shape)
    return np.array([ct.axis_mm(0)[i], ct.axis_mm(1)[j], ct.axis_mm(2)[k]])


def _sides(side: Side) -> tuple[Side, ...]:
    return (Side.LEFT, Side.RIGHT) if side is Side.BILATERAL else (side,)


def _effusion(ct: ChestCT, spec: LesionSpec, rng: np.random.Generator):
    """Dependent fluid in the upright patient: lung below a level that rises
    towards the lateral chest wall (the meniscus). A low level fills only the
    costophrenic recesses first: blunting of the angle."""
    fraction = {Severity.MILD: 0.10, Severity.MODERATE: 0.28, Severity.SEVERE: 0.50}[spec.severity]
    frame = Frame.around(ct, ct.lung(spec.side))
    x, z = frame.x, frame.z
    fill = np.zeros(frame.shape, np.float32)
    for side in _sides(spec.side):
        base, apex = ct.lung_z_range(side)
        height = apex - base
        lateral = np.clip(np.abs(x - midline_mm(ct)) / half_width_mm(ct, side), 0.0, 1.0)
        level = base + fraction * height + 0.35 * height * np.sqrt(fraction) * lateral ** 3
        fill = np.maximum(fill, np.where(frame.crop(ct.lung(side)), np.clip((level - z) / 8.0 + 0.5, 0.0, 1.0), 0.0))
    return frame, fill > 0, fill.astype(np.float32)


def _blob(frame: Frame, centre: np.ndarray, sigma: float, offsets: np.ndarray) -> np.ndarray:
    """Lobulated smooth bump in [0, ~1]: Gaussians at fixed offsets (mm) whose
    width grows with severity, so a larger lesion contains the smaller one."""
    total = np.zeros(frame.shape, np.float32)
    for offset, weight in zip(offsets, (1.0, 0.6, 0.6, 0.5)):
        c = centre + offset
        d2 = (frame.x - c[0]) ** 2 + (frame.y - c[1]) ** 2 + (frame.z - c[2]) ** 2
        total = np.maximum(total, weight * np.exp(-d2 / (2 * sigma * sigma)).astype(np.float32))
    return total


def _consolidation(ct: ChestCT, spec: LesionSpec, rng: np.random.Generator):
    """Airspace filling around a point in the zone; airways stay aerated, which
    draws air bronchograms through the opacity. Returns (frame, region, fill fraction)."""
    if spec.lobe is not None:
        return _lobar_consolidation(ct, spec, rng)
    sigma = {Severity.MILD: 12.0, Severity.MODERATE: 20.0, Severity.SEVERE: 32.0}[spec.severity]
    frame = Frame.around(ct, ct.lung(spec.side))
    fill = np.zeros(frame.shape, np.float32)
    for side in _sides(spec.side):
        centre = _pick_voxel(rng, ct.zone(side, spec.zone) & (ct.lung_depth(side) > 12.0), ct)
        offsets = np.vstack([np.zeros(3), rng.normal(0.0, 12.0, size=(3, 3))])
        # The bump stays below the 0.45 threshold beyond ~1.3 sigma of the farthest offset.
        inner, local = frame.clip(Frame.ball(ct, centre, 2.0 * 32.0 + 40.0))
        alpha = np.clip((_blob(local, centre, sigma, offsets) - 0.45) / 0.25, 0.0, 1.0)
        parenchyma = local.crop(ct.lung(side) & ~airways(ct))
        fill[inner] = np.maximum(fill[inner], np.where(parenchyma, alpha, 0.0))
    return frame, fill > 0, fill


def _lobar_consolidation(ct: ChestCT, spec: LesionSpec, rng: np.random.Generator):
    """Consolidation confined to one lobe: the fissures stop it (a straight edge on
    the film), the airways stay aerated. Mild and moderate fill part of the lobe
    around a point deep in it; severe fills the whole lobe (lobar pneumonia)."""
    lobe = ct.structure(LOBE_LABELS[spec.lobe])
    frame = Frame.around(ct, lobe)
    parenchyma = frame.crop(lobe & ~airways(ct))
    if spec.severity is Severity.SEVERE:
        fill = parenchyma.astype(np.float32)
        return frame, fill > 0, fill
    depth = ct.depth(("lobe", spec.lobe), lobe)
    centre = _pick_voxel(rng, lobe & (depth > 0.5 * depth.max()), ct)
    offsets = np.vstack([np.zeros(3), rng.normal(0.0, 15.0, size=(3, 3))])
    sigma = {Severity.MILD: 22.0, Severity.MODERATE: 38.0}[spec.severity]
    alpha = np.clip((_blob(frame, centre, sigma, offsets) - 0.45) / 0.25, 0.0, 1.0)
    fill = np.where(parenchyma, alpha, 0.0).astype(np.float32)
    return frame, fill > 0, fill


def _atelectasis(ct: ChestCT, spec: LesionSpec, rng: np.random.Generator):
    """Plate-like collapse (a disc of airless lung, near horizontal) in the zone,
    plus volume loss: the hemidiaphragm rises under the lung (moderate/severe)."""
    thickness = {Severity.MILD: 5.0, Severity.MODERATE: 10.0, Severity.SEVERE: 18.0}[spec.severity]
    radius = {Severity.MILD: 30.0, Severity.MODERATE: 45.0, Severity.SEVERE: 65.0}[spec.severity]
    elevation = {Severity.MILD: 0.0, Severity.MODERATE: 7.5, Severity.SEVERE: 15.0}[spec.severity]
    side = spec.side
    centre = _pick_voxel(rng, ct.zone(side, spec.zone) & (ct.lung_depth(side) > 15.0), ct)
    normal = np.array([rng.normal(0, 0.15), rng.normal(0, 0.15), 1.0])
    normal /= np.linalg.norm(normal)
    frame = Frame.around(ct, ct.lung(side))
    lung = frame.crop(ct.lung(side))
    dx, dy, dz = frame.x - centre[0], frame.y - centre[1], frame.z - centre[2]
    along = dx * normal[0] + dy * normal[1] + dz * normal[2]
    across2 = dx ** 2 + dy ** 2 + dz ** 2 - along ** 2
    plate = (np.abs(along) < thickness / 2.0) & (across2 < radius ** 2)
    region = lung & plate
    if elevation > 0 and spec.zone is Zone.LOWER:
        zc = frame.z[0, 0]
        lowest = np.argmax(lung, axis=2)
        # Only where the lung rests on the diaphragm, not on the heart or the mediastinum.
        under = np.take_along_axis(frame.crop(ct.labels), np.maximum(lowest - 1, 0)[:, :, None], axis=2)[:, :, 0]
        base, apex = ct.lung_z_range(side)
        on_diaphragm = (lung.any(axis=2) & (under == int(Structure.OTHER)) & (lowest > 0)
                        & (zc[lowest] < base + 0.35 * (apex - base)))
        bottom = np.where(on_diaphragm, zc[lowest], np.inf)[:, :, None]
        region |= lung & (frame.z - bottom < elevation) & frame.crop(ct.zone(side, Zone.LOWER))
    return frame, region


def _cardiomegaly(ct: ChestCT, spec: LesionSpec, rng: np.random.Generator):
    """The heart dilates leftward and upward from its right border and its base on
    the diaphragm until the cardiothoracic ratio reaches the severity's target."""
    from scipy.ndimage import map_coordinates

    heart = ct.structure(Structure.HEART)
    x, y, z = (ct.axis_mm(axis) for axis in range(3))
    hx = x[np.flatnonzero(heart.any(axis=(1, 2)))]
    lx = x[np.flatnonzero(ct.lung(Side.BILATERAL).any(axis=(1, 2)))]
    base_ratio = (hx.max() - hx.min()) / (lx.max() - lx.min())
    # The projected ratio grows more slowly than the 3D one (the lungs' widest span is
    # lower and more posterior than the heart's): exponent fitted on PA renderings
    # (10 seeds: mean projected ratio 0.546 / 0.613 / 0.701 for 0.55 / 0.62 / 0.70).
    grow_x = max((CARDIOTHORACIC_TARGET[spec.severity] / base_ratio) ** 1.1, 1.03)
    grow_y = 1.0 + 0.45 * (grow_x - 1.0)  # dilated ventricles push left and back more than up
    grow_z = 1.0 + 0.25 * (grow_x - 1.0)
    hy = y[np.flatnonzero(heart.any(axis=(0, 2)))]
    hz = z[np.flatnonzero(heart.any(axis=(0, 1)))]
    centre = np.array([hx.max() - 0.15 * (hx.max() - hx.min()), hy.mean(), hz.min()])
    grow = (grow_x, grow_y, grow_z)
    frame = Frame.around(ct, heart, margin_mm=(max(grow) - 1.0) * float(np.ptp(hx)) + 10.0)
    grid = (frame.x, frame.y, frame.z)
    index = [(centre[a] + (grid[a] - centre[a]) / grow[a] - axis_mm[0]) / ct.spacing[a]
             for a, axis_mm in enumerate((x, y, z))]
    grown = map_coordinates(heart.astype(np.float32), np.broadcast_arrays(*index), order=1, mode="constant") > 0.5
    # The dilated heart displaces lung and the unlabelled pericardial fat and soft tissue
    # around it, never bone (ribs, sternum, spine keep their place).
    displaceable = frame.crop(ct.lung(Side.BILATERAL) | ((ct.labels == int(Structure.OTHER)) & (ct.hu < 150)))
    above_base = frame.z > hz.min() + 5.0  # the diaphragm under the heart stays where it is
    return frame, grown & ~frame.crop(heart) & displaceable & (above_base | frame.crop(ct.lung(Side.BILATERAL)))


def _pneumothorax(ct: ChestCT, spec: LesionSpec, rng: np.random.Generator):
    """Air between the chest wall and the collapsing lung, deepest at the apex and
    laterally (upright patient), with no lung markings in it; the visceral
    pleura shows as a thin line at the lung edge, and the lung just inside it is
    compressed. Returns (air, pleural line, compressed band)."""
    depth = {Severity.MILD: 8.0, Severity.MODERATE: 20.0, Severity.SEVERE: 38.0}[spec.severity]
    side = spec.side
    frame = Frame.around(ct, ct.lung(side))
    base, apex = ct.lung_z_range(side)
    height_weight = np.clip(0.25 + 0.75 * (frame.z - base) / (apex - base), 0.0, 1.0)
    half = half_width_mm(ct, side)
    lateral_weight = np.clip((np.abs(frame.x - midline_mm(ct)) - 0.2 * half) / (0.4 * half), 0.0, 1.0)
    reach = depth * height_weight * lateral_weight
    wall = frame.crop(ct.wall_distance())
    lung = frame.crop(ct.lung(side))
    air = lung & (wall < reach)
    line = lung & ~air & (wall < reach + 1.5) & (reach > 1.0)
    band = lung & ~air & ~line & (wall < reach + 1.5 + COLLAPSED_BAND_MM) & (reach > 1.0)
    return frame, air, line, band


def _nodule(ct: ChestCT, spec: LesionSpec, rng: np.random.Generator):
    """Solid round lesions (severe: a mass), lobulated, wholly inside the lung.

    The smallest is 12 mm across: nodules under about a centimetre are rarely seen on a
    chest radiograph, and at the 256² working size of the default model and judge an
    8 mm nodule had a contrast-to-texture ratio of 1.2 (0.8 after the autoencoder), too
    faint to draw or to judge (docs/world.md)."""
    radius = {Severity.MILD: 6.0, Severity.MODERATE: 9.0, Severity.SEVERE: 16.0}[spec.severity]
    side = spec.side
    depth = ct.lung_depth(side)
    room = ct.zone(side, spec.zone) & (depth > 18.0)
    if not room.any():
        room = ct.zone(side, spec.zone) & (depth > 0.6 * depth[ct.zone(side, spec.zone)].max())
    frame = Frame.around(ct, ct.lung(side))
    region = np.zeros(frame.shape, bool)
    for _ in range(spec.count):
        centre = _pick_voxel(rng, room, ct)
        lobes = rng.normal(0.0, 0.35, size=(3, 3))
        for offset, scale in zip(np.vstack([np.zeros(3), lobes]), (1.0, 0.7, 0.7, 0.7)):
            c = centre + offset * radius
            region |= (frame.x - c[0]) ** 2 + (frame.y - c[1]) ** 2 + (frame.z - c[2]) ** 2 < (scale * radius) ** 2
    return frame, region & frame.crop(ct.lung(side))


def _edema(ct: ChestCT, spec: LesionSpec, rng: np.random.Generator):
    """Perihilar haze fading to the periphery (bat wing) and, from moderate on,
    septal (Kerley B) lines: short horizontal plates at the lung bases against
    the lateral chest wall. Returns (fill fraction, line region)."""
    amplitude = {Severity.MILD: 0.10, Severity.MODERATE: 0.22, Severity.SEVERE: 0.40}[spec.severity]
    sigma = {Severity.MILD: 45.0, Severity.MODERATE: 58.0, Severity.SEVERE: 72.0}[spec.severity]
    lines_per_side = {Severity.MILD: 0, Severity.MODERATE: 8, Severity.SEVERE: 16}[spec.severity]
    frame = Frame.around(ct, ct.lung(spec.side))
    x, y, z = frame.x, frame.y, frame.z
    fill = np.zeros(frame.shape, np.float32)
    lines = np.zeros(frame.shape, bool)
    wall = ct.wall_distance()
    for side in _sides(spec.side):
        lung = frame.crop(ct.lung(side))
        middle = ct.zone(side, Zone.MIDDLE)
        where = np.nonzero(middle)
        medial = np.percentile(np.abs(ct.axis_mm(0)[where[0]] - midline_mm(ct)), 5)
        sign = -1.0 if side is Side.LEFT else 1.0  # RAS: the patient's left is -x
        hilum = np.array([midline_mm(ct) + sign * (medial + 15.0), ct.axis_mm(1)[where[1]].mean(),
                          ct.axis_mm(2)[where[2]].mean()])
        d2 = (x - hilum[0]) ** 2 + (y - hilum[1]) ** 2 + (z - hilum[2]) ** 2
        # The Gaussian is cut at 15% of its peak so the haze has an edge the lesion mask can hold.
        haze = np.clip((np.exp(-d2 / (2 * sigma ** 2)) - 0.15) / 0.85, 0.0, 1.0)
        fill = np.maximum(fill, np.where(lung, amplitude * haze, 0.0).astype(np.float32))
        # Always draw the severe set, keep the first ones: the ladder nests.
        line_rng = np.random.default_rng([spec.seed, 7, int(side is Side.LEFT)])
        candidates = ct.zone(side, Zone.LOWER) & (wall > 2.0) & (wall < 12.0)
        for index in range(16):
            centre = _pick_voxel(line_rng, candidates, ct)
            if index >= lines_per_side:
                continue
            inner, local = frame.clip(Frame.ball(ct, centre, 12.0))
            disc = (((local.x - centre[0]) ** 2 + (local.y - centre[1]) ** 2 < 10.0 ** 2)
                    & (np.abs(local.z - centre[2]) < 1.3))
            lines[inner] |= disc & local.crop(ct.lung(side) & (wall < 14.0))
    return frame, fill, lines


def build_lesion(ct: ChestCT, spec: LesionSpec) -> LesionVolume:
    """The 3D change for ``spec``: density delta on the water basis and its mask."""
    rng = np.random.default_rng([spec.seed, 3])
    finding = spec.finding
    if finding is Finding.PLEURAL_EFFUSION:
        frame, region, fill = _effusion(ct, spec, rng)
        target = FLUID
    elif finding is Finding.CONSOLIDATION:
        frame, region, fill = _consolidation(ct, spec, rng)
        target = FLUID
    elif finding is Finding.ATELECTASIS:
        frame, region = _atelectasis(ct, spec, rng)
        fill, target = region, FLUID
    elif finding is Finding.CARDIOMEGALY:
        frame, region = _cardiomegaly(ct, spec, rng)
        fill, target = region, SOFT_TISSUE + 0.01
    elif finding is Finding.NODULE:
        frame, region = _nodule(ct, spec, rng)
        fill, target = region, SOFT_TISSUE
    elif finding is Finding.PNEUMOTHORAX:
        frame, air, line, band = _pneumothorax(ct, spec, rng)
        water = frame.crop(water_density(ct))
        # Lung tissue is not lost, it collapses: part of the mass the air displaced
        # densifies the band of lung under the pleural line (capped at airless lung).
        moved = COLLAPSED_SHARE * float(water[air].sum()) / max(float(water[band].sum()), 1e-6)
        compressed = np.minimum(water * (1.0 + moved), FLUID) - water
        delta = np.where(air, -water, 0.0) + np.where(line, 0.25, 0.0) + np.where(band, compressed, 0.0)
        return LesionVolume(np.asarray(delta, np.float32), air | line | band, frame.box)
    elif finding is Finding.EDEMA:
        frame, haze, lines = _edema(ct, spec, rng)
        water = frame.crop(water_density(ct))
        delta = (haze + np.where(lines, 0.5, 0.0)) * (FLUID - water)
        region = (haze > 0) | lines
        return LesionVolume(np.asarray(delta, np.float32), region, frame.box)
    else:  # pragma: no cover - the enum is closed
        raise ValueError(f"unknown finding {finding}")
    water = frame.crop(water_density(ct))
    delta = np.asarray(fill, np.float32) * (target - water)
    return LesionVolume(delta.astype(np.float32), np.asarray(region, bool), frame.box)


def lesions_overlap(ct: ChestCT, first: LesionSpec, second: LesionSpec) -> bool:
    """Whether two findings, each at its severe extent, would share any voxel.

    Findings add density on one basis; where two overlap the sum would exceed
    airless lung, so co-occurring findings are only placed apart."""
    a = build_lesion(ct, replace(first, severity=Severity.SEVERE))
    b = build_lesion(ct, replace(second, severity=Severity.SEVERE))
    common = tuple(slice(max(p.start, q.start), min(p.stop, q.stop)) for p, q in zip(a.box, b.box))
    if any(c.start >= c.stop for c in common):
        return False
    local_a = tuple(slice(c.start - p.start, c.stop - p.start) for c, p in zip(common, a.box))
    local_b = tuple(slice(c.start - q.start, c.stop - q.start) for c, q in zip(common, b.box))
    return bool((a.mask[local_a] & b.mask[local_b]).any())
