"""Simulated radiographs as DICOM studies, for end-to-end tests and the demo.

A study looks like what a research PACS exports for "XR CHEST 2 VIEWS": a
frontal and a left-lateral image (CR MONOCHROME1 for upright PA studies, DX
MONOCHROME2 for portable AP studies), 12-bit, JPEG-LS lossless,
Imager Pixel Spacing and the magnification factor of the geometry. It is
honest about what it is: Synthetic Data = YES, "SIMULATED" in the patient
name and the descriptions, and the seed in Image Comments.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid

from medcf.io.samples import SampleSpec, make_sample, save_sample
from medcf.vocab import Photometric, Severity, SpacingSource, ViewPosition
from medcf.world.pathology import LesionSpec
from medcf.world.projector import geometry_for
from medcf.world.render import Rendering, World, draw_acquisition

_BASE_SPEC = SampleSpec(modality="CR", photometric=Photometric.MONOCHROME1, bits_stored=12, transfer_syntax="jpeg-ls",
                        spacing=SpacingSource.IMAGER_PIXEL_SPACING)


def write_study(folder: Path, seed: int, images: list[tuple[ViewPosition, np.ndarray, float]],
                description: str, comment: str) -> list[Path]:
    """Write one study: ``images`` are (view, display image in [0, 1], detector pixel mm).

    Upright PA studies are CR (cassette) images; AP studies are what a portable
    flat-panel unit makes: DX For Presentation, MONOCHROME2.
    """
    study_uid = generate_uid()
    written = []
    portable = any(view is ViewPosition.AP for view, _, _ in images)
    base = replace(_BASE_SPEC, modality="DX", photometric=Photometric.MONOCHROME2) if portable else _BASE_SPEC
    for number, (view, display, pixel_mm) in enumerate(images, start=1):
        rows, columns = display.shape
        spec = replace(base, view=view, rows=rows, columns=columns, seed=seed, spacing_mm=round(pixel_mm, 6))
        ds, _ = make_sample(spec, image=display)
        geometry = geometry_for(view)
        ds.StudyInstanceUID = study_uid
        ds.SeriesNumber = number
        ds.PatientName = f"SIMULATED^CHEST^{seed}"
        ds.PatientID = f"MEDCF-SIM-{seed:06d}"
        ds.AccessionNumber = f"SIM{seed:07d}"[:16]
        ds.StudyDescription = f"XR CHEST 2 VIEWS (MedCF simulated, not a patient) {description}"[:64]
        ds.SeriesDescription = f"SIMULATED CHEST {'LATERAL' if view.is_lateral else view.value}"
        ds.Manufacturer = "MedCF simulated world"
        ds.SyntheticData = "YES"
        ds.ImageComments = comment[:10240]
        ds.DistanceSourceToDetector = f"{geometry.sid_mm:.1f}"
        ds.DistanceSourceToPatient = f"{geometry.sod_mm:.1f}"
        if portable:  # the CR IOD has no magnification factor; DX does
            ds.EstimatedRadiographicMagnificationFactor = f"{geometry.magnification:.4f}"
        folder_name = f"series-{number:03d}-{'lateral' if view.is_lateral else view.value.lower()}"
        written.append(save_sample(ds, folder / folder_name / "IM0001.dcm"))
    return written


def _lateral(world: World, seed: int, size: int, lesion: LesionSpec | None,
             background: tuple[LesionSpec, ...] = ()) -> Rendering:
    return world.render(draw_acquisition(seed, ViewPosition.LL, size), lesion, background=background)


def write_pair_studies(out: Path, sample_id: str, seed: int, view: ViewPosition, lesion: LesionSpec,
                       frontal: Rendering, world: World, background: tuple[LesionSpec, ...] = ()) -> dict[str, str]:
    """The factual and the counterfactual patient of one pair, each as a frontal + lateral study."""
    size = frontal.counterfactual.shape[0]
    lateral = _lateral(world, seed, size, lesion, background)
    severity: Severity = lesion.severity
    folders = {"factual": out / "dicom" / sample_id / "factual",
               "counterfactual": out / "dicom" / sample_id / "counterfactual"}
    comment = (f"MedCF simulated world, seed {seed}: {lesion.severity.value} {lesion.finding.value} "
               f"{lesion.side.value if lesion.side else ''} {lesion.zone.value if lesion.zone else ''}").strip()
    write_study(folders["factual"], seed,
                [(view, frontal.factual[severity], frontal.pixel_mm), (ViewPosition.LL, lateral.factual[severity], lateral.pixel_mm)],
                f"seed {seed} factual", comment)
    write_study(folders["counterfactual"], seed,
                [(view, frontal.counterfactual, frontal.pixel_mm), (ViewPosition.LL, lateral.counterfactual, lateral.pixel_mm)],
                f"seed {seed} counterfactual", f"MedCF simulated world, seed {seed}: counterfactual without the finding")
    return {key: str(path.relative_to(out)) for key, path in folders.items()}


def write_normal_study(folder: Path, world: World, seed: int, size: int, view: ViewPosition = ViewPosition.PA) -> list[Path]:
    """A study of one simulated patient without findings: the demo's input."""
    frontal = world.render(draw_acquisition(seed, view, size))
    lateral = _lateral(world, seed, size, None)
    return write_study(folder, seed, [(view, frontal.counterfactual, frontal.pixel_mm),
                                      (ViewPosition.LL, lateral.counterfactual, lateral.pixel_mm)],
                       f"seed {seed} normal", f"MedCF simulated world, seed {seed}: no finding")
