"""Where the editor finds a model's steering vectors and alternative denoisers.

Both come from the model's package (:mod:`medcf.models.package`, one manifest read once);
steering vectors a user estimated with ``medcf steer-vectors`` live in the cache under the
denoiser's fingerprint. Vectors belong to one denoiser, so an alternative denoiser brings
its own. Each lookup is one small function here, so the editor never searches for files.
"""

from __future__ import annotations

import weakref
from pathlib import Path

from medcf.cache import cache_dir
from medcf.editing.steering import SteeringVectors, denoiser_fingerprint, load_vectors
from medcf.models.base import Generator
from medcf.models.package import Role, package_of
from medcf.models.variants import with_denoiser


def vectors_cache_path(fingerprint: str) -> Path:
    """Where ``medcf steer-vectors`` caches the vectors of the denoiser with ``fingerprint``."""
    return cache_dir("steering") / f"{fingerprint[:16]}.safetensors"


def find_vectors_path(generator: Generator, fingerprint: str | None = None) -> Path | None:
    """Where ``generator``'s steering vectors are: in its package, else in the cache
    ``medcf steer-vectors`` fills; None if nowhere."""
    fingerprint = fingerprint or denoiser_fingerprint(generator)
    shipped = package_of(generator).steering_vectors
    if shipped is not None:
        return shipped.path(Role.VECTORS)
    cached = vectors_cache_path(fingerprint)
    return cached if cached.is_file() else None


def own_vectors(generator: Generator, path: str | Path | None = None) -> tuple[SteeringVectors | None, Path | None]:
    """``generator``'s steering vectors and where they came from: ``path`` if given, else
    the file its package lists or the cache (:func:`find_vectors_path`); vectors made
    for other weights are refused. ``(None, None)`` where there are none."""
    fingerprint = denoiser_fingerprint(generator)
    path = Path(path) if path is not None else find_vectors_path(generator, fingerprint)
    return (load_vectors(path, fingerprint=fingerprint) if path is not None else None), path


_ALTERNATIVES: "weakref.WeakKeyDictionary[Generator, tuple[SteeringVectors | None, str]]" = weakref.WeakKeyDictionary()


def alternative_denoiser(generator: Generator, name: str) -> tuple[Generator, SteeringVectors | None, str]:
    """The model ``generator`` with its alternative denoiser ``name`` (listed in its package,
    :func:`medcf.models.variants.with_denoiser`, loaded once per model), that denoiser's own
    steering vectors (vectors belong to one denoiser) and its fingerprint; the vectors are
    read and the weights hashed once per loaded denoiser, not once per edit."""
    variant = with_denoiser(generator, name)
    if variant not in _ALTERNATIVES:
        _ALTERNATIVES[variant] = (own_vectors(variant)[0], denoiser_fingerprint(variant))
    vectors, sha256 = _ALTERNATIVES[variant]
    return variant, vectors, sha256
