"""Build the lesion bank that ``--method insert`` reads (format: :mod:`medcf.insertion.bank`).

Every finding the world models is built in the chest CT with the world's own models
(:func:`medcf.world.pathology.build_lesion`) and projected for one canonical acquisition:
upright PA at 180 cm, no pose change, no deformation, no habitus, ``size``² pixels. Per
entry (finding × allowed side × zone, or lobe for consolidation, × severity × seed; the
severity ladder grows the same lesion) it keeps:

- ``channel``: the projected water-equivalent line integral of the density change (mm);
- ``extent``: the projected outline (more than ``MASK_THRESHOLD_MM`` of lesion along the
  ray), widened by a blending margin over which the channel is tapered to zero, so that
  composition has no step at the outline and the film is untouched beyond it;
- ``replaced``: 1 − (aerated-lung path length with the lesion / without), the share of the
  film's own lung texture the finding takes away: fluid or collapse replacing lung, lung
  beyond a pneumothorax's pleural line, lung displaced by the enlarged heart.

Once: the lesion-free line integral (water mm) and the projected anatomy bits. Each entry
is cropped to its box and stored in float16 (``replaced`` in uint8), compressed; the JSON
index records the CT, the geometry, the seeds and the ``.npz``'s SHA-256. The same CT and
arguments give the same bytes: the seeds fix every random choice, and the zip entries carry
a fixed date (:func:`_save_npz`).
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt

import medcf
from medcf.insertion.bank import FORMAT, REPLACED_LEVELS, entry_arrays, index_path
from medcf.io.atomic import sha256_of_file, write_new_file, write_new_text
from medcf.vocab import FINDING_SIDES, FINDING_ZONES, Finding, Lobe, Severity, Side, ViewPosition
from medcf.world.ct import ChestCT
from medcf.world.pathology import FLUID, LesionSpec, build_lesion, water_density
from medcf.world.physics import Exposure, basis_weights
from medcf.world.projector import Pose, Projector, SlabStack, geometry_for, slab_sums
from medcf.world.render import MASK_THRESHOLD_MM, World

#: seeds per finding: those with random choices (where a nodule sits, a consolidation's shape,
#: a plate's tilt, the septal lines) get several; the rest are deterministic
DEFAULT_SEEDS = {Finding.NODULE: 3, Finding.CONSOLIDATION: 2, Finding.ATELECTASIS: 2, Finding.EDEMA: 1,
                 Finding.PLEURAL_EFFUSION: 1, Finding.PNEUMOTHORAX: 1, Finding.CARDIOMEGALY: 1}
MARGIN_MM = 4.0  # blending margin around the projected outline (detector mm)
HALF_BITS_DROPPED = 3  # float16 mantissa bits rounded away: 7 bits kept, relative error ≤ 0.4 %, ~30 % smaller
LUNG_PATH_MIN_MM = 5.0  # rays through less lung than this replace nothing (the share would be noise)


@dataclass(frozen=True)
class BankRequest:
    """What to render: ``size``² pixels, these findings, ``seeds`` per finding (None: the defaults)."""

    size: int = 512
    findings: tuple[Finding, ...] = tuple(Finding)
    seeds: int | None = None
    severities: tuple[Severity, ...] = tuple(Severity)

    def seeds_of(self, finding: Finding) -> int:
        return self.seeds if self.seeds is not None else DEFAULT_SEEDS[finding]


def lesion_specs(request: BankRequest) -> list[LesionSpec]:
    """Every lesion the bank holds, in a fixed order (finding, place, seed, severity)."""
    specs = []
    for finding in request.findings:
        sides = FINDING_SIDES[finding] or (None,)
        zones = FINDING_ZONES[finding] or (None,)
        places = [(side, zone, None) for side in sides for zone in zones]
        if finding is Finding.CONSOLIDATION:
            places += [(lobe.side, None, lobe) for lobe in Lobe]
        for side, zone, lobe in places:
            for seed in range(request.seeds_of(finding)):
                for severity in request.severities:
                    if lobe is not None and severity is Severity.SEVERE and seed > 0:
                        continue  # a severe lobar consolidation fills the whole lobe whatever the seed
                    specs.append(LesionSpec(finding, side, zone, severity, seed=seed, lobe=lobe))
    return specs


class BankRenderer:
    """The canonical acquisition over one CT: projector, background, anatomy and lung path."""

    def __init__(self, ct: ChestCT, size: int):
        self.ct, self.size = ct, size
        self.world = World(ct)
        self.geometry = geometry_for(ViewPosition.PA)
        self.projector = Projector(ct, self.geometry, Pose(), size)
        self.axis = self.geometry.beam_axis
        self.weights = basis_weights(Exposure().energy_kev)
        base_stack, anatomy_stack = self.world.stacks(self.axis)
        relative = torch.from_numpy((self.weights / self.weights[0]).astype(np.float32))
        water_sums = torch.einsum("c,kchw->khw", relative, base_stack.sums)[:, None]
        # water-equivalent mm at the acquisition's effective energy
        self.background = self.projector.project(SlabStack(water_sums, base_stack.centres_mm, self.axis))[0]
        self.anatomy = World._bits(self.projector.project(anatomy_stack)[:-1])
        self.lung = ct.lung(Side.BILATERAL)
        self.lung_path = self.projector.project(slab_sums(self.lung.astype(np.float32), ct, self.axis,
                                                          self.world.slab_voxels))[0]

    def render(self, spec: LesionSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(channel mm, extent, replaced share) of one lesion on the whole grid, before the margin."""
        volume = build_lesion(self.ct, spec)
        water = water_density(self.ct)[volume.box]
        lung = self.lung[volume.box]
        delta = volume.delta
        # the share of each lung voxel's air the lesion takes: fluid or tissue filling it
        # (delta over what airless lung would add), or the air of a pneumothorax replacing it
        filled = np.clip(delta / np.maximum(FLUID - water, 1e-3), 0.0, 1.0)
        emptied = (delta < -0.5 * water).astype(np.float32)
        share = np.where(lung, np.maximum(filled, emptied), 0.0).astype(np.float32)
        stack = slab_sums(np.stack([delta, volume.mask.astype(np.float32), share]), self.ct, self.axis,
                          self.world.slab_voxels, box=volume.box)
        channel, thickness, replaced_mm = self.projector.project(stack)
        replaced = np.where(self.lung_path > LUNG_PATH_MIN_MM,
                            np.clip(replaced_mm / np.maximum(self.lung_path, 1e-3), 0.0, 1.0), 0.0)
        return channel.astype(np.float32), thickness > MASK_THRESHOLD_MM, replaced.astype(np.float32)

    @property
    def margin_px(self) -> float:
        return MARGIN_MM / self.projector.pixel_mm


