"""Where MedCF's MONAI bundle lives and how its configs are read.

The bundle (``monai_bundle/`` in the repository) holds configs and weights. A checkout (or an
editable install) reads it beside the package; a wheel installs it as the data package
``medcf_bundle`` (setup.py), found with ``importlib.resources``, so ``pip install medcf-*.whl``
brings its model; ``$MEDCF_BUNDLE`` overrides both. The weights are checked against their
SHA-256 in ``models/medcf_model.json`` when the model package loads (medcf.models.package).
Configs are read with MONAI's ``ConfigParser`` so that ``_target_``, ``@`` references and
``$`` expressions mean what the MONAI bundle specification says.
"""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path

from medcf.errors import InputError

BUNDLE_ENV = "MEDCF_BUNDLE"
BUNDLE_PACKAGE = "medcf_bundle"  # the bundle as a wheel installs it (setup.py's package_dir)
CHECKOUT_BUNDLE = Path(__file__).resolve().parents[1] / "monai_bundle"


def installed_bundle() -> Path | None:
    """The bundle a wheel installed as the data package ``medcf_bundle``, or None when there is
    none. The weights are opened as files (safetensors, torch), so a bundle inside a zip
    archive (a zipimport install) is refused rather than copied out."""
    try:
        root = importlib.resources.files(BUNDLE_PACKAGE)
    except ModuleNotFoundError:
        return None
    if not isinstance(root, Path):
        raise InputError(f"the installed MedCF bundle ({root}) is not a folder on disk: install medcf unzipped, "
                         f"or set {BUNDLE_ENV} to a monai_bundle folder")
    return root


def in_installed_bundle(path: Path) -> bool:
    """Whether ``path`` lies in the bundle a wheel installed (not in a checkout, not in a folder
    of the user's): there a file that does not match its manifest is a damaged install, to
    reinstall, never a model to re-package."""
    try:
        root = installed_bundle()
    except InputError:
        return False
    if root is None or root.resolve() == CHECKOUT_BUNDLE:
        return False
    return Path(path).resolve().is_relative_to(root.resolve())


def bundle_root() -> Path:
    """The bundle folder: ``$MEDCF_BUNDLE`` if set; else the working directory when it is a
    bundle (MONAI's convention for ``python -m monai.bundle run``); else ``monai_bundle/``
    of this checkout; else the installed ``medcf_bundle`` package. The checkout comes before
    the installed package so that a checkout run with ``PYTHONPATH`` reads its own weights,
    never those of another install in the same environment."""
    configured = os.environ.get(BUNDLE_ENV)
    if configured:
        root = Path(configured)
    elif (Path.cwd() / "configs" / "metadata.json").is_file():
        root = Path.cwd()
    elif (CHECKOUT_BUNDLE / "configs").is_dir():
        root = CHECKOUT_BUNDLE
    else:
        root = installed_bundle()
        if root is None:
            raise InputError(f"MedCF bundle not found: no {CHECKOUT_BUNDLE} and no installed {BUNDLE_PACKAGE} package "
                             f"(reinstall medcf, or set {BUNDLE_ENV} to the monai_bundle folder)")
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
