"""One simulated patient, one acquisition: the counterfactual, the factual image
at every requested severity, and the projected masks, all from the same
deformed CT, pose, exposure, noise field and display processing.

Everything random is drawn from the sample's seed, so a sample is reproduced
exactly by its seed (and the MedCF version).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from medcf.vocab import ANATOMY_BITS, Finding, Severity, Side, ViewPosition, Zone
from medcf.world.ct import ChestCT, Structure
from medcf.world.habitus import Habitus, body, breast_volume, draw_habitus
from medcf.world.pathology import LesionSpec, build_lesion
from medcf.world.physics import DisplayProcessing, Exposure, basis_densities, basis_weights, detect
from medcf.world.projector import MM_PER_CM, Pose, Projector, SlabStack, geometry_for, slab_sums

LESION_LEGEND = {"background": 0, "lesion": 1}
MASK_THRESHOLD_MM = 2.0
MAX_PROJECTION_SIZE = 512  # a ray that crosses at least this much of a structure shows it


@dataclass(frozen=True)
class Acquisition:
    """Everything about one radiograph that is not the patient's disease."""

    view: ViewPosition
    size: int
    pose: Pose
    exposure: Exposure
    noise_seed: int
    unsharp_amount: float = 0.6
    contrast: float = 3.0
    habitus: Habitus = Habitus()


def draw_acquisition(seed: int, view: ViewPosition, size: int) -> Acquisition:
    """Patient habitus, positioning, breathing, beam and detector drawn from ``seed``."""
    rng = np.random.default_rng([seed, 1])
    pose = Pose(
        rotation=float(rng.normal(0, 2.5)), tilt=float(rng.normal(0, 2.5)), roll=float(rng.normal(0, 1.5)),
        width=float(rng.uniform(0.9, 1.1)), depth=float(rng.uniform(0.88, 1.15)),
        height=float(rng.uniform(0.93, 1.07)),
        shift_mm=(float(rng.normal(0, 8)), 0.0, float(rng.normal(0, 8))),
        deformation_mm=float(rng.uniform(2.0, 6.0)), deformation_seed=int(rng.integers(2**31)),
    )
    exposure = Exposure(
        kvp=float(rng.uniform(100, 125)) if view is not ViewPosition.AP else float(rng.uniform(85, 105)),
        quanta_per_mm2=float(np.exp(rng.uniform(np.log(4e4), np.log(2e5)))),
        scatter_fraction=float(rng.uniform(0.2, 0.4)) if view is not ViewPosition.AP else float(rng.uniform(0.3, 0.45)),
        blur_mm=float(rng.uniform(0.25, 0.5)),
    )
    return Acquisition(view=view, size=size, pose=pose, exposure=exposure, noise_seed=int(rng.integers(2**31)),
                       unsharp_amount=float(rng.uniform(0.3, 0.9)), contrast=float(rng.uniform(2.2, 3.6)),
                       habitus=draw_habitus(seed))


@dataclass
class Rendering:
    """Display images in [0, 1] (MONOCHROME2 sense) and masks of one sample."""

    counterfactual: np.ndarray
    factual: dict[Severity, np.ndarray]
    lesion_masks: dict[Severity, np.ndarray]
    anatomy: np.ndarray  # uint8 bits of ANATOMY_BITS, counterfactual anatomy
    anatomy_factual: dict[Severity, np.ndarray]
    pixel_mm: float  # detector pitch
    isocentre_pixel_mm: float
    magnification: float
    display: DisplayProcessing
    line_integrals: dict[str, np.ndarray] = field(default_factory=dict)  # "counterfactual", "mild", ...


