"""Mask registration with SimpleITK: one mechanism for the world's lung shapes and for
placing a lesion on a film.

:func:`register_shape` carries one binary shape onto another with a smooth B-spline (the
world's film-look transforms warp its lungs toward real outlines with it,
:mod:`medcf.world.film`). :func:`register_anatomy` registers one projected anatomy (lungs
and heart: the lesion bank's canonical film) onto another (this film's masks): an affine
first, from the lungs' bounding boxes refined on the masks, then a B-spline on top. It
returns, for every pixel of the film, where it lies on the other grid, so that a lesion
drawn there can be sampled onto the film (``--method insert``, :mod:`medcf.insertion.placement`).

Why smoothed masks and not distance maps for the anatomy: the two grids differ in scale
(a 512² canonical film, a 2800 × 2300 detector), and a distance in pixels means something
else on each; a blurred mask's values (0..1) mean the same on both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medcf.anatomy.real_shapes import thoracic_silhouette
from medcf.errors import InputError
from medcf.metrics import dice

WORK_SIDE = 128  # the longer side of the grid the anatomy is registered on
BLUR_PX = 2.0  # mask smoothing on that grid (capture range of the metric)
HEART_WEIGHT = 0.5  # the heart's intensity in the composite image (lungs' silhouette: 1)
SAMPLING, SAMPLING_SEED = 0.25, 7  # the metric reads a fixed random quarter of the pixels (seeded: the same fit each run)


def register_shape(moving: np.ndarray, fixed: np.ndarray, mesh: int = 4, iterations: int = 60) -> np.ndarray:
    """A smooth deformation that carries the ``moving`` shape onto the ``fixed`` one, both
    binary masks of the same size: SimpleITK's B-spline registration (``mesh`` x ``mesh``
    control grid, so the warp stays smooth and one region stays one region) of their
    signed distance maps, mean squares metric, L-BFGS-B, two resolutions. Returns the
    dense displacement field (2, rows, cols) in pixels, (row, col) components, in the
    fixed frame: ``warped(x) = moving(x + field(x))``, MONAI ``Warp``'s convention."""
    import SimpleITK as sitk

    def distance(mask: np.ndarray) -> sitk.Image:
        image = sitk.GetImageFromArray((np.asarray(mask) > 0.5).astype(np.uint8))
        signed = sitk.SignedMaurerDistanceMap(image, insideIsPositive=False, squaredDistance=False,
                                              useImageSpacing=True)
        return sitk.Clamp(sitk.Cast(signed, sitk.sitkFloat32), lowerBound=-10.0, upperBound=10.0)

    fixed_image, moving_image = distance(fixed), distance(moving)
    transform = sitk.BSplineTransformInitializer(fixed_image, [mesh, mesh], order=3)
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMeanSquares()
    method.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=iterations)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetShrinkFactorsPerLevel([2, 1])
    method.SetSmoothingSigmasPerLevel([1.0, 0.0])
    method.SetInitialTransform(transform, inPlace=True)
    method.SetNumberOfThreads(1)  # a sum in one order: the same field on every run
    method.Execute(fixed_image, moving_image)
    field = sitk.TransformToDisplacementField(transform, sitk.sitkVectorFloat64, fixed_image.GetSize(),
                                              fixed_image.GetOrigin(), fixed_image.GetSpacing(),
                                              fixed_image.GetDirection())
    vectors = sitk.GetArrayFromImage(field)  # (rows, cols, 2) as (x = col, y = row)
    return np.stack([vectors[..., 1], vectors[..., 0]]).astype(np.float32)


@dataclass(frozen=True)
class Anatomy2D:
    """Lungs (both, bool) and heart (bool) of one frontal film on its own grid."""

    lungs: np.ndarray
    heart: np.ndarray

    def __post_init__(self) -> None:
        if self.lungs.shape != self.heart.shape or self.lungs.ndim != 2:
            raise ValueError("lungs and heart must share one 2D shape")
        if not self.lungs.any():
            raise InputError("no lung in the anatomy masks: nothing to register a lesion onto")


