"""Where MedCF's MONAI bundle lives and how its configs are read.

The bundle (``monai_bundle/`` in the repository) holds configs and weights; the library
finds it at ``$MEDCF_BUNDLE`` or beside the package. Configs are read with MONAI's
``ConfigParser`` so that ``_target_``, ``@`` references and ``$`` expressions mean what
the MONAI bundle specification says.
"""

from __future__ import annotations

import os
from pathlib import Path

from medcf.errors import InputError

BUNDLE_ENV = "MEDCF_BUNDLE"


def bundle_root() -> Path:
    """The bundle folder: ``$MEDCF_BUNDLE`` if set; else the working directory when it is a
    bundle (MONAI's convention for ``python -m monai.bundle run``); else ``monai_bundle/``
    of this checkout."""
    configured = os.environ.get(BUNDLE_ENV)
    if configured:
        root = Path(configured)
    elif (Path.cwd() / "configs" / "metadata.json").is_file():
        root = Path.cwd()
    else:
        root = Path(__file__).resolve().parents[1] / "monai_bundle"
    if not (root / "configs").is_dir():
        raise InputError(f"MedCF bundle not found at {root} (set {BUNDLE_ENV} to the monai_bundle folder)")
    return root


def bundle_path(*parts: str) -> Path:
    return bundle_root().joinpath(*parts)


WEIGHTS_DIR = "models"  # a bundle keeps its weights and their package manifest here (medcf.models.package)


def bundle_config(name: str, overrides: dict | None = None):
    """``configs/<name>.json`` as a MONAI ``ConfigParser`` with ``bundle_root`` set."""
    from monai.bundle import ConfigParser

    path = bundle_path("configs", f"{name}.json")
    if not path.is_file():
        raise InputError(f"bundle config not found: {path}")
    parser = ConfigParser()
    parser.read_config(str(path))
    parser["bundle_root"] = str(bundle_root())
    for key, value in (overrides or {}).items():
        parser[key] = value
    return parser


def required(value, key: str):
    """A bundle workflow's input that ``monai.bundle run`` must be given (``--<key> ...``):
    one clear message instead of a failure deep inside the run."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InputError(f"the bundle workflow needs --{key} (e.g. python -m monai.bundle run --config_file "
                         f"configs/<workflow>.json --{key} VALUE)")
    return value
