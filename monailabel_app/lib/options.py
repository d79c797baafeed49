"""The MedCF edit options this app serves, read from MedCF's schema as data.

The app runs in its own environment and does not import medcf, so it reads
``edit_options.json`` beside this file: a committed copy of ``medcf options --json``, which
a test keeps equal to the library's schema. Nothing here imports MONAI Label either.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

EDIT_OPTIONS_FILE = Path(__file__).resolve().parent / "edit_options.json"
#: the edit options a request may give as params; each becomes the ``medcf edit`` option of its name
SERVED = ("finding", "action", "side", "zone", "severity", "method", "strength", "seed", "allow_out_of_domain")


def read_edit_options(path: Path = EDIT_OPTIONS_FILE) -> dict[str, dict[str, Any]]:
    """The schema's options by name."""
    return {option["name"]: option for option in json.loads(path.read_text(encoding="utf-8"))["options"]}


def served_params(path: Path = EDIT_OPTIONS_FILE) -> dict[str, Any]:
    """Each served param and its default: the schema's for an option that describes the edit
    (the seed), None for the editor's settings, which ``medcf edit`` takes from the bundle's
    configs/edit.json when a request leaves them out (a default sent from here would override it)."""
    options = read_edit_options(path)
    return {name: options[name].get("default") if options[name]["scope"] == "edit" else None for name in SERVED}