def tapered(channel: np.ndarray, extent: np.ndarray, replaced: np.ndarray, margin_px: float):
    """The arrays with the blending margin: 1 inside the outline, a raised cosine to 0 over
    ``margin_px`` outside it; the widened extent is where the taper is above 0."""
    outside = distance_transform_edt(~extent) if extent.any() else np.full(extent.shape, np.inf)
    ramp = np.clip(1.0 - outside / margin_px, 0.0, 1.0)
    weight = (0.5 - 0.5 * np.cos(np.pi * ramp)).astype(np.float32)
    return channel * weight, weight > 0, replaced * weight


def compact_half(values: np.ndarray, dropped: int = HALF_BITS_DROPPED) -> np.ndarray:
    """``values`` as float16 rounded to ``10 - dropped`` mantissa bits: far below the film's
    noise, and the zeros of the low bits compress (the bank stays a few MB)."""
    half = np.asarray(values, dtype=np.float16).view(np.uint16).astype(np.uint32)
    if dropped > 0:
        half = (half + (1 << (dropped - 1))) & ~np.uint32((1 << dropped) - 1)
    return half.astype(np.uint16).view(np.float16)


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(mask)
    return int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1


def ct_record(ct: ChestCT, source: str) -> dict:
    """The CT a bank was built from: where from, its grid, and a digest of its values."""
    digest = hashlib.sha256(np.ascontiguousarray(ct.hu).tobytes())
    digest.update(np.ascontiguousarray(ct.labels).tobytes())
    return {"source": source, "shape": list(ct.shape), "spacing_mm": [float(s) for s in ct.spacing],
            "sha256": digest.hexdigest()}


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """A compressed ``.npz`` whose bytes depend on the arrays only (fixed zip dates), so a
    rebuild from the same CT has the same SHA-256."""
    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
            for name, array in arrays.items():
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
                info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, buffer.getvalue(), compresslevel=9)
    return write_new_file(path, write)


