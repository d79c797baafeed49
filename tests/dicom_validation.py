"""Run dciodvfy (dicom3tools) and hold every written object to dicom.md's rule:
no errors except the one known exception, and only the warnings listed here.

Debian's dicom3tools is a 2022 snapshot that predates Synthetic Data
(0008,001C) in DICOM 2024b, so it reports that attribute as unknown. That one
error, and the three warnings that follow from the same unknown tag, are
accepted *exactly*; any other line beginning 'Error' or 'Warning' fails.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import require_tool

ALLOWED_ERROR = "Error - Attribute with an even group number is not a recognized standard attribute - (0x0008,0x001c)  ? "

ALLOWED_WARNINGS = {
    # The 2022 dictionary does not know Synthetic Data, so it guesses its VR (we write it explicit: CS).
    "(0x0008,0x001c)  ?  - Warning - Unrecognized tag - assuming explicit value representation OK",
    # For the same reason it cannot find Synthetic Data in the IOD tables (DICOM 2024b added it
    # to the General Image / SOP Common content)...
    "Warning - Attribute is not present in standard DICOM IOD - (0x0008,0x001c)  ? ",
    # ...and therefore calls the object a Standard Extended SOP Class.
    "Warning - Dicom dataset contains attributes not present in standard DICOM IOD - this is a Standard Extended SOP Class",
}


# De-identified exports (PS3.15 Basic profile): Study Date, Study Time and Study ID are "Z"
# (emptied), which is valid for their Type 2 but leaves a DICOMDIR nothing to index them by.
DEIDENTIFIED_WARNINGS = {
    f"Warning - Missing attribute or value that would be needed to build DICOMDIR - {name}"
    for name in ("Study Date", "Study Time", "Study ID")
}


def dciodvfy_report(path: Path) -> tuple[list[str], list[str]]:
    """Return (errors, warnings) lines that dciodvfy prints for ``path``."""
    tool = require_tool("dciodvfy")
    result = subprocess.run([tool, str(path)], capture_output=True, text=True)
    lines = (result.stdout + result.stderr).splitlines()
    errors = [line for line in lines if line.startswith("Error") or " - Error - " in line]
    warnings = [line for line in lines if line.startswith("Warning") or " - Warning - " in line]
    return errors, warnings


def assert_valid_dicom(path: Path, also_allowed: frozenset[str] | set[str] = frozenset()) -> None:
    """``also_allowed``: further warnings a caller justifies (e.g. :data:`DEIDENTIFIED_WARNINGS`)."""
    errors, warnings = dciodvfy_report(path)
    assert errors == [ALLOWED_ERROR], f"dciodvfy errors for {path.name}: {errors}"
    unexpected = [w for w in warnings if w not in ALLOWED_WARNINGS | set(also_allowed)]
    assert not unexpected, f"dciodvfy warnings not justified in tests/dicom_validation.py: {unexpected}"
