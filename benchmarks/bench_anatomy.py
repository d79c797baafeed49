"""Anatomy segmenter: Dice on held-out simulated radiographs, sides on PA, AP and mirrored
films, and time for a full-size (2800 x 2300) DICOM on this CPU.

Held-out patients use seeds from BENCH_SEED on (never used in training: training uses
100000.., its own check 900000..900039). Each patient gives two images (with and without
its main finding), rendered at --size and segmented at that native size.
Targets (issue 4): Dice lungs >= 0.97, heart >= 0.93; no side swapped; <= 3 s at 2800x2300.

Usage: python benchmarks/bench_anatomy.py [--patients 100] [--size 512]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from medcf.anatomy.outputs import load_segmenter, segment_input
from medcf.anatomy.segment import segment
from medcf.io.inputs import read_input
from medcf.metrics import dice
from medcf.training.anatomy_augment import mirror_sides
from medcf.training.anatomy_data import HELD_OUT_SEED
from medcf.training.segmenter import rendered_chunks
from medcf.vocab import Organ, Side

BENCH_SEED = HELD_OUT_SEED + 10_000
SAMPLE_PA = Path(__file__).resolve().parents[1] / "medcf" / "data" / "sample_study"


def side_correct(masks, truth: np.ndarray) -> bool:
    """The predicted left lung overlaps the true left lung more than the true right one."""
    left, right = truth[list(Organ).index(Organ.LUNG_LEFT)], truth[list(Organ).index(Organ.LUNG_RIGHT)]
    predicted = masks.organs[Organ.LUNG_LEFT]
    return bool((predicted & left).sum() > (predicted & right).sum())


def quality(segmenter, patients: int, size: int) -> None:
    data = rendered_chunks(BENCH_SEED, patients, size)
    rows = {"as acquired": [], "mirrored": []}
    swaps = {(view, kind): 0 for view in ("PA", "AP") for kind in rows}
    counts = {view: 0 for view in ("PA", "AP")}
    seconds = []
    for image, truth, view in zip(data.images, data.masks, data.views):
        counts[view.value] += 1
        for kind in rows:
            if kind == "mirrored":
                flipped_image, flipped_truth = mirror_sides(torch.from_numpy(image[None]), torch.from_numpy(truth))
                image_k, truth_k = flipped_image[0].numpy(), flipped_truth.numpy().astype(bool)
            else:
                image_k, truth_k = image, truth
            tick = time.perf_counter()
            masks = segment(image_k, segmenter)
            seconds.append(time.perf_counter() - tick)
            rows[kind].append([dice(masks.organs[o], truth_k[c]) for c, o in enumerate(Organ)]
                              + [dice(masks.lung(Side.BILATERAL), truth_k[0] | truth_k[1])])
            swaps[(view.value, kind)] += not side_correct(masks, truth_k)
    print(f"\nHeld-out Dice, {len(data)} images at {size}x{size} ({counts['PA']} PA, {counts['AP']} AP), "
          f"seeds {BENCH_SEED}..{BENCH_SEED + patients - 1}:")
    print("| input | lung_right | lung_left | heart | both lungs | worst lung | worst heart |")
    print("|---|---|---|---|---|---|---|")
    for kind, values in rows.items():
        v = np.array(values)
        print(f"| {kind} | {v[:, 0].mean():.4f} | {v[:, 1].mean():.4f} | {v[:, 2].mean():.4f} | {v[:, 3].mean():.4f} "
              f"| {v[:, :2].min():.4f} | {v[:, 2].min():.4f} |")
    print("Sides swapped: " + ", ".join(f"{view} {kind}: {n}/{counts[view]}" for (view, kind), n in swaps.items()))
    print(f"Segmentation time at {size}x{size}: {np.median(seconds) * 1000:.0f} ms median")


def full_size_dicom(folder: Path) -> Path:
    """The sample study's PA film resampled to a 2800 x 2300 detector, as a DICOM file."""
    import pydicom

    source = next(p for p in sorted(SAMPLE_PA.rglob("*.dcm")) if pydicom.dcmread(p, stop_before_pixels=True).get("ViewPosition") == "PA")
    ds = pydicom.dcmread(source)
    ds.decompress()
    pixels = ds.pixel_array.astype(np.float32)
    rows, cols = pixels.shape
    keep = int(round(cols * 2300 / 2800))
    cropped = pixels[:, (cols - keep) // 2:(cols - keep) // 2 + keep]
    big = torch.nn.functional.interpolate(torch.from_numpy(cropped)[None, None], size=(2800, 2300), mode="bilinear",
                                          align_corners=False)[0, 0].numpy()
    ds.Rows, ds.Columns = 2800, 2300
    ds.PixelData = np.clip(np.rint(big), 0, 2 ** int(ds.BitsStored) - 1).astype(np.uint16).tobytes()
    for keyword in ("ImagerPixelSpacing", "PixelSpacing"):
        if keyword in ds:
            setattr(ds, keyword, [float(v) * rows / 2800 for v in getattr(ds, keyword)])
    path = folder / "full-size.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def timing(segmenter) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = full_size_dicom(Path(tmp))
        segment(read_input(path).display, segmenter)  # warm-up
        tick = time.perf_counter()
        image = read_input(path)
        read = time.perf_counter() - tick
        tick = time.perf_counter()
        segment(image.display, segmenter)
        seg = time.perf_counter() - tick
        tick = time.perf_counter()
        segment_input(path, Path(tmp) / "out", segmenter)
        whole = time.perf_counter() - tick
    print(f"\n2800x2300 DICOM on this CPU ({torch.get_num_threads()} threads): read + display {read:.2f} s, "
          f"segmentation {seg:.2f} s, whole `medcf segment` (read, segment, NIfTI, SEG, PNG, JSON) {whole:.2f} s; "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=100)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--weights", type=Path, default=None)
    args = parser.parse_args()
    segmenter = load_segmenter(weights=args.weights)
    timing(segmenter)
    quality(segmenter, args.patients, args.size)


if __name__ == "__main__":
    main()
