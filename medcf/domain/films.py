"""``medcf model calibrate-domain DIR --films FOLDER...``: a model's domain calibration from
films of its own domain, written beside its weights as the package's ``domain`` piece.

Any model can be calibrated: the films are read as ``medcf edit`` reads an input (DICOM,
16-bit PNG, NIfTI), their lungs found by the same segmenter, and each film measured as an
edit's input is (:func:`medcf.domain.features.measure`). What the films are is the user's
statement of the model's domain: held-out films of the kind it was trained on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medcf.anatomy.outputs import load_segmenter
from medcf.anatomy.segment import segment
from medcf.domain.calibration import CALIBRATION_FILE, DomainCalibration, DomainRule, calibrate
from medcf.errors import InputError, MedCFError
from medcf.io.inputs import NIFTI_SUFFIXES, read_input
from medcf.models.base import Generator
from medcf.models.package import weights_folder
from medcf.vocab import Organ

_LOG = logging.getLogger(__name__)
FILM_SUFFIXES = (".dcm", ".png") + NIFTI_SUFFIXES


def lungs_of(display: np.ndarray, segmenter) -> np.ndarray | None:
    """Both lungs of ``display`` as the editor's segmenter finds them; None when it finds
    none it stands by (the film is then measured whole)."""
    try:
        masks = segment(display, segmenter)
    except (MedCFError, IndexError):  # IndexError: the segmenter's lung assignment on a film with no lung at all
        return None
    return masks.organs[Organ.LUNG_RIGHT] | masks.organs[Organ.LUNG_LEFT]


def film_paths(folders: Sequence[str | Path]) -> list[Path]:
    """Every film under ``folders`` (recursively; DICOM, PNG, NIfTI), sorted; one line for a
    folder that is missing or holds none."""
    paths: list[Path] = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise InputError(f"--films {folder}: no such folder")
        found = sorted(p for p in folder.rglob("*") if p.is_file() and p.name.lower().endswith(FILM_SUFFIXES))
        if not found:
            raise InputError(f"--films {folder}: no DICOM (.dcm), PNG or NIfTI films in it")
        paths += found
    return paths


def read_films(paths: Sequence[Path], segmenter) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Each film's display values and lungs (a film that does not read fails in one line naming it)."""
    for path in paths:
        try:
            image = read_input(path)
        except InputError as error:
            raise InputError(f"--films: {error}") from None
        yield image.display, lungs_of(image.display, segmenter)


@dataclass(frozen=True)
class Calibrated:
    """What ``medcf model calibrate-domain`` wrote and what it cost."""

    calibration: DomainCalibration
    path: Path
    seconds: float


def calibrate_folder(generator: Generator, model: str | Path, folders: Sequence[str | Path],
                     rule: DomainRule = DomainRule(), source: dict | None = None, segmenter=None) -> Calibrated:
    """Calibrate ``generator`` (loaded from ``model``) on the films under ``folders`` and
    write ``domain_calibration.json`` beside its weights (replacing an older one); the
    caller refreshes the manifest so that the editor uses it."""
    started = time.perf_counter()
    paths = film_paths(folders)
    segmenter = segmenter if segmenter is not None else load_segmenter()
    source = source or {"folders": [str(Path(f)) for f in folders]}
    calibration = calibrate(generator, read_films(paths, segmenter), source, rule)
    home = weights_folder(model) if Path(model).is_dir() else Path(model)
    seconds = time.perf_counter() - started
    calibration = calibration.with_rule(rule, {"seconds": round(seconds, 1), "device": str(generator.device)})
    return Calibrated(calibration, calibration.save(home / CALIBRATION_FILE), seconds)
