"""Slicer-side adapter: turn a ``medcf.io.Radiograph`` into a Slicer volume.

Everything here except :func:`load_into_scene` is plain numpy and imports
neither Slicer nor Qt, so it can be unit-tested outside Slicer. The radiograph
is duck-typed (``display`` and ``spacing_mm`` attributes): this module does not
import ``medcf`` either, so the Slicer module still loads when the library has
not been installed into Slicer's Python yet.

Slicer volumes are 3-D arrays indexed (k, j, i) = (slice, row, column). A 2-D
radiograph becomes a single-slice volume: k has length 1, j runs down the
image rows and i across the columns.

Placement in patient space (RAS) follows the usual display convention of a
frontal chest radiograph: image columns run toward the patient's left, image
rows toward the feet, so the image lies in a coronal plane and shows upright,
patient's right on screen left, in Slicer's coronal (green) slice view. This is
a viewing aid, not a measured geometry: a projection radiograph has no slice
position, and ImagerPixelSpacing is at the detector, not the patient.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

#: MedCF's edit options as data (``medcf options --json``): the module loads without the library,
#: so it reads this committed copy, which a test keeps equal to the library's schema.
EDIT_OPTIONS_FILE = Path(__file__).resolve().parents[1] / "Resources" / "edit_options.json"
#: the edit controls that are combo boxes (``<name>ComboBox`` in the .ui), each an option of the schema
PANEL_COMBOS = ("finding", "action", "side", "zone", "severity", "method")
NOT_GIVEN = "-"  # a combo's item for an option left out (the command's default applies)


def read_edit_options(path: str | os.PathLike = EDIT_OPTIONS_FILE) -> dict[str, dict[str, Any]]:
    """The schema's options by name, as ``medcf options --json`` writes them."""
    document = json.loads(Path(path).read_text(encoding="utf-8"))
    return {option["name"]: option for option in document["options"]}