class World:
    """A chest CT ready to render: per-view slab stacks of its basis densities and
    of its anatomy are cut once and reused by every sample."""

    def __init__(self, ct: ChestCT, slab_voxels: int = 4, mask_slab_voxels: int = 16):
        self.ct = ct
        self.slab_voxels = slab_voxels
        self.mask_slab_voxels = mask_slab_voxels  # thresholded masks tolerate coarser slabs
        self._stacks: dict[int, tuple[SlabStack, SlabStack]] = {}

    def _anatomy_volumes(self) -> np.ndarray:
        ct = self.ct
        channels = [ct.lung(Side.RIGHT), ct.lung(Side.LEFT), ct.structure(Structure.HEART),
                    ct.structure(Structure.MEDIASTINUM),
                    ct.zone(Side.BILATERAL, Zone.UPPER), ct.zone(Side.BILATERAL, Zone.MIDDLE),
                    ct.zone(Side.BILATERAL, Zone.LOWER), body(ct)]  # body last: not a label bit
        return np.stack(channels).astype(np.float32)

    def stacks(self, beam_axis: int) -> tuple[SlabStack, SlabStack]:
        if beam_axis not in self._stacks:
            bases = self.ct.memo("bases", lambda: basis_densities(self.ct.hu))
            self._stacks[beam_axis] = (slab_sums(bases, self.ct, beam_axis, self.slab_voxels),
                                       slab_sums(self._anatomy_volumes(), self.ct, beam_axis, self.mask_slab_voxels))
        return self._stacks[beam_axis]

    def render(self, acquisition: Acquisition, lesion: LesionSpec | None = None,
               severities: tuple[Severity, ...] | None = None, keep_line_integrals: bool = False,
               background: tuple[LesionSpec, ...] = ()) -> Rendering:
        """Render the counterfactual and, if ``lesion`` is given, the factual image at each
        of ``severities`` (default: the lesion's own severity).

        ``background`` findings belong to the patient: they are in the counterfactual
        and in every factual image alike (the counterfactual removes only ``lesion``).
        """
        geometry = geometry_for(acquisition.view)
        # Above 512 pixels the CT (1.4 x 1.4 x 2.5 mm) has no more detail to give: project
        # at 512 and interpolate the smooth line integrals; blur and noise are added at full size.
        projector = Projector(self.ct, geometry, acquisition.pose, min(acquisition.size, MAX_PROJECTION_SIZE))
        size = acquisition.size

        def full_size(images: np.ndarray, nearest: bool = False) -> np.ndarray:
            if images.shape[-1] == size:
                return images
            tensor = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))[None]
            mode = "nearest" if nearest else "bicubic"
            kwargs = {} if nearest else {"align_corners": False}
            return torch.nn.functional.interpolate(tensor, size=(size, size), mode=mode, **kwargs)[0].numpy()

        base_stack, anatomy_stack = self.stacks(geometry.beam_axis)
        weights = basis_weights(acquisition.exposure.energy_kev)
        weights[2] *= acquisition.habitus.bone_density  # the bone basis is the mineral fraction
        # Attenuation is linear in the bases: weigh the slabs first, project one channel.
        mu_sums = torch.einsum("c,kchw->khw", torch.from_numpy(weights), base_stack.sums)[:, None]
        mu_stack = SlabStack(mu_sums, base_stack.centres_mm, base_stack.beam_axis)
        base_integral = full_size(projector.project(mu_stack))[0] / MM_PER_CM  # mu [1/cm] x path [mm]
        anatomy = projector.project(anatomy_stack)
        anatomy_bits = self._bits(full_size(anatomy[:-1], nearest=True))
        base_integral += weights[0] / MM_PER_CM * self._habitus_water_mm(acquisition.habitus, projector, geometry.beam_axis,
                                                                    full_size(anatomy[-1:])[0])
        for other in background:
            delta, extent = self._project_lesion(other, projector, geometry.beam_axis, full_size)
            base_integral += weights[0] * delta / MM_PER_CM
            if other.finding is Finding.CARDIOMEGALY:
                anatomy_bits[extent] |= ANATOMY_BITS["heart"]
        noise = np.random.default_rng(acquisition.noise_seed).standard_normal(base_integral.shape).astype(np.float32)
        pixel = projector.pixel_mm * projector.size / size

        def to_log(integral: np.ndarray) -> np.ndarray:
            return detect(integral, acquisition.exposure, pixel, noise)

        cf_log = to_log(base_integral)
        aerated = ((anatomy_channel(anatomy_bits, "lung_left") | anatomy_channel(anatomy_bits, "lung_right"))
                   & ~anatomy_channel(anatomy_bits, "heart") & ~anatomy_channel(anatomy_bits, "mediastinum"))
        display = DisplayProcessing.fit(cf_log, lungs=aerated, unsharp_amount=acquisition.unsharp_amount,
                                        contrast=acquisition.contrast)
        rendering = Rendering(
            counterfactual=display.apply(cf_log, pixel), factual={}, lesion_masks={}, anatomy=anatomy_bits,
            anatomy_factual={}, pixel_mm=pixel, isocentre_pixel_mm=geometry.field_mm / size,
            magnification=geometry.magnification, display=display,
        )
        if keep_line_integrals:
            rendering.line_integrals["counterfactual"] = base_integral
        if lesion is None:
            return rendering
        for severity in severities or (lesion.severity,):
            delta, lesion_mask = self._project_lesion(replace(lesion, severity=severity), projector,
                                                      geometry.beam_axis, full_size)
            integral = base_integral + weights[0] * delta / MM_PER_CM
            rendering.factual[severity] = display.apply(to_log(integral), pixel)
            rendering.lesion_masks[severity] = lesion_mask
            factual_bits = anatomy_bits.copy()
            if lesion.finding is Finding.CARDIOMEGALY:
                factual_bits[lesion_mask] |= ANATOMY_BITS["heart"]
            rendering.anatomy_factual[severity] = factual_bits
            if keep_line_integrals:
                rendering.line_integrals[severity.value] = integral
        return rendering

    def _project_lesion(self, spec: LesionSpec, projector: Projector, beam_axis: int, full_size):
        """Projected density change (water-equivalent mm) and projected extent of one finding."""
        volume = build_lesion(self.ct, spec)
        stack = slab_sums(np.stack([volume.delta, volume.mask.astype(np.float32)]), self.ct, beam_axis,
                          self.slab_voxels, box=volume.box)
        delta, thickness = full_size(projector.project(stack))
        return delta, thickness > MASK_THRESHOLD_MM

    def _habitus_water_mm(self, habitus: Habitus, projector: Projector, beam_axis: int,
                          body_mm: np.ndarray) -> np.ndarray:
        """Water-equivalent mm the patient's habitus adds along each ray: breast tissue,
        and a subcutaneous layer that tapers to nothing at the body's edge."""
        extra = habitus.soft_tissue_mm * np.clip((body_mm - 20.0) / 80.0, 0.0, 1.0)
        breasts = breast_volume(self.ct, habitus)
        if breasts is not None:
            stack = slab_sums(breasts.delta, self.ct, beam_axis, self.slab_voxels, box=breasts.box)
            projected = projector.project(stack)
            size = body_mm.shape[-1]
            if projected.shape[-1] != size:
                projected = torch.nn.functional.interpolate(torch.from_numpy(projected)[None], size=(size, size),
                                                            mode="bicubic", align_corners=False)[0].numpy()
            extra = extra + projected[0]
        return extra.astype(np.float32)

    @staticmethod
    def _bits(thickness: np.ndarray) -> np.ndarray:
        bits = np.zeros(thickness.shape[1:], np.uint8)
        for channel, value in enumerate(ANATOMY_BITS.values()):
            bits[thickness[channel] > MASK_THRESHOLD_MM] |= value
        return bits


def anatomy_channel(bits: np.ndarray, name: str) -> np.ndarray:
    """One structure (or a zone name such as ``lung_left&zone_lower``) from a bit label map."""
    mask = np.ones(bits.shape, bool)
    for part in name.split("&"):
        mask &= (bits & ANATOMY_BITS[part]) > 0
    return mask


def cardiothoracic_ratio(bits: np.ndarray) -> float:
    """Widest heart span over widest lung span, in image columns (frontal views)."""
    heart = anatomy_channel(bits, "heart").any(axis=0)
    lungs = (anatomy_channel(bits, "lung_left") | anatomy_channel(bits, "lung_right")).any(axis=0)
    if not heart.any() or not lungs.any():
        return float("nan")
    span = lambda cols: np.flatnonzero(cols).max() - np.flatnonzero(cols).min() + 1  # noqa: E731
    return float(span(heart) / span(lungs))
