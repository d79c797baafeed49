"""The editor's settings as configuration data: the bundle's ``configs/edit.json``.

One file serves two readers. ``python -m monai.bundle run --config_file
monai_bundle/configs/edit.json --input FILE --finding F --action A --side S --output_dir
DIR`` instantiates the editor from it and runs one edit; ``medcf edit`` (and ``medcf
pairs``) take their option defaults -- method, depth, strength, guidance, steps,
inversion, passes, energy, severity -- and the methods' constants from the same keys, so
a site that changes a setting in its bundle changes it for every entry point at once.

Why not read it with MONAI's ``ConfigParser`` here: the CLI needs the plain values while
it builds its ``--help`` (before anything heavy may be imported), and the keys it reads
hold no expressions. A key that is missing keeps :class:`~medcf.editing.spec.EditSpec`'s
default; a value that does not validate is refused with the key's name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from medcf.bundle import bundle_root
from medcf.editing.schema import Scope
from medcf.editing.spec import EDIT_OPTIONS, OPTIONS, EditConstants, EditSpec
from medcf.errors import InputError

CONFIG_FILE = "edit.json"
# The EditSpec fields whose defaults the config sets: the schema's settings (the rest --
# finding, action, side, zone, seed -- describe one edit, not the editor).
SETTING_KEYS = tuple(option.name for option in EDIT_OPTIONS if option.spec.scope is Scope.SETTING)


@dataclass(frozen=True)
class EditSettings:
    """The editor's defaults as the config states them (EditSpec's where it is silent)."""

    values: dict = field(default_factory=dict)
    constants: EditConstants = EditConstants()

    def default(self, key: str):
        if key not in SETTING_KEYS:
            raise KeyError(key)
        return self.values.get(key, OPTIONS[key].default)


def config_path(root: str | Path | None = None) -> Path | None:
    """``configs/edit.json`` of the bundle (``root``, else :func:`medcf.bundle.bundle_root`);
    None when there is no bundle (a library install without one)."""
    if root is None:
        try:
            root = bundle_root()
        except InputError:
            return None
    path = Path(root) / "configs" / CONFIG_FILE
    return path if path.is_file() else None


def load_edit_settings(root: str | Path | None = None) -> EditSettings:
    """The settings of the bundle's ``configs/edit.json`` (built-in defaults without one)."""
    path = config_path(root)
    if path is None:
        return EditSettings()
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(f"{path} is not valid JSON ({error})") from None
    values = {key: config[key] for key in SETTING_KEYS if key in config}
    for key, value in values.items():
        if isinstance(value, str) and value.startswith(("$", "@", "%")):
            raise InputError(f"{path}: '{key}' must be a plain value for `medcf edit`, not the expression {value!r}")
    constants = config.get("constants", {})
    if not isinstance(constants, dict):
        raise InputError(f"{path}: 'constants' must be an object of numbers")
    try:
        constants = EditConstants.from_dict(constants)
        # validate the values as an edit would (a throwaway spec with a finding that needs no side)
        EditSpec("cardiomegaly", "add", **values, constants=constants)
    except InputError as error:
        raise InputError(f"{path}: {error}") from None
    return EditSettings(values, constants)
