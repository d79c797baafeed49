"""A statistical shape model of the lungs' outline, from real outlines and the world's.

Why: the plausibility rules (:mod:`medcf.anatomy.plausibility`) catch what breaks
anatomy outright (sides, pieces, a wedge for a heart); a lung field of a shape no chest
has (stretched into the abdomen, squashed, bulging) can pass each of them. Here the
outline is compared with the outlines of real chests: a point distribution in the space of
signed distance maps, fitted by PCA, and a distance to it (probabilistic PCA's
Mahalanobis distance: the scores over the retained variances plus what the components
cannot reproduce over the mean discarded variance), per dimension, so 1 is a typical
shape.

What is modelled: the **thoracic outline** (both lungs with the space between them filled
row by row: apices, lateral walls, domes; :func:`~medcf.anatomy.real_shapes.thoracic_silhouette`)
in the lungs' own frame (their box widened by 15 %, so size and framing drop out), as a
signed distance map of :data:`SIDE` px a side, clamped at :data:`CLAMP` of the frame.
Medial borders are left out: hand-drawn lung fields stop at the heart or take it in, MedCF's
whole projected lungs run behind it; the medial border would measure a drawing convention.

Which outlines: the two-lung drawings among V7 Labs' lung annotations shipped in
torchxrayvision (435 films, CC BY 4.0), read at run time from the installed package
(:mod:`medcf.anatomy.real_shapes`), and the simulated world's outlines of
:data:`WORLD_OUTLINES` (160 tuning renders, seeds 1 100 000-1 100 079, each with its exact
masks and the default network's). The world's outlines are needed because its whole
projected lungs reach lower than a hand-drawn lung field: on a model of the real outlines
alone, every render sat in the real outlines' tail (median distance 1.05 against 0.61).
The model is fitted on first use (about 10 s) and cached in ``$MEDCF_CACHE/anatomy`` under
a name fixed by its inputs. Without torchxrayvision the model is unavailable: the
plausibility check records that and runs its other rules.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medcf.anatomy.real_shapes import in_frame, installed_lung_shapes, real_lung_masks, thoracic_silhouette
from medcf.bundle import WEIGHTS_DIR, bundle_path
from medcf.cache import cache_dir
from medcf.errors import OutputError
from medcf.io.atomic import write_new_file
from medcf.vocab import StrEnum

SIDE = 32  # the signed distance map's side (px of the lungs' frame)
CLAMP = 0.25  # distances are clamped at this share of the frame: far from the outline, all is "far"
COMPONENTS = 8  # retained principal components (the rest is one isotropic residual variance)
VERSION = 1  # bump when the descriptor or the fit changes: cached models are refitted
# The distance above which an outline is refused. Chosen by leave-one-out (leave one patient
# out for the renders) on the model's own outlines (benchmarks/bench_plausibility.py
# --shape-model): the 435 real outlines score 0.98 median, 2.16 at the 99th percentile,
# 2.31 at the 99.5th, 3.04 at most; the 320 tuning outlines 0.87 median, 1.55 at most.
# The bound refuses about 0.5 % of real outlines, drawn by hand on real films (some on
# consolidated, collapsed or operated lungs), and no render.
MAX_DISTANCE = 2.4
WORLD_OUTLINES = "anatomy_world_outlines.npz"  # beside the segmenter's weights


class ShapeModelStatus(StrEnum):
    """Whether the outline was compared with the shape model, recorded with every check."""

    CHECKED = "checked"
    UNAVAILABLE = "unavailable"


def outline(lungs: np.ndarray) -> np.ndarray:
    """The thoracic outline of the lung mask ``lungs`` (any size) in the lungs' frame,
    (SIDE, SIDE) bool."""
    return in_frame(thoracic_silhouette(np.asarray(lungs) > 0.5), SIDE) > 0.5


def descriptor(frame_outline: np.ndarray) -> np.ndarray:
    """The clamped signed distance map of a frame outline (negative inside), as a vector,
    in units of the frame's side."""
    from scipy import ndimage

    inside = np.asarray(frame_outline, bool)
    signed = (ndimage.distance_transform_edt(~inside) - ndimage.distance_transform_edt(inside)) / SIDE
    return np.clip(signed, -CLAMP, CLAMP).astype(np.float64).ravel()


