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
    """A grayscale PNG as float32 in [0, 1] (8- or 16-bit), or a label map as its integers
    when ``path`` is an 8-bit PNG read with :func:`read_label_png`."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            array = np.asarray(image)
    except (OSError, ValueError) as error:
        raise InputError(f"{path} is not a readable PNG: {error}")
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
