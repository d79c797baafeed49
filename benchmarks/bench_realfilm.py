"""The anatomy segmenter before and after training toward real films (issue 17, item 4):
held-out render Dice, the refusal rate on renders, and the same on "real-like" films.

Sets (none used in training, whose seeds are 100 000–100 799):
- check: the 40 check patients of training (seeds 900 000–900 039, 256 px, 80 images);
- plausibility: the 80 patients of ``bench_plausibility.py`` (seeds 1 300 000–1 300 079,
  512 px, 160 images), given as an AnatomySet .npz (``--renders``);
- real-like: the check images through every image-only step of ``medcf.world.film`` (a
  vendor's processing chain, grid lines, collimation; each image gets all of them, drawn
  with ``--look-seed``, a seed no training step uses). The labels follow the collimation.
  The lung warp is left out: its real outlines are what training warped toward.
A film is refused as ``medcf segment`` refuses it: an organ missing, confidence below the
floor (0.93), or a failed plausibility rule. For each set, the plausibility check is also
run with the world's exact masks (``exact_masks_refused``): what the images allow.

Usage: python benchmarks/bench_realfilm.py --weights W.safetensors [--renders FILE.npz] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from medcf.anatomy.masks import MIN_CONFIDENCE, AnatomyMasks, SegmentationError
from medcf.anatomy.plausibility import check_anatomy
from medcf.anatomy.segment import default_segmenter, segment
from medcf.io.inputs import read_input
from medcf.metrics import dice
from medcf.training.anatomy_data import AnatomySet
from medcf.training.segmenter import rendered_chunks
from medcf.vocab import Organ
from medcf.world.film import FilmLook, RandCollimationd, RandFilmProcessingd, RandGridLinesd

SAMPLE_STUDY = Path(__file__).resolve().parents[1] / "medcf" / "data" / "sample_study"
EVERY_STEP = FilmLook(multiscale_prob=1.0, unsharp_prob=1.0, compression_prob=1.0, voi_prob=1.0)


def real_like(data: AnatomySet, seed: int) -> AnatomySet:
    """``data`` through processing, grid lines and collimation, each on every image."""
    steps = [RandGridLinesd(EVERY_STEP, prob=1.0), RandCollimationd(EVERY_STEP, prob=1.0),
             RandFilmProcessingd(EVERY_STEP, prob=1.0)]
    for index, step in enumerate(steps):
        step.set_random_state(seed=seed + index)
    images, masks = [], []
    for image, mask in zip(data.images, data.masks):
        sample = {"image": torch.as_tensor(image[None]), "label": torch.as_tensor(mask.astype(np.float32))}
        for step in steps:
            sample = step(sample)
        images.append(sample["image"][0].numpy())
        masks.append(sample["label"].numpy() > 0.5)
    return AnatomySet(np.stack(images), np.stack(masks), data.views, data.seeds, data.pixel_mm)


def exact_refusals(data: AnatomySet) -> tuple[int, dict[str, int]]:
    """How many images the plausibility check refuses with the world's exact masks (what
    the images themselves allow, whatever the segmenter), and the rules that fail."""
    refused, reasons = 0, Counter()
    for image, truth in zip(data.images, data.masks):
        result = check_anatomy(AnatomyMasks({organ: truth[i].astype(bool) for i, organ in enumerate(Organ)},
                                            "world"), image)
        if not result.passed:
            refused += 1
            reasons.update(result.failed)
    return refused, dict(reasons)


def score(segmenter, data: AnatomySet) -> dict:
    """Mean and worst Dice per organ (every image, refused or not) and the refusals."""
    dices: dict[str, list[float]] = {organ.value: [] for organ in Organ}
    refused, reasons = 0, Counter()
    exact_refused, exact_reasons = exact_refusals(data)
    for image, truth in zip(data.images, data.masks):
        masks = segment(image, segmenter, min_confidence=0.0)
        for channel, organ in enumerate(Organ):
            dices[organ.value].append(dice(masks.organs[organ], truth[channel]))
        why = []
        try:
            segment(image, segmenter, min_confidence=MIN_CONFIDENCE)
        except SegmentationError as error:
            why.append("confidence" if "unsure" in str(error) else "organ missing")
        else:
            result = check_anatomy(masks, image)
            why += list(result.failed)
        if why:
            refused += 1
            reasons.update(why)
    return {"images": len(data), "exact_masks_refused": exact_refused, "exact_masks_reasons": exact_reasons,
            "refused": refused, "refusal_rate": refused / len(data), "reasons": dict(reasons),
            "dice": {k: round(float(np.mean(v)), 4) for k, v in dices.items()},
            "worst": {k: round(float(np.min(v)), 4) for k, v in dices.items()}}


def figure(data: AnatomySet, bank_path: Path | None, path: Path, seed: int = 3) -> None:
    """One render per column, as rendered (top) and through every step of the film look
    (bottom; the lung warp too when a cached bank is given), lung outlines drawn in red."""
    from PIL import Image
    from skimage.segmentation import find_boundaries

    from medcf.training.anatomy_augment import LUNG_CHANNELS, realism_transforms
    from medcf.world.film import FilmLook, ShapeBank

    look = FilmLook(multiscale_prob=0.7, unsharp_prob=0.7, compression_prob=0.5, voi_prob=0.5, grid_prob=0.5,
                    collimation_prob=0.5, lung_shape_prob=1.0, lung_shape_strength=(1.0, 1.0))
    steps = realism_transforms(look, ShapeBank.load(bank_path) if bank_path else None)
    for index, step in enumerate(steps):
        step.set_random_state(seed=seed + index)
    columns = []
    for i in range(0, 2 * 6, 2):
        sample = {"image": torch.as_tensor(data.images[i][None]),
                  "label": torch.as_tensor(data.masks[i].astype(np.float32))}
        tiles = []
        for stage in (sample, None):
            if stage is None:
                for step in steps:
                    sample = step(sample)
                stage = sample
            gray = np.clip(stage["image"][0].numpy(), 0, 1)
            rgb = np.repeat(gray[..., None], 3, axis=-1)
            edge = find_boundaries(stage["label"][list(LUNG_CHANNELS)].amax(dim=0).numpy() > 0.5)
            rgb[edge] = (1.0, 0.1, 0.1)
            tiles.append(rgb)
        columns.append(np.concatenate(tiles, axis=0))
    panel = Image.fromarray((np.concatenate(columns, axis=1) * 255).astype(np.uint8))
    panel.resize((panel.width * 3 // 4, panel.height * 3 // 4), Image.Resampling.LANCZOS).save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--renders", type=Path, help="AnatomySet .npz of the plausibility set (seeds 1 300 000..)")
    parser.add_argument("--look-seed", type=int, default=17_004)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--figure", type=Path, help="write the film-look panel here and stop")
    parser.add_argument("--bank", type=Path, help="cached lung-shape bank for --figure")
    args = parser.parse_args()
    if args.figure:
        figure(rendered_chunks(900_000, 40, 256), args.bank, args.figure)
        return
    torch.set_num_threads(1)
    segmenter = default_segmenter(args.weights)
    check = rendered_chunks(900_000, 40, 256)
    results = {"weights": str(args.weights), "check": score(segmenter, check),
               "real_like": score(segmenter, real_like(check, args.look_seed))}
    if args.renders:
        results["plausibility"] = score(segmenter, AnatomySet.load(args.renders))
    sample = read_input(SAMPLE_STUDY)
    masks = segment(sample.display, segmenter, min_confidence=0.0)
    result = check_anatomy(masks, sample.display)
    results["sample_study"] = {"confidence": round(float(masks.confidence() or 0), 3), "passed": result.passed,
                               "failed": list(result.failed)}
    text = json.dumps(results, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
