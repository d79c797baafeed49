"""Where MedCF keeps things it fetched or prepared once: one root for all.

``$MEDCF_CACHE`` when set, else ``~/.cache/medcf``. Every subsystem takes a
subfolder (``studies/`` for PACS fetches, ``ct/`` for the simulated world's
chest CT, ...), so one variable moves or wipes them all.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("MEDCF_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "medcf"))


def cache_dir(subfolder: str) -> Path:
    """``cache_root()/subfolder`` (not created: callers create what they write)."""
    return cache_root() / subfolder