@dataclass
class ShapeModel:
    """Mean, retained components (k, d), their variances (k,), the residual variance, and
    how many outlines of each source it was fitted on."""

    mean: np.ndarray
    components: np.ndarray
    variances: np.ndarray
    residual_variance: float
    counts: dict[str, int]

    def distance(self, lungs: np.ndarray) -> float:
        """The distance of the outline of ``lungs`` from the model (1: typical)."""
        return self.distance_of(descriptor(outline(lungs)))

    def distance_of(self, vector: np.ndarray) -> float:
        centred = vector - self.mean
        scores = self.components @ centred
        residual = centred - self.components.T @ scores
        squared = float((scores ** 2 / self.variances).sum() + (residual ** 2).sum() / self.residual_variance)
        return float(np.sqrt(squared / vector.size))

    def save(self, path: Path) -> Path:
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.savez(handle, mean=self.mean, components=self.components, variances=self.variances,
                         residual_variance=self.residual_variance, real=self.counts["real"],
                         world=self.counts["world"])
        return write_new_file(path, write)

    @classmethod
    def load(cls, path: Path) -> "ShapeModel":
        with np.load(path) as data:
            return cls(data["mean"], data["components"], data["variances"], float(data["residual_variance"]),
                       {"real": int(data["real"]), "world": int(data["world"])})


def fit(vectors: np.ndarray, counts: dict[str, int], components: int = COMPONENTS) -> ShapeModel:
    """Probabilistic PCA of descriptor ``vectors`` (n, d): the top ``components`` of the
    covariance and the mean of the rest as the residual variance."""
    mean = vectors.mean(axis=0)
    values, vectors_ = np.linalg.eigh(np.cov(vectors - mean, rowvar=False))
    values, vectors_ = values[::-1], vectors_[:, ::-1]
    residual = float(max(values[components:].mean(), 1e-12))
    return ShapeModel(mean, vectors_[:, :components].T.copy(), values[:components].copy(), residual, counts)


def world_outlines(path: Path) -> np.ndarray:
    """The world's frame outlines kept beside the segmenter (n, SIDE, SIDE) bool."""
    with np.load(path) as data:
        return np.unpackbits(data["outlines"], axis=-1, count=SIDE).astype(bool)


def save_world_outlines(outlines: np.ndarray, path: Path) -> Path:
    """Write frame outlines (n, SIDE, SIDE) bool, bit-packed (``benchmarks/bench_plausibility.py``)."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, outlines=np.packbits(np.asarray(outlines, bool), axis=-1))
    return write_new_file(path, write)


def real_outlines(source: Path) -> np.ndarray:
    """The frame outlines of the two-lung drawings in ``source`` (a zip of mask images),
    (n, SIDE, SIDE) bool; n may be 0."""
    outlines = [outline(mask) for mask in real_lung_masks(source, frame=False)]
    return np.stack(outlines) if outlines else np.zeros((0, SIDE, SIDE), bool)


def _world_path() -> Path:
    return bundle_path(WEIGHTS_DIR, WORLD_OUTLINES)


_LOADED: dict[str, ShapeModel] = {}


def load_shape_model(source: Path | None = None, world: Path | None = None) -> tuple[ShapeModel | None, str]:
    """The shape model and a one-phrase account of where it came from; ``(None, why)`` when
    it cannot be had (no torchxrayvision installed, no world outlines). Fitted once per
    input and cached on disk and in the process."""
    source = source if source is not None else installed_lung_shapes()
    if source is None:
        return None, "torchxrayvision is not installed (pip install --no-deps torchxrayvision==1.5.7)"
    world = world if world is not None else _world_path()
    if not Path(world).is_file():
        return None, f"the world's outlines are missing ({world})"
    digest = hashlib.sha256()
    for path in (source, world):
        digest.update(Path(path).read_bytes())
    digest.update(f"v{VERSION}-{SIDE}-{CLAMP}-{COMPONENTS}".encode())
    key = digest.hexdigest()[:16]
    account = f"{Path(source).name} + {Path(world).name} ({key})"
    if key in _LOADED:
        return _LOADED[key], account
    cached = cache_dir("anatomy") / f"shape-model-{key}.npz"
    if cached.is_file():
        model = ShapeModel.load(cached)
    else:
        try:
            real, ours = real_outlines(Path(source)), world_outlines(Path(world))
        except (OSError, ValueError, zipfile.BadZipFile) as error:
            return None, f"the outlines cannot be read ({error})"
        if len(real) < 10 * COMPONENTS:
            return None, f"{len(real)} two-lung outlines in {Path(source).name}, too few for the model"
        vectors = np.stack([descriptor(o) for o in np.concatenate([real, ours])])
        model = fit(vectors, {"real": len(real), "world": len(ours)})
        cached.parent.mkdir(parents=True, exist_ok=True)
        try:
            model.save(cached)
        except OutputError:
            pass  # another process cached the same model meanwhile
    _LOADED[key] = model
    return model, account
