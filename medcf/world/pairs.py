"""Datasets of factual/counterfactual pairs from the simulated world (``medcf phantom``).

Layout of an output folder::

    pairs.jsonl                 one JSON record per pair (paths relative to the folder)
    images/<id>_factual.png     16-bit PNG, display values (bright = dense)
    images/<id>_counterfactual.png
    images/<id>_<severity>.png  the severity ladder (with --ladder)
    masks/<id>_lesion.png       8-bit label map, legend in the record
    masks/<id>_anatomy.png      8-bit bit-coded anatomy of the factual image
    masks/<id>_anatomy_counterfactual.png
    dicom/<id>/{factual,counterfactual}/series-*/IM0001.dcm   (with --dicom)
    panel.png                   factual | counterfactual | difference | masks for the first 8 pairs

Sample ``i`` of a run with ``--seed K`` uses seed ``K + i``: any single record
can be re-rendered from its seed alone.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

import medcf
from medcf.errors import InputError
from medcf.io.atomic import new_output_dir, write_new_text
from medcf.io.images import write_label_png, write_png16
from medcf.text.prompts import prompt_for
from medcf.viz import Tile, difference, overlay, render_grid, save_png
from medcf.vocab import Finding, Lobe, Severity, Side, ViewPosition, Zone
from medcf.world.ct import ChestCT
from medcf.world.dicom import write_pair_studies
from medcf.world.pathology import FINDING_SIDES, FINDING_ZONES, LOBAR_FINDINGS, LesionSpec, lesions_overlap
from medcf.world.render import ANATOMY_BITS, LESION_LEGEND, Rendering, World, anatomy_channel, draw_acquisition

SIMULATION_NOTICE = ("Simulated radiograph rendered from one chest CT with a simulated finding; "
                     "not a patient. For research only, never for diagnosis.")
DEFAULT_VIEWS = (ViewPosition.PA, ViewPosition.AP)
VIEW_WEIGHTS = {ViewPosition.PA: 0.7, ViewPosition.AP: 0.3}
MAX_BACKGROUND = 2  # co-occurring findings per patient at most
LOBAR_SHARE = 1 / 3


@dataclass(frozen=True)
class PhantomRequest:
    """What ``medcf phantom`` was asked for. Unset side/zone/severity are drawn per sample."""

    n: int
    size: int = 256
    seed: int = 0
    findings: tuple[Finding, ...] = tuple(Finding)
    views: tuple[ViewPosition, ...] = DEFAULT_VIEWS
    side: Side | None = None
    zone: Zone | None = None
    severity: Severity | None = None
    count: int = 1
    lobe: Lobe | None = None
    comorbidity: float = 0.0  # chance of each of up to two other findings that stay in the counterfactual
    ladder: bool = False
    dicom: bool = False

    def __post_init__(self) -> None:
        if self.n < 1:
            raise InputError("--n must be at least 1")
        if not 64 <= self.size <= 4096:
            raise InputError(f"--size {self.size} is outside 64..4096")
        if not self.findings:
            raise InputError("--findings is empty")
        for view in self.views:
            if not view.is_frontal:
                raise InputError(f"view {view.value}: pairs are frontal (PA or AP); --dicom adds the lateral")
        # With one finding a side or zone it cannot take is an error; with several, each
        # finding takes the side/zone where it applies and draws its own elsewhere.
        for option, value, table in (("--side", self.side, FINDING_SIDES), ("--zone", self.zone, FINDING_ZONES)):
            if value is None:
                continue
            fits = [f for f in self.findings if table[f] is not None and value in table[f]]
            if not fits:
                allowed = "; ".join(f"{f.value}: {', '.join(v.value for v in table[f]) if table[f] else 'none'}"
                                    for f in self.findings)
                raise InputError(f"{option} {value.value} applies to none of the requested findings ({allowed})")
        if self.lobe is not None:
            if not set(self.findings) <= set(LOBAR_FINDINGS):
                raise InputError(f"--lobe applies to {', '.join(f.value for f in LOBAR_FINDINGS)} only")
            if self.zone is not None or (self.side is not None and self.side is not self.lobe.side):
                raise InputError(f"--lobe {self.lobe.value} takes no --zone and lies in the {self.lobe.side.value} lung")
        if not 0.0 <= self.comorbidity <= 1.0:
            raise InputError(f"--comorbidity {self.comorbidity} is not a probability (0..1)")
        if self.count > 1 and set(self.findings) != {Finding.NODULE}:
            raise InputError("--count applies to nodules only: use it with --findings nodule")


def draw_lesion(rng: np.random.Generator, finding: Finding, seed: int, side: Side | None = None,
                zone: Zone | None = None, severity: Severity | None = None, lobe: Lobe | None = None,
                count: int = 1) -> LesionSpec:
    """One finding with the attributes not given drawn from ``rng`` (where they apply)."""
    sides, zones = FINDING_SIDES[finding], FINDING_ZONES[finding]
    drawn_side = None if sides is None else (side if side in sides else sides[int(rng.integers(len(sides)))])
    drawn_zone = None if zones is None else (zone if zone in zones else zones[int(rng.integers(len(zones)))])
    severity = severity or list(Severity)[int(rng.integers(3))]
    chosen_lobe = None
    if finding in LOBAR_FINDINGS:
        # A third of consolidations are lobar unless a zone was asked for.
        lobar = rng.random() < LOBAR_SHARE
        if lobe is not None:
            chosen_lobe = lobe
        elif lobar and zone is None and side is not Side.BILATERAL:
            lobes = [candidate for candidate in Lobe if side in (None, candidate.side)]
            chosen_lobe = lobes[int(rng.integers(len(lobes)))]
        if chosen_lobe is not None:
            drawn_side, drawn_zone = chosen_lobe.side, None
    count = count if finding is Finding.NODULE else 1
    return LesionSpec(finding, drawn_side, drawn_zone, severity, seed=seed, count=count, lobe=chosen_lobe)


def plan_sample(request: PhantomRequest, index: int) -> tuple[int, ViewPosition, LesionSpec]:
    """Seed, view and finding of sample ``index``: findings cycle so classes stay balanced."""
    seed = request.seed + index
    rng = np.random.default_rng([seed, 0])
    finding = request.findings[index % len(request.findings)]
    weights = np.array([VIEW_WEIGHTS.get(v, 1.0) for v in request.views])
    view = request.views[int(rng.choice(len(request.views), p=weights / weights.sum()))]
    lesion = draw_lesion(rng, finding, seed, request.side, request.zone, request.severity, request.lobe, request.count)
    return seed, view, lesion


def plan_background(request: PhantomRequest, seed: int, lesion: LesionSpec, ct: ChestCT) -> tuple[LesionSpec, ...]:
    """Other findings this patient has besides ``lesion`` (0-2, each with probability
    ``request.comorbidity``): different kinds, placed where they do not touch ``lesion``
    or each other. They stay in the counterfactual."""
    if request.comorbidity <= 0:
        return ()
    rng = np.random.default_rng([seed, 9])
    chosen: list[LesionSpec] = []
    for slot in range(int(rng.binomial(MAX_BACKGROUND, request.comorbidity))):
        kinds = [f for f in Finding if f is not lesion.finding and f not in {c.finding for c in chosen}]
        for _ in range(4):  # a few placements; give the slot up if none fits
            candidate = draw_lesion(rng, kinds[int(rng.integers(len(kinds)))], seed * 10 + slot + 1)
            if not any(lesions_overlap(ct, candidate, other) for other in (lesion, *chosen)):
                chosen.append(candidate)
                break
    return tuple(chosen)


@dataclass
class PhantomResult:
    out_dir: Path
    records: list[dict] = field(default_factory=list)
    panel: Path | None = None


def _prepare_out_dir(out_dir: Path) -> None:
    new_output_dir(out_dir)
    (out_dir / "images").mkdir()
    (out_dir / "masks").mkdir(exist_ok=True)


def write_phantom(out_dir: str | Path, request: PhantomRequest, ct: ChestCT, progress: bool = True) -> PhantomResult:
    """Render ``request.n`` pairs into ``out_dir`` (new or empty) and return their records."""
    from tqdm import tqdm

    out = Path(out_dir)
    _prepare_out_dir(out)
    world = World(ct)
    result = PhantomResult(out)
    renderings: list[tuple[dict, Rendering, Severity]] = []
    for index in tqdm(range(request.n), desc="rendering pairs", unit="pair", disable=not progress):
        seed, view, lesion = plan_sample(request, index)
        acquisition = draw_acquisition(seed, view, request.size)
        severities = tuple(Severity) if request.ladder else (lesion.severity,)
        background = plan_background(request, seed, lesion, ct)
        rendering = world.render(acquisition, lesion, severities, background=background)
        record = _write_sample(out, f"{index:06d}", seed, lesion, rendering, acquisition.view, request.ladder,
                               background)
        if request.dicom:
            record["dicom"] = write_pair_studies(out, record["id"], seed, acquisition.view, lesion, rendering, world,
                                                 background)
        result.records.append(record)
        if len(renderings) < 8:
            renderings.append((record, rendering, lesion.severity))
    lines = "".join(json.dumps(record, sort_keys=False) + "\n" for record in result.records)
    write_new_text(out / "pairs.jsonl", lines)
    result.panel = write_panel(out / "panel.png", renderings)
    return result


def _finding_record(spec: LesionSpec) -> dict:
    return {"finding": spec.finding.value, "side": spec.side.value if spec.side else None,
            "zone": spec.zone.value if spec.zone else None, "lobe": spec.lobe.value if spec.lobe else None,
            "severity": spec.severity.value, "count": spec.count}


def _write_sample(out: Path, sample_id: str, seed: int, lesion: LesionSpec, rendering: Rendering,
                  view: ViewPosition, ladder: bool, background: tuple[LesionSpec, ...] = ()) -> dict:
    severity = lesion.severity
    paths = {
        "factual": f"images/{sample_id}_factual.png",
        "counterfactual": f"images/{sample_id}_counterfactual.png",
        "lesion_mask": f"masks/{sample_id}_lesion.png",
        "anatomy_mask": f"masks/{sample_id}_anatomy.png",
        "anatomy_mask_counterfactual": f"masks/{sample_id}_anatomy_counterfactual.png",
    }
    write_png16(out / paths["factual"], rendering.factual[severity])
    write_png16(out / paths["counterfactual"], rendering.counterfactual)
    write_label_png(out / paths["lesion_mask"], rendering.lesion_masks[severity].astype(np.uint8))
    write_label_png(out / paths["anatomy_mask"], rendering.anatomy_factual[severity])
    write_label_png(out / paths["anatomy_mask_counterfactual"], rendering.anatomy)
    record = {
        "id": sample_id, "seed": seed, **_finding_record(replace(lesion, severity=severity)), "view": view.value,
        **{key: paths[key] for key in ("factual", "counterfactual", "lesion_mask", "anatomy_mask")},
        "anatomy_mask_counterfactual": paths["anatomy_mask_counterfactual"],
        "prompt_factual": prompt_for(view, [replace(lesion, severity=severity), *background]),
        "prompt_counterfactual": prompt_for(view, background),
        "background": [_finding_record(other) for other in background],
        "lesion_legend": LESION_LEGEND,
        "anatomy_legend": {"encoding": "bitmask", **ANATOMY_BITS},
        "pixel_spacing_mm": round(rendering.isocentre_pixel_mm, 5),
        "imager_pixel_spacing_mm": round(rendering.pixel_mm, 5),
        "size": int(rendering.counterfactual.shape[0]),
        "generator": f"medcf {medcf.__version__} simulated world",
        "notice": SIMULATION_NOTICE,
    }
    if ladder:
        record["ladder"] = {}
        for step, image in rendering.factual.items():
            path = f"images/{sample_id}_{step.value}.png"
            write_png16(out / path, image)
            record["ladder"][step.value] = path
    return record


def panel_tiles(record: dict, rendering: Rendering, severity: Severity):
    """factual | counterfactual | difference | masks of one pair, as captioned tiles."""
    factual, counterfactual = rendering.factual[severity], rendering.counterfactual
    bits = rendering.anatomy_factual[severity]
    masks = {name: anatomy_channel(bits, name) for name in ("lung_right", "lung_left", "heart")}
    masks["lesion"] = rendering.lesion_masks[severity]
    what = record["prompt_factual"].split(". ", 1)[1]
    return [
        Tile(factual, f"factual #{record['id']} seed {record['seed']}\n{what}"),
        Tile(counterfactual, f"counterfactual\n{record['prompt_counterfactual'].split('. ', 1)[1]}"),
        Tile(difference(factual, counterfactual), "difference (factual - counterfactual)\nbrighter = denser"),
        Tile(overlay(factual, masks), "masks: lungs R blue, L green,\nheart red, lesion yellow outline"),
    ]


def write_panel(path: Path, renderings: Sequence[tuple[dict, Rendering, Severity]]) -> Path:
    tiles = [tile for record, rendering, severity in renderings for tile in panel_tiles(record, rendering, severity)]
    title = "MedCF simulated world: factual | counterfactual | difference | masks (simulated, not patients)"
    return save_png(render_grid(tiles, title, tile_size=300, columns=4), path)
