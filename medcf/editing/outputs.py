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
from medcf.editing.edit import Counterfactual
from medcf.io.atomic import new_output_dir, sha256_of_file, write_new_text
from medcf.io.images import write_png16
from medcf.io.inputs import InputFormat, InputImage, radiograph_affine, write_nifti_2d
from medcf.io.provenance import Provenance
from medcf.models.package import Role, package_of
from medcf.vocab import Organ

MODEL_NOTICE = "default model learned from simulated radiographs only"


@dataclass
class ModelInfo:
    """Which model and vectors made an edit (goes into the provenance)."""

    name: str
    source: str
    bundle_version: str | None = None
    weights_sha256: str | None = None
    vectors: str | None = None
    vectors_sha256: str | None = None
    #: device and dtype of the denoiser, dtype of the autoencoder (``Generator.placement``)
    placement: dict | None = None

    @classmethod
    def of(cls, generator, vectors_path: Path | None) -> "ModelInfo":
        folder = Path(generator.source)
        weights = package_of(generator).weights_file(Role.DENOISER)  # a MedCF default model's; None otherwise
        version = None
        for metadata in (folder.parent / "configs" / "metadata.json", folder / "configs" / "metadata.json"):
            if metadata.is_file():
                version = json.loads(metadata.read_text(encoding="utf-8")).get("version")
                break
        return cls(generator.format, str(folder), version,
                   (weights.sha256 or sha256_of_file(weights.path)) if weights and weights.path.is_file() else None,
                   str(vectors_path) if vectors_path else None,
                   sha256_of_file(vectors_path) if vectors_path and vectors_path.is_file() else None,
                   generator.placement())


@dataclass
class EditOutputs:
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    check: str | None = None  # the model's own verdict, one line (TargetCheck.remark)


def panel(counterfactual: Counterfactual, masks: AnatomyMasks, title: str):
    from medcf.viz import Tile, difference, overlay, render_grid

    cf = counterfactual
    roi = overlay(cf.source, {organ.value: masks.organs[organ] for organ in Organ})
    edge = cf.region.native_region & ~np.roll(cf.region.native_region, 3, axis=0)
    edge |= cf.region.native_region & ~np.roll(cf.region.native_region, 3, axis=1)
    roi[cf.region.native_region] = 0.75 * roi[cf.region.native_region] + 0.25 * np.array([1.0, 0.85, 0.0])
    roi[edge] = (1.0, 0.85, 0.0)
    change = float(np.abs(cf.difference).max())
    gain = float(np.clip(0.45 / change, 1.0, 50.0)) if change > 0 else 1.0  # the largest change near full scale
    denoiser = f"\n{cf.settings['denoiser']['name']} denoiser" if "denoiser" in cf.settings else ""
    tiles = [Tile(cf.source, "input"),
             Tile(cf.image, f"counterfactual ({cf.spec.method.value}):\n{cf.spec.describe()}{denoiser}"),
             Tile(difference(cf.image, cf.source, gain=gain), f"difference x{gain:.0f}\n(bright = denser after)"),
             Tile(roi, "edit region (yellow), lungs, heart")]
    note = cf.check.remark() if cf.check is not None else None
    return render_grid(tiles, title, columns=4, footer=f"{medcf.RESEARCH_ONLY_NOTICE} ({MODEL_NOTICE})", note=note)


def provenance_for(counterfactual: Counterfactual, model: ModelInfo, command: str | None = None,
                   extra: dict | None = None) -> Provenance:
    spec = counterfactual.spec
    return Provenance(
        method=spec.method.value, finding=spec.finding.value, action=spec.action.value,
        side=spec.side.value if spec.side else None, zone=spec.zone.value if spec.zone else None,
        severity=spec.severity.value, strength=spec.strength, seed=spec.seed, model_name=model.name,
        bundle_version=model.bundle_version, weights_sha256=model.weights_sha256, command=command,
        extra={"spec": spec.to_dict(), "prompts": counterfactual.prompts, "settings": counterfactual.settings,
               "model": vars(model), "placement": model.placement, "seconds": round(counterfactual.seconds, 3), **(extra or {})},
    )


def write_edit(image: InputImage, masks: AnatomyMasks, counterfactual: Counterfactual, model: ModelInfo,
               out_dir: str | Path, command: str | None = None, extra: dict | None = None,
               sop_class: str = "sc") -> EditOutputs:
    """Write every output of one edit into ``out_dir`` (new or empty)."""
    from medcf.io.writer import write_synthetic
    from medcf.viz import save_png

    out = new_output_dir(out_dir)
    result = EditOutputs(out, check=counterfactual.check.remark() if counterfactual.check is not None else None)
    provenance = provenance_for(counterfactual, model, command, extra)
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
    result.files["panel"] = save_png(panel(counterfactual, masks, f"MedCF edit: {Path(image.path).name}"),
                                     out / "panel.png")
    record = provenance.to_dict()
    record["files"] = {k: str(v.relative_to(out)) for k, v in result.files.items()}
    record["input"] = {"path": str(image.path), "format": image.format.value, "shape": list(image.shape)}
    result.files["provenance"] = write_new_text(out / "edit.json", json.dumps(record, indent=2, default=str) + "\n")
    return result