def build_lesion_bank(ct: ChestCT, out: str | Path, request: BankRequest = BankRequest(), ct_source: str = "",
                      progress: bool = True) -> Path:
    """Render ``request`` over ``ct`` and write ``out`` (a new ``.npz``) and its JSON index."""
    from tqdm import tqdm

    out = Path(out)
    renderer = BankRenderer(ct, request.size)
    arrays: dict[str, np.ndarray] = {"background": compact_half(renderer.background),
                                     "anatomy": renderer.anatomy.astype(np.uint8)}
    entries, skipped = [], []
    for spec in tqdm(lesion_specs(request), desc="lesion bank", unit="lesion", disable=not progress):
        try:
            channel, extent, replaced = renderer.render(spec)
        except ValueError as error:  # no room for this finding in this CT's zone
            skipped.append({"spec": _spec_dict(spec), "why": str(error)})
            continue
        if not extent.any():
            skipped.append({"spec": _spec_dict(spec), "why": "no projected extent"})
            continue
        channel, extent, replaced = tapered(channel, extent, replaced, renderer.margin_px)
        r0, c0, r1, c1 = _bbox(extent)
        key = len(entries)
        names = entry_arrays(key)
        crop = (slice(r0, r1), slice(c0, c1))
        arrays[names[0]] = compact_half(channel[crop])
        arrays[names[1]] = extent[crop].astype(np.uint8)
        arrays[names[2]] = np.round(replaced[crop] * REPLACED_LEVELS).astype(np.uint8)
        entries.append({"key": key, **_spec_dict(spec), "bbox": [r0, c0, r1, c1],
                        "peak_mm": round(float(np.abs(channel).max()), 3), "area_px": int(extent.sum())})
    out.parent.mkdir(parents=True, exist_ok=True)
    _save_npz(out, arrays)
    geometry = renderer.geometry
    index = {"format": FORMAT, "medcf": medcf.__version__, "ct": ct_record(ct, ct_source),
             "geometry": {"view": geometry.view.value, "sid_mm": geometry.sid_mm, "odd_mm": geometry.odd_mm,
                          "field_mm": geometry.field_mm, "size": request.size,
                          "pixel_mm": round(renderer.projector.pixel_mm, 5), "pose": "identity",
                          "energy_kev": round(Exposure().energy_kev, 3)},
             "units": {"channel": f"water-equivalent mm (float16, {10 - HALF_BITS_DROPPED} mantissa bits)",
                       "background": f"water-equivalent mm (float16, {10 - HALF_BITS_DROPPED} mantissa bits)",
                       "replaced": f"share 0..1 in uint8 steps of 1/{REPLACED_LEVELS}",
                       "extent": "uint8 0/1, with the blending margin"},
             "margin_mm": MARGIN_MM, "seeds": {f.value: request.seeds_of(f) for f in request.findings},
             "entries": entries, "skipped": skipped, "sha256": sha256_of_file(out)}
    write_new_text(index_path(out), json.dumps(index, indent=1) + "\n")
    return out


def _spec_dict(spec: LesionSpec) -> dict:
    return {"finding": spec.finding.value, "side": spec.side and spec.side.value, "zone": spec.zone and spec.zone.value,
            "lobe": spec.lobe and spec.lobe.value, "severity": spec.severity.value, "seed": spec.seed}
