"""Figures for docs/world.md: projected cardiothoracic ratio per severity (10 seeds,
PA and AP) and pair locality per finding (5 seeds, 256x256 PA, moderate).

Usage: python benchmarks/world_figures.py [--ct PATH]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.ndimage import distance_transform_edt

from medcf.vocab import Finding, Severity, ViewPosition
from medcf.world.ct import load_chest_ct
from medcf.world.pathology import FINDING_SIDES, FINDING_ZONES, LesionSpec
from medcf.world.render import World, cardiothoracic_ratio, draw_acquisition


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ct", type=Path, default=None)
    world = World(load_chest_ct(parser.parse_args().ct))

    ratios: dict[str, list[float]] = {"none": [], **{s.value: [] for s in Severity}}
    ap = []
    for seed in range(10):
        spec = LesionSpec(Finding.CARDIOMEGALY, None, None, Severity.SEVERE, seed=seed)
        rendering = world.render(draw_acquisition(seed, ViewPosition.PA, 256), spec, tuple(Severity))
        ratios["none"].append(cardiothoracic_ratio(rendering.anatomy))
        for severity in Severity:
            ratios[severity.value].append(cardiothoracic_ratio(rendering.anatomy_factual[severity]))
        ap.append(cardiothoracic_ratio(world.render(draw_acquisition(seed, ViewPosition.AP, 256)).anatomy))
    print("cardiothoracic ratio, PA (mean, min, max):")
    for name, values in ratios.items():
        print(f"  {name:9s} {np.mean(values):.3f} {np.min(values):.3f} {np.max(values):.3f}")
    print(f"  normal AP mean {np.mean(ap):.3f}")

    print("| finding | mean |d| inside lesion | pixels |d|>0.01 beyond 40 mm | max |d| beyond 90 mm |")
    for finding in Finding:
        sides, zones = FINDING_SIDES[finding], FINDING_ZONES[finding]
        inside, far40, far90 = [], [], []
        for seed in range(5):
            spec = LesionSpec(finding, sides[seed % len(sides)] if sides else None,
                              zones[seed % len(zones)] if zones else None, Severity.MODERATE, seed=seed)
            rendering = world.render(draw_acquisition(seed, ViewPosition.PA, 256), spec)
            mask = rendering.lesion_masks[Severity.MODERATE]
            distance = distance_transform_edt(~mask) * rendering.pixel_mm
            difference = np.abs(rendering.factual[Severity.MODERATE] - rendering.counterfactual)
            inside.append(difference[mask].mean())
            far40.append((difference[distance > 40] > 0.01).mean())
            far90.append(difference[distance > 90].max() if (distance > 90).any() else 0.0)
        print(f"| {finding.value} | {np.mean(inside):.3f} | {np.mean(far40) * 100:.1f} % | {np.max(far90):.4f} |")


if __name__ == "__main__":
    main()
