"""Measurements kept beside a model's weights and valid only for that denoiser.

The editor's own check (``evidence.json``) and its per-finding settings
(``edit_defaults.json``) were measured on one set of weights; a retrained or foreign
model must be measured again. Each file carries ``denoiser_sha256``
(:func:`medcf.editing.steering.denoiser_fingerprint`, the identity the steering vectors
use); a file made for other weights is ignored. Looked up once per loaded generator: the
fingerprint hashes every parameter.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from medcf.bundle import beside_weights
from medcf.models.base import Generator

Record = TypeVar("Record")

_FOUND: "weakref.WeakKeyDictionary[Generator, dict[str, object]]" = weakref.WeakKeyDictionary()


def find_beside(generator: Generator, filename: str, load: Callable[[Path], Record],
                fingerprint: Callable[[Generator], str] | None = None) -> Record | None:
    """``load(path)`` of ``filename`` beside ``generator``'s weights (the folder itself or
    its ``models/``; for an alternative denoiser, then beside the model's own), if there is
    one and it was measured for this model; else ``None``.
    ``load`` returns an object with a ``denoiser_sha256`` attribute, or, with
    ``fingerprint`` (the part of the model the record belongs to, e.g. its autoencoder), a
    ``fingerprint`` attribute compared with ``fingerprint(generator)``."""
    found = _FOUND.setdefault(generator, {})
    if filename not in found:
        from medcf.editing.steering import denoiser_fingerprint

        folders = [Path(generator.source)]
        if generator.base is not None:  # an alternative denoiser: the model's own records too
            folders.append(Path(generator.base.source))
        path = next((p for p in (beside_weights(folder, filename) for folder in folders) if p is not None), None)
        record = load(path) if path is not None else None
        if record is not None:
            identity = record.fingerprint if fingerprint is not None else record.denoiser_sha256
            if identity != (fingerprint or denoiser_fingerprint)(generator):
                record = None
        found[filename] = record
    return found[filename]


def attach(generator: Generator, filename: str, record) -> None:
    """Make ``record`` the one :func:`find_beside` returns for ``filename`` on ``generator``
    (a benchmark that runs a method with a file other than the one shipped, e.g. the
    long-tail suite's factor model trained on a skewed set)."""
    _FOUND.setdefault(generator, {})[filename] = record
