"""Plain image files beside DICOM: 16-bit PNG for images, 8-bit PNG for label maps.

Images are display values in [0, 1] (bright = dense, MONOCHROME2 sense) stored
as 0..65535 so that training data keeps the renderer's precision; label maps
keep their integer values (a legend travels with them in the JSON records).
Writes are atomic and never replace an existing file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medcf.errors import InputError
from medcf.io.atomic import write_new_file


def write_png16(path: str | Path, display: np.ndarray) -> Path:
    """Save a [0, 1] image as a 16-bit grayscale PNG."""
    from PIL import Image

    values = np.rint(np.clip(np.asarray(display, np.float64), 0.0, 1.0) * 65535).astype(np.uint16)
    return write_new_file(Path(path), lambda tmp: Image.fromarray(values).save(tmp, format="PNG"))


def write_label_png(path: str | Path, labels: np.ndarray) -> Path:
    """Save an integer label map (0..255) as an 8-bit PNG."""
    from PIL import Image

    labels = np.asarray(labels)
    if labels.min() < 0 or labels.max() > 255:
        raise ValueError("label maps must hold values 0..255")
    values = labels.astype(np.uint8)
    return write_new_file(Path(path), lambda tmp: Image.fromarray(values).save(tmp, format="PNG"))


def read_png(path: str | Path) -> np.ndarray:
    """A grayscale PNG as float32 in [0, 1] (8- or 16-bit).

    Films are often exported as RGB or RGBA (screenshots, viewers, converters): three equal
    colour channels and an opaque alpha are still a grayscale film and are read as one; a
    palette PNG is read through its palette. A film with colour in it, or with transparent
    pixels, is refused (one line): MedCF would have to guess which channel is the film.
    """
    from PIL import Image

    try:
        with Image.open(path) as image:
            if image.mode in ("P", "PA"):
                image = image.convert("RGBA")
            array = np.asarray(image)
    except (OSError, ValueError) as error:
        raise InputError(f"{path} is not a readable PNG: {error}")
    if array.ndim == 3 and array.shape[2] in (2, 4):  # gray + alpha, RGB + alpha
        alpha = array[..., -1]
        if alpha.min() != alpha.max() or int(alpha.max()) == 0:
            raise InputError(f"{path} has transparent pixels; save the film without an alpha channel")
        array = array[..., :-1]
    if array.ndim == 3 and array.shape[2] == 3:
        if not (np.array_equal(array[..., 0], array[..., 1]) and np.array_equal(array[..., 0], array[..., 2])):
            raise InputError(f"{path} is a colour image (its red, green and blue channels differ); "
                             "MedCF reads grayscale radiographs")
        array = array[..., 0]
    elif array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise InputError(f"{path} is not a grayscale image (shape {array.shape})")
    scale = 65535.0 if array.dtype == np.uint16 or array.max() > 255 else 255.0
    return (array.astype(np.float32) / scale).astype(np.float32)


def read_label_png(path: str | Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return np.asarray(image).astype(np.uint8)
    except (OSError, ValueError) as error:
        raise InputError(f"{path} is not a readable PNG: {error}")
