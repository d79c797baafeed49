"""Simulated world throughput: rendered pairs per second after the CT is loaded.

A pair = counterfactual + factual image + projected anatomy and lesion masks of
one sample (all seven findings cycled, PA/AP drawn as in `medcf phantom`).
Reported separately: rendering only (what training loops call) and rendering
plus writing the PNGs and the record (what `medcf phantom` does). Target:
>= 2 pairs/s at 256x256 on the 2-core CPU; the 512x512 figure is stated.

Usage: python benchmarks/bench_world.py [--n 28] [--ct PATH]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import torch

from medcf.world.ct import load_chest_ct
from medcf.world.pairs import PhantomRequest, _write_sample, plan_sample
from medcf.world.render import World, draw_acquisition


def measure(world: World, size: int, n: int, write_to: Path | None) -> float:
    request = PhantomRequest(n=n, size=size)
    for index in range(n):  # warm the per-CT caches (slab stacks, distance maps of lungs and lobes) first
        seed, view, lesion = plan_sample(request, index)
        world.render(draw_acquisition(seed, view, 64), lesion)
    start = time.perf_counter()
    for index in range(n):
        seed, view, lesion = plan_sample(request, index)
        rendering = world.render(draw_acquisition(seed, view, size), lesion)
        if write_to is not None:
            _write_sample(write_to, f"{size}-{index:06d}", seed, lesion, rendering, view, ladder=False)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=28, help="pairs per measurement (default 28 = 4 per finding)")
    parser.add_argument("--ct", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    start = time.perf_counter()
    ct = load_chest_ct(args.ct)
    world = World(ct)
    for axis in (0, 1):
        world.stacks(axis)
    load_s = time.perf_counter() - start
    print(f"CT {ct.shape} loaded and cut into slabs in {load_s:.1f} s; torch threads {torch.get_num_threads()}")
    print(f"{'size':>6} {'render only pairs/s':>20} {'render+write pairs/s':>21}")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        (out / "images").mkdir()
        (out / "masks").mkdir()
        for size in (256, 512):
            render_only = measure(world, size, args.n, None)
            with_write = measure(world, size, args.n, out)
            print(f"{size:>6} {render_only:>20.2f} {with_write:>21.2f}")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak_mb:.0f} MB; target >= 2 pairs/s at 256x256")


if __name__ == "__main__":
    main()
