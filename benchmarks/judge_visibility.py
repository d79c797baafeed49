"""Can the smallest finding be seen at the judged size? (issue 15, docs: monai_bundle/docs/judge.md)

Renders the mildest nodule and the mildest pneumothorax of the simulated world at 256²
(the judge's and the default model's working size), measures the lesion's mean contrast
against the lung texture around it (high-pass standard deviation in a ring outside the
lesion), on the render and after the bundle's autoencoder, and draws a crop panel:
film | film without the finding | difference ×4 | the same film through the autoencoder.

    python benchmarks/judge_visibility.py --out docs/images/judge-smallest-findings.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

SEED = 3_300_000  # apart from every training, held-out and benchmark range


def main() -> None:
    from scipy.ndimage import binary_dilation, gaussian_filter

    from medcf.bundle import bundle_root
    from medcf.models.loaders import load_generator
    from medcf.viz import Tile, difference, render_grid, save_png
    from medcf.vocab import Finding, Severity
    from medcf.world.ct import load_chest_ct
    from medcf.world.pairs import PhantomRequest, plan_sample
    from medcf.world.render import World, draw_acquisition

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=8, help="patients per finding (default 8)")
    parser.add_argument("--out", type=Path, help="crop panel PNG (new file)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    generator = load_generator(bundle_root())
    world = World(load_chest_ct())

    def autoencoded(film: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return generator.decode_images(generator.encode_images(film))[0]

    tiles = []
    for finding in (Finding.NODULE, Finding.PNEUMOTHORAX):
        request = PhantomRequest(n=args.n, size=256, seed=SEED, findings=(finding,), severity=Severity.MILD)
        ratios, coded_ratios, areas = [], [], []
        for index in range(args.n):
            seed, view, lesion = plan_sample(request, index)
            rendering = world.render(draw_acquisition(seed, view, 256), lesion)
            film, without = rendering.factual[lesion.severity], rendering.counterfactual
            changed = np.abs(film - without) > 0.005  # where the finding changes the film
            if not changed.any():
                continue
            ring = binary_dilation(changed, iterations=6) & ~binary_dilation(changed, iterations=2)
            texture = float((without - gaussian_filter(without, 3))[ring].std())
            coded, coded_without = autoencoded(film), autoencoded(without)
            ratios.append(float(np.abs(film - without)[changed].mean()) / texture)
            coded_ratios.append(float(np.abs(coded - coded_without)[changed].mean()) / texture)
            areas.append(int(changed.sum()))
            if index == 0:
                rows, cols = np.nonzero(changed)
                r, c = int(rows.mean()), int(cols.mean())
                crop = (slice(max(r - 40, 0), r + 40), slice(max(c - 40, 0), c + 40))

                def zoom(image: np.ndarray) -> np.ndarray:  # pixels shown as blocks: no smoothing added
                    return np.kron(image, np.ones((3, 3), np.float32))

                tiles += [Tile(zoom(film[crop]), f"mild {finding.value}\n(80 px crop of the 256x256 film)"),
                          Tile(zoom(without[crop]), "without it"),
                          Tile(zoom(difference(film[crop], without[crop], 4.0)), "difference x4"),
                          Tile(zoom(coded[crop]), "through the autoencoder")]
        print(f"mild {finding.value}: {np.mean(areas):.0f} px changed, contrast / texture {np.mean(ratios):.2f} "
              f"(after the autoencoder {np.mean(coded_ratios):.2f}), n = {len(ratios)}")
    if args.out:
        save_png(render_grid(tiles, "The mildest findings at the judged size (256x256), simulated", tile_size=200,
                             columns=4), args.out)
        print(args.out)


if __name__ == "__main__":
    main()