@dataclass(frozen=True)
class AnatomyRegistration:
    """Where each film pixel lies on the other (moving) grid.

    ``coarse``: (2, h, w) moving-grid (row, col) of the centre of each cell of the coarse
    film grid, whose cells are ``step`` (rows, cols) film pixels; :meth:`coordinates` interpolates it
    at any film pixels. ``dice_lungs``/``dice_heart``: the moving anatomy warped onto the
    coarse film grid against the film's own (the fit), ``affine_*`` the same after the
    affine alone."""

    coarse: np.ndarray
    step: tuple[float, float]
    film_shape: tuple[int, int]
    dice_lungs: float
    dice_heart: float
    affine_dice_lungs: float
    affine_dice_heart: float
    affine: tuple[float, ...]

    def coordinates(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Moving-grid (row, col) of film pixels ``rows``, ``cols`` (broadcast arrays): (2, *shape)."""
        from scipy.ndimage import map_coordinates

        (sr, sc) = self.step
        at = np.stack(np.broadcast_arrays((rows - (sr - 1) / 2) / sr, (cols - (sc - 1) / 2) / sc)).astype(np.float32)
        return np.stack([map_coordinates(self.coarse[k], at, order=1, mode="nearest") for k in range(2)])

    def to_dict(self) -> dict:
        return {"method": "SimpleITK: axis-aligned affine from the lungs' boxes, refined (mean squares on "
                          "smoothed lungs' silhouette + heart), then a 4 x 4 B-spline",
                "grid_step_px": [round(s, 3) for s in self.step], "dice_lungs": round(self.dice_lungs, 4),
                "dice_heart": round(self.dice_heart, 4), "affine_dice_lungs": round(self.affine_dice_lungs, 4),
                "affine_dice_heart": round(self.affine_dice_heart, 4),
                "affine": [round(v, 5) for v in self.affine]}


def _shrink(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Area-average ``mask`` onto ``shape`` (floats 0..1)."""
    import torch
    import torch.nn.functional as F

    tensor = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
    return F.adaptive_avg_pool2d(tensor, shape)[0, 0].numpy()


def _composite(lungs: np.ndarray, heart: np.ndarray):
    """The image that is registered: smoothed silhouette of the lungs plus the heart."""
    import SimpleITK as sitk
    from scipy.ndimage import gaussian_filter

    values = (thoracic_silhouette(lungs > 0.5).astype(np.float32) + HEART_WEIGHT * (heart > 0.5))
    return sitk.GetImageFromArray(gaussian_filter(values, BLUR_PX).astype(np.float32))


def _box(mask: np.ndarray) -> tuple[float, float, float, float]:
    rows, cols = np.nonzero(mask)
    return float(rows.min()), float(cols.min()), float(rows.max() + 1), float(cols.max() + 1)


def register_anatomy(moving: Anatomy2D, fixed: Anatomy2D, work_side: int = WORK_SIDE) -> AnatomyRegistration:
    """Register ``moving`` (e.g. the lesion bank's canonical anatomy) onto ``fixed`` (this
    film's masks): where each film pixel lies on the moving grid. Both are shrunk to about
    ``work_side`` pixels on the longer side, registered there (affine, then a 4 x 4 B-spline
    on top, both by SimpleITK on :func:`_composite` images), and the map is kept on that
    coarse film grid (:meth:`AnatomyRegistration.coordinates` reads it at film pixels)."""
    import SimpleITK as sitk

    def grid(shape: tuple[int, int]) -> tuple[tuple[int, int], np.ndarray]:
        side = max(shape) / work_side
        small = (max(8, round(shape[0] / side)), max(8, round(shape[1] / side)))
        return small, np.array([shape[0] / small[0], shape[1] / small[1]])

    fixed_shape, step = grid(fixed.lungs.shape)
    moving_shape, m_step = grid(moving.lungs.shape)
    f_lungs, f_heart = (_shrink(m, fixed_shape) > 0.5 for m in (fixed.lungs, fixed.heart))
    m_lungs, m_heart = (_shrink(m, moving_shape) > 0.5 for m in (moving.lungs, moving.heart))
    if not f_lungs.any() or not m_lungs.any():
        raise InputError("the lungs vanish at the registration's grid: the lung masks are too small")
    fixed_image, moving_image = _composite(f_lungs, f_heart), _composite(m_lungs, m_heart)
    # the first guess: the film's lung box onto the world's, axis by axis (x = col, y = row)
    f0r, f0c, f1r, f1c = _box(f_lungs)
    m0r, m0c, m1r, m1c = _box(m_lungs)
    sy, sx = (m1r - m0r) / (f1r - f0r), (m1c - m0c) / (f1c - f0c)
    affine = sitk.AffineTransform(2)
    affine.SetMatrix([sx, 0.0, 0.0, sy])
    affine.SetTranslation([m0c - sx * f0c, m0r - sy * f0r])
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMeanSquares()
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-3, numberOfIterations=80,
                                                    gradientMagnitudeTolerance=1e-6)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(SAMPLING, SAMPLING_SEED)
    method.SetInitialTransform(affine, inPlace=True)
    method.SetNumberOfThreads(1)
    method.Execute(fixed_image, moving_image)
    bspline = sitk.BSplineTransformInitializer(fixed_image, [4, 4], order=3)
    refine = sitk.ImageRegistrationMethod()
    refine.SetMetricAsMeanSquares()
    refine.SetInterpolator(sitk.sitkLinear)
    refine.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=40)
    refine.SetMetricSamplingStrategy(refine.RANDOM)
    refine.SetMetricSamplingPercentage(SAMPLING, SAMPLING_SEED)
    refine.SetMovingInitialTransform(affine)
    refine.SetInitialTransform(bspline, inPlace=True)
    refine.SetNumberOfThreads(1)
    refine.Execute(fixed_image, moving_image)

    def mapped(transform) -> np.ndarray:
        field = sitk.TransformToDisplacementField(transform, sitk.sitkVectorFloat64, fixed_image.GetSize(),
                                                  fixed_image.GetOrigin(), fixed_image.GetSpacing(),
                                                  fixed_image.GetDirection())
        vectors = sitk.GetArrayFromImage(field)  # (rows, cols, 2) as (x, y)
        rows, cols = np.mgrid[0:fixed_shape[0], 0:fixed_shape[1]].astype(np.float64)
        return np.stack([rows + vectors[..., 1], cols + vectors[..., 0]])

    def fit(coords: np.ndarray) -> tuple[float, float]:
        from scipy.ndimage import map_coordinates

        warped = [map_coordinates(m.astype(np.float32), coords, order=1, cval=0.0) > 0.5 for m in (m_lungs, m_heart)]
        return dice(warped[0], f_lungs), dice(warped[1], f_heart) if f_heart.any() else float("nan")

    affine_coords = mapped(affine)
    full = sitk.CompositeTransform([affine, bspline])  # the B-spline acts first, then the affine
    coords = mapped(full)
    a_lungs, a_heart = fit(affine_coords)
    d_lungs, d_heart = fit(coords)
    if d_lungs < a_lungs:  # the B-spline made it worse: keep the affine
        coords, d_lungs, d_heart = affine_coords, a_lungs, a_heart
    # coarse moving-grid cells -> moving pixels; coarse film cells are ``step`` film pixels
    coarse = (coords * m_step[:, None, None] + (m_step[:, None, None] - 1) / 2).astype(np.float32)
    return AnatomyRegistration(coarse, (float(step[0]), float(step[1])), tuple(fixed.lungs.shape), float(d_lungs), float(d_heart),
                               float(a_lungs), float(a_heart), tuple(affine.GetParameters()))
