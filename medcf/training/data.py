"""The world sets the generator and autoencoder learn from and are measured on: rendered once
from the simulated world into the cache (:mod:`medcf.models.data`), or a given ``.npz``."""

from __future__ import annotations

from pathlib import Path

from medcf.models.data import HELD_OUT_SEED_START, WorldSet, WorldSetSpec, load_world_set, render_world_set


def training_world_set(data: str | None, n_pairs: int, size: int, seed: int,
                       progress: bool) -> tuple[Path, WorldSet]:
    """The given world set ``data``, or the default one of ``n_pairs`` pairs from ``seed``."""
    if data:
        return Path(data), load_world_set(data)
    path = render_world_set(WorldSetSpec(n_pairs=n_pairs, size=size, seed=seed), progress=progress)
    return path, load_world_set(path)


def heldout_world_set(n_pairs: int, size: int, progress: bool) -> tuple[Path, WorldSet]:
    """``n_pairs`` held-out pairs (seeds from :data:`HELD_OUT_SEED_START`, apart from training)."""
    path = render_world_set(WorldSetSpec(n_pairs=n_pairs, size=size, seed=HELD_OUT_SEED_START, split="heldout"),
                            progress=progress)
    return path, load_world_set(path)
