"""Regenerate the simulated-world pictures in docs/images (reproducible by seed).

    python scripts/make_world_docs.py [--ct PATH]

Writes world-pairs.png (one pair per finding), world-ladder.png (severity
ladders) and world-views.png (one patient as PA, AP and lateral, with masks).
Existing pictures are not replaced: delete them first.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medcf.viz import Tile, overlay, render_grid, save_png
from medcf.vocab import Finding, Severity, Side, ViewPosition, Zone
from medcf.world.ct import load_chest_ct
from medcf.world.pairs import panel_tiles
from medcf.world.pathology import FINDING_SIDES, FINDING_ZONES, LesionSpec
from medcf.world.render import World, anatomy_channel, draw_acquisition
from medcf.text.prompts import prompt

OUT = Path(__file__).resolve().parent.parent / "docs" / "images"
NOTE = "simulated from one chest CT, not patients"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ct", type=Path, default=None)
    args = parser.parse_args()
    world = World(load_chest_ct(args.ct))
    size = 384

    tiles = []
    for index, finding in enumerate(Finding):
        sides, zones = FINDING_SIDES[finding], FINDING_ZONES[finding]
        spec = LesionSpec(finding, sides[0] if sides else None, zones[0] if zones else None, Severity.MODERATE,
                          seed=100 + index)
        view = ViewPosition.AP if finding is Finding.EDEMA else ViewPosition.PA
        rendering = world.render(draw_acquisition(100 + index, view, size), spec)
        record = {"id": f"{index:06d}", "seed": 100 + index,
                  "prompt_factual": prompt(view, finding, spec.side, spec.zone, spec.severity),
                  "prompt_counterfactual": prompt(view)}
        tiles += panel_tiles(record, rendering, Severity.MODERATE)
    save_png(render_grid(tiles, f"MedCF world: factual | counterfactual | difference | masks ({NOTE})",
                         tile_size=260, columns=4), OUT / "world-pairs.png")

    tiles = []
    ladders = [(Finding.PLEURAL_EFFUSION, Side.LEFT, Zone.LOWER), (Finding.PNEUMOTHORAX, Side.RIGHT, Zone.UPPER),
               (Finding.CARDIOMEGALY, None, None), (Finding.NODULE, Side.RIGHT, Zone.UPPER)]
    for index, (finding, side, zone) in enumerate(ladders):
        spec = LesionSpec(finding, side, zone, Severity.SEVERE, seed=200 + index)
        rendering = world.render(draw_acquisition(200 + index, ViewPosition.PA, size), spec, tuple(Severity))
        tiles.append(Tile(rendering.counterfactual, f"{finding.value}: none\nseed {200 + index}"))
        tiles += [Tile(rendering.factual[s], f"{s.value}") for s in Severity]
    save_png(render_grid(tiles, f"MedCF world: severity ladders, same lesion growing ({NOTE})",
                         tile_size=260, columns=4), OUT / "world-ladder.png")

    tiles = []
    for view in (ViewPosition.PA, ViewPosition.AP, ViewPosition.LL):
        rendering = world.render(draw_acquisition(300, view, size))
        masks = {name: anatomy_channel(rendering.anatomy, name)
                 for name in ("lung_right", "lung_left", "heart", "mediastinum")}
        tiles.append(Tile(rendering.counterfactual, f"{view.value}, SID {'100' if view is ViewPosition.AP else '180'} cm"))
        tiles.append(Tile(overlay(rendering.counterfactual, masks), f"{view.value} projected masks"))
    save_png(render_grid(tiles, f"MedCF world: one patient, three views ({NOTE})", tile_size=260, columns=6),
             OUT / "world-views.png")
    for name in ("world-pairs.png", "world-ladder.png", "world-views.png"):
        print(OUT / name)


if __name__ == "__main__":
    main()