def edit_choices(options: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """Each combo's items: the option's choices, and :data:`NOT_GIVEN` where the option may
    be left out: first where leaving it out has a meaning of its own (the schema's
    ``unset``: zone = where the finding starts), last where most edits need a value (side)."""
    choices = {}
    for name in PANEL_COMBOS:
        option = options[name]
        items = list(option["choices"])
        if not option["required"] and option.get("default") is None:
            items = [NOT_GIVEN, *items] if option.get("unset") else [*items, NOT_GIVEN]
        choices[name] = items
    return choices


def panel_start(options: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The item each combo starts on: the option's default where it has one, else the first item."""
    return {name: options[name]["default"] if options[name].get("default") is not None else items[0]
            for name, items in edit_choices(options).items()}


EDIT_OPTIONS = read_edit_options()
EDIT_CHOICES = edit_choices(EDIT_OPTIONS)
EDIT_START = panel_start(EDIT_OPTIONS)

# The label maps `medcf segment` writes (anatomy.nii.gz, zones.nii.gz; docs/anatomy.md), copied here so
# that the module loads without the library (a test keeps them equal to medcf.anatomy.masks).
ORGAN_LABELS = {"lung_right": 1, "lung_left": 2, "heart": 3}
ZONE_LABELS = {"right_upper": 1, "right_middle": 2, "right_lower": 3, "left_upper": 4, "left_middle": 5,
               "left_lower": 6, "right_costophrenic": 7, "left_costophrenic": 8}

#: The project's public addresses (also in the top-level CMakeLists.txt and MedCFExtension/MedCF.json;
#: a test keeps them equal).
PROJECT_URL = "https://github.com/medcf/MedCF"
DOCUMENTATION_URL = f"{PROJECT_URL}/blob/main/docs/slicer.md"
RAW_URL = "https://raw.githubusercontent.com/medcf/MedCF/main"

#: The sample study's PA film (medcf/data/sample_study, simulated, no patient) registered in Sample
#: Data; the checksum is the committed file's, which a test recomputes.
SAMPLE_DATA = {
    "category": "MedCF",
    "sampleName": "MedCFSampleChestXray",
    "nodeNames": "MedCF sample PA chest X-ray",
    "fileNames": "MedCF-sample-PA.dcm",
    "uris": f"{RAW_URL}/medcf/data/sample_study/series-001-pa/IM0001.dcm",
    "checksums": "SHA256:226fefa982fd460c8684ee17464835dfc4f3b2c6c50af53fbc4450d53999ff9f",
    "loadFileType": "VolumeFile",
}
SAMPLE_DATA_SOURCE = "medcf/data/sample_study/series-001-pa/IM0001.dcm"

#: the oldest Slicer the module runs in: 5.12 ships pydicom 3, which medcf needs (issue 19)
MIN_SLICER_VERSION = (5, 12)


def slicer_version_problem(version: str) -> str | None:
    """Why this Slicer (``slicer.app.applicationVersion``, e.g. "5.10.2") cannot run the module, in
    one line; None when it can. Said when the module opens, rather than as an odd failure later."""
    parts = []
    for piece in str(version).split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    wanted = ".".join(map(str, MIN_SLICER_VERSION))
    if len(parts) < 2:
        return f"MedCF cannot tell which Slicer this is ({version!r}); it needs Slicer {wanted} or newer."
    if tuple(parts) < MIN_SLICER_VERSION:
        return (f"MedCF needs Slicer {wanted} or newer (it ships pydicom 3, which MedCF needs); this is Slicer "
                f"{version}. Install a current Slicer from download.slicer.org.")
    return None


#: SNOMED CT codes of the organ segments (DICOM's coding scheme designator "SCT"), as Slicer's
#: terminology entries carry them: category Anatomical Structure, type Lung or Heart, modifier Right
#: or Left. The lung zones and costophrenic regions are radiographic regions with no SNOMED CT
#: concept of their own: they keep the generic entry Slicer gives an imported segment (Tissue).
SCT = "SCT"
ANATOMICAL_STRUCTURE = ("123037004", SCT, "Anatomical Structure")
SEGMENT_TERMINOLOGY = {
    "lung_right": (("39607008", SCT, "Lung"), ("24028007", SCT, "Right")),
    "lung_left": (("39607008", SCT, "Lung"), ("7771000", SCT, "Left")),
    "heart": (("80891009", SCT, "Heart"), None),
}

#: the value of ``medcf --device`` the panel's "Force CPU" sets (unset: medcf's ``auto``)
FORCE_CPU_DEVICE = "cpu"


def with_device(options: dict[str, str | None], force_cpu: bool) -> dict[str, str | None]:
    """``options`` with ``--device cpu`` when the user forces the CPU (e.g. a GPU another program
    holds); otherwise unchanged, and medcf picks (cuda, then mps, then cpu)."""
    return {**options, "device": FORCE_CPU_DEVICE} if force_cpu else dict(options)


def run_folder(parent: str | os.PathLike, options: dict[str, str | None], now: datetime | None = None) -> Path:
    """A new subfolder of the chosen output folder for one run, named by time and edit
    (``20261207-231502-pleural_effusion-add``), so a second Edit into the same output folder writes
    beside the first instead of failing (medcf writes only into a new or empty folder). The
    folder is not created: the run creates it, and Cancel removes it."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    what = "report" if options.get("from-report") else (options.get("finding") or "edit")
    label = "-".join(str(part) for part in (stamp, what, options.get("action")) if part not in (None, "", NOT_GIVEN))
    label = re.sub(r"[^A-Za-z0-9_.-]", "_", label)
    candidate, number = Path(parent) / label, 2
    while candidate.exists():
        candidate, number = Path(parent) / f"{label}-{number}", number + 1
    return candidate


class WorkFolders:
    """The per-run folders of files handed to ``medcf`` (the input as NIfTI, the masks, a pasted
    report, the anatomy a segment run writes), under one base folder (Slicer's temporary folder
    inside the application). Each is removed when its run has been loaded, failed or been
    cancelled; :meth:`sweep` removes what a crashed session left."""

    PREFIX = "run-"

    def __init__(self, base: str | os.PathLike):
        self.base = Path(base)

    def new(self) -> Path:
        self.base.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=self.PREFIX, dir=self.base))

    def remove(self, folder: str | os.PathLike | None) -> None:
        """Remove one run's folder (only a folder of this base, never anything else)."""
        if folder is None:
            return
        folder = Path(folder)
        if folder.parent.resolve() == self.base.resolve() and folder.name.startswith(self.PREFIX):
            shutil.rmtree(folder, ignore_errors=True)

    def sweep(self, keep: tuple[str | os.PathLike, ...] = ()) -> list[Path]:
        """Remove every run folder but ``keep`` (those of a job still running); returns the removed."""
        if not self.base.is_dir():
            return []
        kept = {Path(k).resolve() for k in keep if k is not None}
        removed = []
        for folder in sorted(self.base.glob(f"{self.PREFIX}*")):
            if folder.is_dir() and folder.resolve() not in kept:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
        return removed


def with_report(options: dict[str, str | None], report: str, work_dir: str | os.PathLike) -> dict[str, str | None]:
    """``medcf edit`` options for a pasted report: written to ``work_dir/report.txt`` and given as
    ``--from-report``; the report names the findings, so ``finding`` is dropped (the command refuses
    both). An empty report leaves the options as they are."""
    if not report.strip():
        return dict(options)
    path = Path(work_dir) / "report.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report.strip() + "\n", encoding="utf-8")
    return {**{k: v for k, v in options.items() if k != "finding"}, "from-report": str(path)}


DEFAULT_SPACING_MM = 1.0
DISPLAY_WINDOW = 1.0
DISPLAY_LEVEL = 0.5

# Columns are the RAS directions of the i, j and k axes.
# i (columns) -> patient left  = -R; j (rows) -> feet = -S; k = i x j -> posterior = -A.
CORONAL_IJK_TO_RAS = np.array(
    [
        [-1.0, 0.0, 0.0],
        [0.0, 0.0, -1.0],
        [0.0, -1.0, 0.0],
    ]
)


class VolumeArrays(NamedTuple):
    """What a Slicer scalar volume needs, as plain numpy values."""

    array_kji: np.ndarray  # float32, shape (1, rows, cols), display space in [0, 1]
    spacing_ijk: tuple[float, float, float]  # (column mm, row mm, slice mm)
    origin_ras: tuple[float, float, float]  # RAS position of voxel (0, 0, 0)
    ijk_to_ras_direction: np.ndarray  # 3x3; column n is the RAS direction of axis n (i, j, k)


def radiograph_to_volume_arrays(radiograph: Any) -> VolumeArrays:
    """Single-slice volume arrays for ``radiograph`` (a ``medcf.io.Radiograph``).

    Pixels are the radiograph's display-space values (float32 in [0, 1], bright
    = dense). Spacing comes from ``radiograph.spacing_mm``, which is (row, col)
    in DICOM order; Slicer wants (i, j, k) = (col, row, slice), so the pair is
    swapped here. Without a spacing the pixels are taken as 1.0 mm squares.
    Unpacks as ``(array_kji, spacing_ijk, origin_ras, ijk_to_ras_direction)``.
    """
    display = np.asarray(radiograph.display)
    if display.ndim != 2:
        raise ValueError(f"radiograph display must be a 2-D image, got shape {display.shape}")
    array_kji = np.ascontiguousarray(display, dtype=np.float32)[np.newaxis, :, :]

    spacing = getattr(radiograph, "spacing_mm", None)
    if spacing is None:
        row_mm = col_mm = DEFAULT_SPACING_MM
    else:
        row_mm, col_mm = (float(v) for v in spacing)
        if not (row_mm > 0 and col_mm > 0):
            raise ValueError(f"pixel spacing must be positive, got {spacing}")

    return VolumeArrays(
        array_kji=array_kji,
        spacing_ijk=(col_mm, row_mm, DEFAULT_SPACING_MM),
        origin_ras=(0.0, 0.0, 0.0),
        ijk_to_ras_direction=CORONAL_IJK_TO_RAS.copy(),
    )


def load_into_scene(radiograph: Any, name: str = "MedCF radiograph"):
    """Add ``radiograph`` to the Slicer scene as a scalar volume and return the node.

    Must run inside Slicer; ``slicer`` is imported here, not at module import.
    The display node gets window 1.0 / level 0.5, which shows the [0, 1]
    display-space pixels exactly as MedCF sees them.
    """
    import slicer  # only available inside the Slicer application

    volume = radiograph_to_volume_arrays(radiograph)
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    slicer.util.updateVolumeFromArray(node, volume.array_kji)
    node.SetSpacing(*volume.spacing_ijk)
    node.SetOrigin(*volume.origin_ras)
    directions = np.eye(4)
    directions[:3, :3] = volume.ijk_to_ras_direction
    node.SetIJKToRASDirectionMatrix(slicer.util.vtkMatrixFromArray(directions))

    node.CreateDefaultDisplayNodes()
    display_node = node.GetDisplayNode()
    display_node.AutoWindowLevelOff()
    display_node.SetWindowLevel(DISPLAY_WINDOW, DISPLAY_LEVEL)
    return node
