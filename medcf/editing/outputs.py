"""What ``medcf edit`` writes: the counterfactual in the input's format (a new synthetic
DICOM series, a 16-bit PNG or a NIfTI in the input's space), the panel picture
(input | counterfactual | difference | region), the masks, and the provenance JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import medcf
from medcf.anatomy.masks import AnatomyMasks
from medcf.editing.film import Counterfactual
from medcf.editing.record import EditRecord
from medcf.io.atomic import new_output_dir, write_new_text
from medcf.io.images import write_png16
from medcf.io.inputs import InputFormat, InputImage, radiograph_affine, write_nifti_2d
from medcf.io.writer import write_synthetic
from medcf.viz import Tile, difference, overlay, render_grid, save_png
from medcf.vocab import Organ

MODEL_NOTICE = "default model learned from simulated radiographs only"


@dataclass
class EditOutputs:
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    check: str | None = None  # the model's own verdict, one line (TargetCheck.remark)
    #: lines the user must see beside the files: how auto chose on a model that lacks its pieces, and
    #: that the input lies outside the model's domain (written with --allow-out-of-domain)
    notes: list[str] = field(default_factory=list)


def panel(counterfactual: Counterfactual, masks: AnatomyMasks, title: str, warning: str | None = None):
    """The panel; ``warning`` (the input lies outside the model's domain) heads its note."""
    cf = counterfactual
    roi = overlay(cf.source, {organ.value: masks.organs[organ] for organ in Organ})
    edge = cf.region.native_region & ~np.roll(cf.region.native_region, 3, axis=0)
    edge |= cf.region.native_region & ~np.roll(cf.region.native_region, 3, axis=1)
    roi[cf.region.native_region] = 0.75 * roi[cf.region.native_region] + 0.25 * np.array([1.0, 0.85, 0.0])
    roi[edge] = (1.0, 0.85, 0.0)
    region_title = "edit region (yellow), lungs, heart"
    if cf.outline is not None:  # a film method's lesion (insert): its outline in red
        ring = cf.outline & ~(np.roll(cf.outline, 2, axis=0) & np.roll(cf.outline, -2, axis=0)
                              & np.roll(cf.outline, 2, axis=1) & np.roll(cf.outline, -2, axis=1))
        roi[ring] = (1.0, 0.1, 0.1)
        region_title = "lesion outline (red), edit region (yellow),\nlungs, heart"
    change = float(np.abs(cf.difference).max())
    gain = float(np.clip(0.45 / change, 1.0, 50.0)) if change > 0 else 1.0  # the largest change near full scale
    denoiser = f"\n{cf.denoiser.name} denoiser" if cf.denoiser is not None else ""
    tiles = [Tile(cf.source, "input"),
             Tile(cf.image, f"counterfactual ({cf.spec.method.value}):\n{cf.spec.describe()}{denoiser}"),
             Tile(difference(cf.image, cf.source, gain=gain), f"difference x{gain:.0f}\n(bright = denser after)"),
             Tile(roi, region_title)]
    model_check = cf.check.remark() if cf.check is not None else None
    if model_check is None and cf.settings.get("model_check"):  # a film method says why the model's check did not run
        model_check = f"model check: {cf.settings['model_check']}"
    note = "\n".join(line for line in (warning, model_check) if line) or None
    return render_grid(tiles, title, columns=4, footer=f"{medcf.RESEARCH_ONLY_NOTICE} ({MODEL_NOTICE})", note=note)


def write_edit(image: InputImage, masks: AnatomyMasks, counterfactual: Counterfactual, record: EditRecord,
               out_dir: str | Path, sop_class: str = "sc") -> EditOutputs:
    """Write every output of one edit into ``out_dir`` (new or empty); ``record``
    (:class:`EditRecord`) becomes ``edit.json`` and, for a DICOM input, the synthetic
    series' provenance."""
    out = new_output_dir(out_dir)
    result = EditOutputs(out, check=counterfactual.check.remark() if counterfactual.check is not None else None)
    warning = record.domain.describe() if record.domain is not None and record.domain.outside else None
    result.notes = [line for line in (counterfactual.plan.note if counterfactual.plan is not None else None,
                                      warning) if line]
    provenance = record.provenance()
    affine = image.affine if image.affine is not None else radiograph_affine(image.spacing_mm)
    if image.format is InputFormat.DICOM:
        written = write_synthetic(image.radiograph, counterfactual.image, provenance, out / "dicom", sop_class=sop_class,
                                  series_description=f"SYNTHETIC MedCF {counterfactual.spec.describe()}"[:64])
        result.files["dicom"] = written.dicom_path
        result.files["dicom_provenance"] = written.provenance_path
    elif image.format is InputFormat.PNG:
        result.files["image"] = write_png16(out / "counterfactual.png", counterfactual.image)
    else:
        result.files["image"] = write_nifti_2d(out / "counterfactual.nii.gz", counterfactual.image, affine,
                                               "MedCF SYNTHETIC counterfactual, research only")
    (out / "masks").mkdir(exist_ok=True)
    result.files["anatomy"] = write_nifti_2d(out / "masks" / "anatomy.nii.gz", masks.label_map(), affine,
                                             "MedCF anatomy of the input")
    result.files["region"] = write_nifti_2d(out / "masks" / "edit_region.nii.gz",
                                            counterfactual.region.native_region.astype(np.uint8), affine,
                                            "MedCF edit region")
    result.files["panel"] = save_png(panel(counterfactual, masks, f"MedCF edit: {Path(image.path).name}", warning),
                                     out / "panel.png")
    data = record.to_dict(result.files, out, provenance)
    result.files["provenance"] = write_new_text(out / "edit.json", json.dumps(data, indent=2, default=str) + "\n")
    return result
