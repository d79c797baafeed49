"""Measurements kept beside a model's weights and valid only for that denoiser, and
where a model's steering vectors and alternative denoisers are found.

Each kind of sidecar is found by one small function here (:func:`find_beside` for the
measured records, :func:`own_vectors` for the steering vectors, :func:`alternative_denoiser`
for a denoiser a measured choice names), so that a model package that lists them can
replace the lookups in one place.

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
from medcf.cache import cache_dir
from medcf.editing.steering import VECTORS_FILE, SteeringVectors, denoiser_fingerprint, load_vectors
from medcf.models.base import Generator
from medcf.models.variants import with_denoiser

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


def vectors_cache_path(fingerprint: str) -> Path:
    """Where ``medcf steer-vectors`` caches the vectors of the denoiser with ``fingerprint``."""
    return cache_dir("steering") / f"{fingerprint[:16]}.safetensors"


def find_vectors_path(generator: Generator, fingerprint: str | None = None) -> Path | None:
    """Where ``generator``'s steering vectors are: shipped beside its weights (the folder or
    its ``models/``), else in the cache ``medcf steer-vectors`` fills; None if nowhere."""
    fingerprint = fingerprint or denoiser_fingerprint(generator)
    shipped = beside_weights(generator.source, VECTORS_FILE)
    if shipped is not None:
        return shipped
    cached = vectors_cache_path(fingerprint)
    return cached if cached.is_file() else None


def own_vectors(generator: Generator, path: str | Path | None = None) -> tuple[SteeringVectors | None, Path | None]:
    """``generator``'s steering vectors and where they came from: ``path`` if given, else
    the file shipped beside its weights or cached (:func:`find_vectors_path`); vectors made
    for other weights are refused. ``(None, None)`` where there are none."""
    fingerprint = denoiser_fingerprint(generator)
    path = Path(path) if path is not None else find_vectors_path(generator, fingerprint)
    return (load_vectors(path, fingerprint=fingerprint) if path is not None else None), path


_ALTERNATIVES: "weakref.WeakKeyDictionary[Generator, tuple[SteeringVectors | None, str]]" = weakref.WeakKeyDictionary()


def alternative_denoiser(generator: Generator, name: str) -> tuple[Generator, SteeringVectors | None, str]:
    """The model ``generator`` with its alternative denoiser ``name`` (shipped beside the
    weights, :func:`medcf.models.variants.with_denoiser`, loaded once per model), that
    denoiser's own steering vectors (vectors belong to one denoiser) and its fingerprint;
    the vectors are read and the weights hashed once per loaded denoiser, not once per edit."""
    variant = with_denoiser(generator, name)
    if variant not in _ALTERNATIVES:
        _ALTERNATIVES[variant] = (own_vectors(variant)[0], denoiser_fingerprint(variant))
    vectors, sha256 = _ALTERNATIVES[variant]
    return variant, vectors, sha256
