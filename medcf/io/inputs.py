"""One entry for every image format MedCF accepts: DICOM (file, series, study, server),
16/8-bit grayscale PNG, and 2D NIfTI. Each becomes an :class:`InputImage` that remembers
its format, so outputs can be written back in the same format.

NIfTI and PNG carry no polarity or window: they are taken as display images with bright =
dense (MONOCHROME2 sense) and scaled to [0, 1] by their own range (NIfTI) or bit depth (PNG).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medcf.errors import InputError
from medcf.io.atomic import write_new_file
from medcf.io.images import read_png
from medcf.io.reader import Radiograph, load_radiograph
from medcf.vocab import StrEnum


class InputFormat(StrEnum):
    DICOM = "dicom"
    PNG = "png"
    NIFTI = "nifti"


NIFTI_SUFFIXES = (".nii", ".nii.gz")
# The smallest film MedCF takes, in pixels on the short side. Why 128: the segmenter sees
# 256 px, so a smaller film is enlarged more than twofold and its masks are drawn from
# detail it does not have; at 128 px a lung zone is about 20 px high and a costophrenic
# region about 10 px across, the least at which the editor's regions still mean something.
# Real radiographs are 1000-3000 px; anything below 128 is a thumbnail or an icon.
MIN_MATRIX = 128


@dataclass
class InputImage:
    """A radiograph from any accepted format, as display pixels in [0, 1]."""

    display: np.ndarray
    format: InputFormat
    path: Path
    spacing_mm: tuple[float, float] | None = None  # (row, column)
    radiograph: Radiograph | None = None  # DICOM inputs
    affine: np.ndarray | None = None  # NIfTI inputs (4x4), to write outputs in the same space

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.display.shape[0]), int(self.display.shape[1])


def input_format(path: str | Path) -> InputFormat:
    name = str(path).lower()
    if name.endswith(".png"):
        return InputFormat.PNG
    if name.endswith(NIFTI_SUFFIXES):
        return InputFormat.NIFTI
    return InputFormat.DICOM


def read_nifti_2d(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """A 2D NIfTI (or 3D with one slice) as a (rows, cols) array, its affine and spacing.
    Stored x is the image column and y the row (see :func:`radiograph_affine`)."""
    import nibabel as nib

    try:
        image = nib.load(str(path))
        data = np.asarray(image.dataobj, dtype=np.float32)
    except Exception as error:  # nibabel raises many types for a bad file
        raise InputError(f"{path} is not a readable NIfTI file: {error}") from None
    data = np.squeeze(data)
    if data.ndim != 2:
        raise InputError(f"{path} holds a {data.ndim}D image of shape {image.shape}; MedCF edits 2D radiographs")
    zooms = image.header.get_zooms()
    return data.T, image.affine, (float(zooms[1]), float(zooms[0]))


def read_input(path: str | Path) -> InputImage:
    """Read a radiograph in any accepted format (DICOM selection rules as ``medcf inspect``);
    a film smaller than :data:`MIN_MATRIX` on its short side is refused."""
    image = _read_input(path)
    if min(image.shape) < MIN_MATRIX:
        raise InputError(f"{image.path} is {image.shape[0]}x{image.shape[1]} pixels; MedCF needs at least "
                         f"{MIN_MATRIX} on the short side (a thumbnail? give the full-size film)")
    return image


def _read_input(path: str | Path) -> InputImage:
    path = Path(path)
    kind = input_format(path)
    if kind is not InputFormat.DICOM and not path.is_file():
        raise InputError(f"{path}: no such file")
    if kind is InputFormat.PNG:
        return InputImage(read_png(path), kind, path)
    if kind is InputFormat.NIFTI:
        data, affine, spacing = read_nifti_2d(path)
        low, high = float(data.min()), float(data.max())
        if high <= low:
            raise InputError(f"{path} is a blank image (every pixel is {low:g})")
        return InputImage(((data - low) / (high - low)).astype(np.float32), kind, path, spacing, affine=affine)
    radiograph = load_radiograph(path)
    return InputImage(radiograph.display, kind, radiograph.path or path, radiograph.spacing_mm, radiograph=radiograph)


def radiograph_affine(spacing_mm: tuple[float, float] | None) -> np.ndarray:
    """NIfTI affine of a frontal radiograph stored as x = column, y = row: a coronal plane
    in RAS, columns towards the patient's left (-R), rows towards the feet (-S), the
    third axis posterior (-A), so viewers show the patient's right on the screen's left,
    as a PA film is read. The same placement as the Slicer module's volumes
    (``MedCFExtension/MedCF/MedCFLib/logic.py``); a viewing aid, not a measured geometry."""
    row, col = spacing_mm or (1.0, 1.0)
    affine = np.zeros((4, 4))
    affine[0, 0] = -col
    affine[2, 1] = -row
    affine[1, 2] = -1.0
    affine[3, 3] = 1.0
    return affine


def write_nifti_2d(path: str | Path, image: np.ndarray, affine: np.ndarray, description: str = "") -> Path:
    """Write a (rows, cols) array as NIfTI (x = column, y = row), atomically."""
    import nibabel as nib


    nifti = nib.Nifti1Image(np.ascontiguousarray(np.asarray(image).T[:, :, None]), affine)
    nifti.header["descrip"] = description[:79].encode()
    if image.dtype == np.uint8:
        nifti.header.set_intent("label")
    data = nifti.to_bytes()
    if str(path).endswith(".gz"):
        data = gzip.compress(data, compresslevel=6, mtime=0)
    return write_new_file(Path(path), lambda tmp: tmp.write_bytes(data))
