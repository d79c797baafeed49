"""Inputs as they come (issue 17): RGB/RGBA PNGs of a grayscale film, the smallest film
MedCF takes, and the user's own anatomy files for ``medcf edit --masks`` (NIfTI label
map, 3D Slicer .seg.nrrd, DICOM SEG): read, mapped to organs, refused with one line when
they do not fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medcf.anatomy.given import organ_of_name, read_masks
from medcf.anatomy.masks import LABEL_LEGEND, AnatomyMasks
from medcf.errors import InputError
from medcf.io.images import read_png
from medcf.io.inputs import MIN_MATRIX, InputFormat, InputImage, radiograph_affine, read_input, write_nifti_2d
from medcf.vocab import Organ

SAMPLE_STUDY = Path(__file__).resolve().parents[1] / "medcf" / "data" / "sample_study"


def _film(shape=(200, 160)) -> np.ndarray:
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
    return ((rows * 7 + cols * 3) % 256).astype(np.uint8)


# --- PNG as it comes -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "P"])
def test_png_with_equal_colour_channels_is_read_as_grayscale(tmp_path, mode):
    gray = _film()
    path = tmp_path / f"film-{mode}.png"
    Image.fromarray(gray).convert(mode).save(path)
    assert Image.open(path).mode == mode
    read = read_png(path)
    assert read.shape == gray.shape and read.dtype == np.float32
    assert np.allclose(read, gray / 255.0, atol=1e-6)
    assert np.array_equal(read_input(path).display, read)


def test_colour_or_transparent_png_is_refused_in_one_line(tmp_path):
    colour = np.stack([_film(), _film()[::-1], _film()], axis=-1)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    with pytest.raises(InputError, match="colour image") as refused:
        read_input(tmp_path / "colour.png")
    assert "\n" not in str(refused.value)
    rgba = np.dstack([np.repeat(_film()[..., None], 3, axis=2), np.full(_film().shape, 255, np.uint8)])
    rgba[:10, :10, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "transparent.png")
    with pytest.raises(InputError, match="transparent"):
        read_input(tmp_path / "transparent.png")


def test_films_below_the_minimum_matrix_are_refused(tmp_path):
    from medcf.io.images import write_png16

    assert MIN_MATRIX == 128
    write_png16(tmp_path / "ok.png", np.linspace(0, 1, MIN_MATRIX * 300).reshape(MIN_MATRIX, 300))
    assert read_input(tmp_path / "ok.png").shape == (MIN_MATRIX, 300)
    write_png16(tmp_path / "thumb.png", np.linspace(0, 1, 127 * 300).reshape(127, 300))
    with pytest.raises(InputError, match=r"127x300 pixels.*at least 128") as refused:
        read_input(tmp_path / "thumb.png")
    assert "\n" not in str(refused.value)
    nifti = write_nifti_2d(tmp_path / "thumb.nii.gz", np.random.default_rng(0).random((300, 100)),
                           radiograph_affine(None))
    with pytest.raises(InputError, match="at least 128"):
        read_input(nifti)


# --- the user's own masks --------------------------------------------------------------------


def _toy_image(shape=(160, 140)) -> InputImage:
    return InputImage(np.zeros(shape, np.float32), InputFormat.PNG, Path("film.png"))


def _toy_masks(shape=(160, 140)) -> AnatomyMasks:
    rows, cols = shape
    right, left, heart = (np.zeros(shape, bool) for _ in range(3))
    right[20:140, 10:60] = True
    left[20:140, 80:130] = True
    heart[80:130, 45:100] = True  # overlaps both lungs, as whole projected lungs do
    return AnatomyMasks({Organ.LUNG_RIGHT: right, Organ.LUNG_LEFT: left, Organ.HEART: heart}, "toy")


def test_organ_names_are_understood():
    assert organ_of_name("Right lung") is organ_of_name("lung_right") is organ_of_name("Lung-Right") is Organ.LUNG_RIGHT
    assert organ_of_name("left LUNG") is Organ.LUNG_LEFT and organ_of_name("Heart") is Organ.HEART
    assert organ_of_name("right_upper_zone") is None and organ_of_name("Segment_1") is None


def test_label_map_masks_are_read_and_refused_when_they_do_not_fit(tmp_path):
    masks = _toy_masks()
    labels = masks.label_map()
    path = write_nifti_2d(tmp_path / "anatomy.nii.gz", labels, radiograph_affine(None))
    given = read_masks(path, _toy_image())
    assert given.format == "nifti" and given.segments["heart"] == "label 3"
    assert np.array_equal(given.masks.organs[Organ.HEART], masks.organs[Organ.HEART])
    # A label map paints the heart over the lungs: its lungs stop at the heart border.
    assert np.array_equal(given.masks.organs[Organ.LUNG_LEFT], masks.organs[Organ.LUNG_LEFT] & ~masks.organs[Organ.HEART])
    with pytest.raises(InputError, match=r"masks of 160x140 do not fit the image film.png \(150x140\)"):
        read_masks(path, _toy_image((150, 140)))
    no_heart = write_nifti_2d(tmp_path / "no-heart.nii.gz", np.where(labels == 3, 0, labels).astype(np.uint8),
                              radiograph_affine(None))
    with pytest.raises(InputError, match="has no heart"):
        read_masks(no_heart, _toy_image())
    zones = write_nifti_2d(tmp_path / "zones.nii.gz", (labels * 2).astype(np.uint8), radiograph_affine(None))
    with pytest.raises(InputError, match="outside MedCF's legend"):
        read_masks(zones, _toy_image())
    with pytest.raises(InputError, match="no such file"):
        read_masks(tmp_path / "missing.nii.gz", _toy_image())


def _write_seg_nrrd(path: Path, layers: np.ndarray, segments: list[dict], offset: tuple[int, int] | None = None) -> Path:
    """A 3D Slicer segmentation: (rows, cols, layers) labels, Segment<N>_* keys."""
    import SimpleITK as sitk

    array = layers[None]  # one slice: (z, y, x, layer)
    image = sitk.GetImageFromArray(array, isVector=True) if layers.shape[2] > 1 else \
        sitk.GetImageFromArray(array[..., 0])
    for index, segment in enumerate(segments):
        image.SetMetaData(f"Segment{index}_ID", f"Segment_{index + 1}")
        image.SetMetaData(f"Segment{index}_Name", segment["name"])
        image.SetMetaData(f"Segment{index}_LabelValue", str(segment["label"]))
        image.SetMetaData(f"Segment{index}_Layer", str(segment.get("layer", 0)))
    if offset is not None:
        image.SetMetaData("Segmentation_ReferenceImageExtentOffset", f"{offset[1]} {offset[0]} 0")
    sitk.WriteImage(image, str(path), True)
    return path


def test_slicer_seg_nrrd_with_layers_names_and_a_cropped_extent(tmp_path):
    masks = _toy_masks()
    right, left, heart = (masks.organs[o] for o in (Organ.LUNG_RIGHT, Organ.LUNG_LEFT, Organ.HEART))
    # Slicer keeps overlapping segments on separate layers: lungs on layer 0, the heart on 1.
    layers = np.zeros((*right.shape, 2), np.uint8)
    layers[..., 0][right], layers[..., 0][left] = 5, 9
    layers[..., 1][heart] = 1
    named = [{"name": "Right lung", "label": 5}, {"name": "Left Lung", "label": 9}, {"name": "Heart", "label": 1, "layer": 1}]
    path = _write_seg_nrrd(tmp_path / "film.seg.nrrd", layers, named)
    given = read_masks(path, _toy_image())
    assert given.format == "seg.nrrd" and given.segments == {"lung_right": "Right lung", "lung_left": "Left Lung",
                                                             "heart": "Heart"}
    for organ in Organ:
        assert np.array_equal(given.masks.organs[organ], masks.organs[organ]), organ  # whole, overlapping masks
    # Cropped to what it holds (Slicer's default), with the offset into the image's extent.
    cropped = _write_seg_nrrd(tmp_path / "cropped.seg.nrrd", layers[20:140, 10:130], named, offset=(20, 10))
    given = read_masks(cropped, _toy_image())
    for organ in Organ:
        assert np.array_equal(given.masks.organs[organ], masks.organs[organ]), organ
    with pytest.raises(InputError, match="does not fit"):
        read_masks(cropped, _toy_image((120, 100)))
    # Unnamed segments are taken by MedCF's label values.
    plain = np.zeros((*right.shape, 1), np.uint8)
    plain[..., 0][right], plain[..., 0][left], plain[..., 0][heart] = 1, 2, 3
    unnamed = _write_seg_nrrd(tmp_path / "plain.seg.nrrd", plain, [{"name": f"Segment_{v}", "label": v} for v in (1, 2, 3)])
    given = read_masks(unnamed, _toy_image())
    assert given.segments["heart"] == "Segment_3 (label 3)" and given.masks.organs[Organ.HEART].any()
    # No heart segment: refused, naming what was found.
    lungs_only = _write_seg_nrrd(tmp_path / "lungs.seg.nrrd", layers[..., :1], named[:2])
    with pytest.raises(InputError, match=r"has no heart \(found: Right lung, Left Lung\)"):
        read_masks(lungs_only, _toy_image())
    with pytest.raises(InputError, match="do not fit"):
        read_masks(path, _toy_image((160, 141)))


def test_dicom_seg_of_the_sample_study_is_read_back(tmp_path):
    from medcf.anatomy.dicom_seg import write_anatomy_seg

    image = read_input(SAMPLE_STUDY)
    rows, cols = image.shape
    masks = _toy_masks()
    scale = np.ix_(np.arange(rows) * 160 // rows, np.arange(cols) * 140 // cols)
    big = AnatomyMasks({organ: masks.organs[organ][scale] for organ in Organ}, "toy")
    path = write_anatomy_seg(tmp_path / "anatomy-seg.dcm", big, image.radiograph.dataset)
    given = read_masks(path, image)
    assert given.format == "dicom-seg" and given.segments["lung_left"] == "lung_left (segment 2)"
    for organ in Organ:
        assert np.array_equal(given.masks.organs[organ], big.organs[organ]), organ
    # The SEG of one image is not the anatomy of another.
    other = read_input(SAMPLE_STUDY)
    other.radiograph.dataset.SOPInstanceUID = "1.2.3.4"
    with pytest.raises(InputError, match="segments another image"):
        read_masks(path, other)
    # A PNG of the film has no UID to check; the size must fit.
    with pytest.raises(InputError, match="do not fit"):
        read_masks(path, _toy_image())
    with pytest.raises(InputError, match="not a Segmentation"):
        read_masks(sorted(SAMPLE_STUDY.rglob("*.dcm"))[0], image)
