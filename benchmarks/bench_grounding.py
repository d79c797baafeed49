"""Where do a model's finding words look?  Side by side for several models, one run.

On the default model's held-out world pairs (seeds from 1 000 000, never trained on), each
factual film is noised at timesteps 200 / 500 / 800 and denoised once under its own prompt;
the figure is the share of the finding tokens' cross-attention that falls inside the
lesion's cells (cells at >= half the peak of the pair's |factual - counterfactual|), beside
the share of the grid those cells cover (what attention spread evenly would give). A model
whose words are grounded has share >> area; the shipped model's is near area. With
``--film counterfactual`` the film shown is the same patient's without the finding, under
the prompt that names it: where the words would put a finding an add edit asks for.

    python benchmarks/bench_grounding.py monai_bundle/models runs/grounded/export --pairs 140 \
        [--json results.json]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", type=Path, help="model folders (MedCF default-model format)")
    parser.add_argument("--pairs", type=int, default=140, help="held-out pairs (default 140: 20 per finding)")
    parser.add_argument("--film", choices=["factual", "counterfactual"], default="factual",
                        help="factual: the film with the finding under its prompt (default); counterfactual: the "
                             "same patient's film without it under that prompt (an add edit's question)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write every row here (a new file)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from medcf.io.atomic import write_new_text
    from medcf.models.default import DefaultGenerator
    from medcf.training.grounding import measure_grounding
    from medcf.training.world_sets import heldout_world_set

    _, world = heldout_world_set(args.pairs, 256, progress=True)
    results = {}
    for folder in args.models:
        generator = DefaultGenerator.from_folder(folder)
        results[str(folder)] = measure_grounding(generator, world, film=args.film)
    names = list(results)
    header = f"{'finding':18s} {'grid':6s} {'n':>3s} {'area':>6s} " + " ".join(f"{'share ' + str(i + 1):>8s}" for i in range(len(names)))
    print("models: " + "; ".join(f"{i + 1} = {n}" for i, n in enumerate(names)))
    print(header)
    table: dict[tuple[str, str], dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for name, rows in results.items():
        for row in rows:
            cell = table[(row["finding"], row["grid"])]
            cell[name].append(row["share_inside"])
            if name == names[0]:
                cell["area"].append(row["area_share"])
    for key in sorted(table, key=lambda k: (k[0], -int(k[1].split("x")[0]))):
        cell = table[key]
        print(f"{key[0]:18s} {key[1]:6s} {len(cell['area']):3d} {np.mean(cell['area']):6.3f} "
              + " ".join(f"{np.mean(cell[n]):8.3f}" for n in names))
    for grid in sorted({k[1] for k in table}, key=lambda g: -int(g.split("x")[0])):
        cells = [table[k] for k in table if k[1] == grid]
        print(f"{'ALL':18s} {grid:6s} {sum(len(c['area']) for c in cells):3d} "
              f"{np.mean([v for c in cells for v in c['area']]):6.3f} "
              + " ".join(f"{np.mean([v for c in cells for v in c[n]]):8.3f}" for n in names))
    if args.json:
        write_new_text(args.json, json.dumps({"pairs": args.pairs, "film": args.film, "rows": results}, indent=1))


if __name__ == "__main__":
    main()
