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

Issue 46 (``--calibrate OUT.json``): the confidence calibration (isotonic, on tuning renders
as rendered and through the film look, seeds 1 100 000-1 100 079), written beside the
weights, and on held-out renders (seeds 1 400 000-1 400 079, as rendered and through the
film look): the refusal rate and its rules, Dice when not refused, masks confidently wrong
(Dice < 0.8, not refused), and the reliability table of the calibrated chance.

Usage: python benchmarks/bench_realfilm.py --weights W.safetensors [--renders FILE.npz] [--json OUT]
       python benchmarks/bench_realfilm.py --weights monai_bundle/models/anatomy_unet.safetensors --calibrate OUT.json
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
    return through(steps, data, seed)


def through(steps: list, data: AnatomySet, seed: int, clip: bool = False) -> AnatomySet:
    """Every image of ``data`` with its masks through the MONAI dictionary transforms ``steps``
    in order, the k-th seeded with ``seed + k`` (``clip``: the images back into [0, 1])."""
    for index, step in enumerate(steps):
        step.set_random_state(seed=seed + index)
    images, masks = [], []
    for image, mask in zip(data.images, data.masks):
        sample = {"image": torch.as_tensor(image[None]), "label": torch.as_tensor(mask.astype(np.float32))}
        for step in steps:
            sample = step(sample)
        out = sample["image"][0].numpy()
        images.append(np.clip(out, 0, 1) if clip else out)
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


# --- issue 46: refusal rates, Dice when not refused, and the confidence calibration ---------

TUNING_SEED, HELD_OUT_SEED = 1_100_000, 1_400_000  # SeedRange.TUNING, SeedRange.BENCHMARK
TUNING_LOOK_SEED = 17_104  # the film look drawn on the tuning renders (17_004: the held-out ones)


def augmented(data: AnatomySet, seed: int) -> AnatomySet:
    """``data`` through one draw of the segmenter's whole training augmentation with the film
    look (no lung warp): polarity mistakes, gamma, noise, crops, zoom, rotation, mirroring on
    top of processing, grid lines and collimation. Harder than the film look alone, so the
    calibration sees masks that go wrong (none did on the film look alone)."""
    from medcf.training.anatomy_augment import training_transform

    transform = training_transform(data.images.shape[-1], seed, FilmLook(), None)
    images, masks = [], []
    for image, mask in zip(data.images, data.masks):
        sample = transform({"image": image[None].copy(), "label": mask.astype(np.float32)})
        images.append(np.asarray(sample["image"][0], np.float32))
        masks.append(np.asarray(sample["label"]) > 0.5)
    return AnatomySet(np.stack(images), np.stack(masks), data.views, data.seeds, data.pixel_mm)


BANK_SEED = 46  # which real outlines the evaluation warps toward (training draws with its own seed, 0)


def warped(data: AnatomySet, seed: int) -> AnatomySet:
    """``data`` through the whole film look with every lung warped, at full strength, toward
    one of 48 real outlines (registered to the mean outline of ``data``'s first 50 images,
    cached): real lung shapes, the one thing the film look alone leaves rendered."""
    from medcf.cache import cache_dir
    from medcf.training.anatomy_augment import LUNG_CHANNELS, realism_transforms
    from medcf.world.film import cached_shape_bank, installed_lung_shapes

    source = installed_lung_shapes()
    if source is None:
        raise SystemExit("torchxrayvision is not installed: the real lung outlines are read from it")
    lungs = [m[0] | m[1] for m in data.masks[:50]]
    bank = cached_shape_bank(lungs, source, 48, BANK_SEED, cache_dir("anatomy"))
    look = FilmLook(lung_shape_prob=1.0, lung_shape_strength=(1.0, 1.0))
    assert LUNG_CHANNELS == (0, 1)
    return through(realism_transforms(look, bank), data, seed, clip=True)


def per_image(segmenter, data: AnatomySet) -> list[dict]:
    """For every image: raw confidence, Dice per organ, whether masks are right
    (medcf.anatomy.calibration.RIGHT_DICE) and why it would be refused (empty: not)."""
    from medcf.anatomy.calibration import is_right

    rows = []
    for image, truth in zip(data.images, data.masks):
        masks = segment(image, segmenter, min_confidence=0.0)
        dices = {organ: dice(masks.organs[organ], truth[channel]) for channel, organ in enumerate(Organ)}
        confidence = masks.confidence()
        why = []
        if any(not masks.organs[organ].any() for organ in Organ):
            why.append("organ missing")
        elif confidence is not None and confidence < MIN_CONFIDENCE:
            why.append("confidence")
        else:
            why += check_anatomy(masks, image).failed
        exact = check_anatomy(AnatomyMasks({organ: truth[i].astype(bool) for i, organ in enumerate(Organ)}, "world"),
                              image).failed if all(truth[i].any() for i in range(len(Organ))) else ["organ missing"]
        rows.append({"confidence": float(confidence or 0.0), "dice": {o.value: round(d, 4) for o, d in dices.items()},
                     "right": is_right(dices), "refused": why, "exact_masks_refused": exact})
    return rows


def summary(rows: list[dict]) -> dict:
    """Refusal rate, the rules behind it, Dice when not refused, confidently wrong masks."""
    kept = [r for r in rows if not r["refused"]]
    reasons = Counter(reason for r in rows for reason in r["refused"])
    worst = lambda r: min(r["dice"].values())  # noqa: E731
    return {"images": len(rows), "refused": len(rows) - len(kept), "refusal_rate": round(1 - len(kept) / len(rows), 4),
            "reasons": dict(reasons), "refused_right": sum(1 for r in rows if r["refused"] and r["right"]),
            "exact_masks_refused": sum(1 for r in rows if r["exact_masks_refused"]),
            "exact_masks_reasons": dict(Counter(x for r in rows for x in r["exact_masks_refused"])),
            "dice_kept": {o.value: round(float(np.mean([r["dice"][o.value] for r in kept])), 4) for o in Organ}
            if kept else None,
            "right_share_kept": round(float(np.mean([r["right"] for r in kept])), 4) if kept else None,
            "confidently_wrong": sum(1 for r in kept if min(r["dice"]["lung_right"], r["dice"]["lung_left"],
                                                             r["dice"]["heart"]) < 0.8),
            "worst_kept": round(float(min(worst(r) for r in kept)), 4) if kept else None}


def reliability(rows: list[dict], calibration, edges=(0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 1.0)) -> list[dict]:
    """Bins of calibrated chance: how many films, the mean stated chance, the share right."""
    table = []
    chances = np.array([calibration.chance_right(r["confidence"]) for r in rows])
    right = np.array([r["right"] for r in rows], float)
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (chances >= low) & ((chances < high) if high < 1.0 else (chances <= high))
        if inside.any():
            table.append({"bin": f"{low:.2f}-{high:.2f}", "films": int(inside.sum()),
                          "stated": round(float(chances[inside].mean()), 3),
                          "right": round(float(right[inside].mean()), 3)})
    return table


def calibrate(segmenter, weights: Path, out: Path, calibration_path: Path, look_seed: int) -> dict:
    """Fit the isotonic calibration on the tuning renders through the film look, write it
    beside the weights, and measure it and the refusals on held-out renders (plain and
    through the film look)."""
    from sklearn.isotonic import IsotonicRegression

    from medcf.anatomy.calibration import RIGHT_DICE, ConfidenceCalibration
    from medcf.io.atomic import sha256_of_file

    tuning_plain = rendered_chunks(TUNING_SEED, 80, 256)
    held_plain = rendered_chunks(HELD_OUT_SEED, 80, 256)
    sets = {"tuning_plain": tuning_plain, "tuning_film_look": real_like(tuning_plain, TUNING_LOOK_SEED),
            "tuning_augmented": augmented(tuning_plain, TUNING_LOOK_SEED),
            "tuning_real_shapes": warped(tuning_plain, TUNING_LOOK_SEED),
            "held_out_plain": held_plain, "held_out_film_look": real_like(held_plain, look_seed),
            "held_out_augmented": augmented(held_plain, look_seed),
            "held_out_real_shapes": warped(held_plain, look_seed)}
    rows = {name: per_image(segmenter, data) for name, data in sets.items()}
    fit_rows = rows["tuning_plain"] + rows["tuning_film_look"] + rows["tuning_augmented"] + rows["tuning_real_shapes"]
    x = np.array([r["confidence"] for r in fit_rows])
    y = np.array([r["right"] for r in fit_rows], float)
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(x, y)
    knots_x, knots_y = iso.X_thresholds_, iso.y_thresholds_
    calibration = ConfidenceCalibration(
        sha256_of_file(weights), tuple(round(float(v), 5) for v in knots_x), tuple(round(float(v), 4) for v in knots_y),
        {"method": "isotonic regression of right (0/1) on the raw confidence",
         "right_dice": {o.value: b for o, b in RIGHT_DICE.items()},
         "fitted_on": f"tuning renders (seeds {TUNING_SEED}-{TUNING_SEED + 79}, 256 px, {len(fit_rows)} images): "
                      "as rendered, through the film look, through the training augmentation with the film look, "
                      f"and through the film look with lungs warped to real outlines (seed {TUNING_LOOK_SEED})",
         "made_by": "benchmarks/bench_realfilm.py --calibrate"})
    calibration_path.unlink(missing_ok=True)
    calibration.save(calibration_path)
    results = {"weights": str(weights), "summary": {name: summary(r) for name, r in rows.items()},
               "reliability_held_out": reliability(rows["held_out_plain"] + rows["held_out_film_look"]
                                                   + rows["held_out_augmented"] + rows["held_out_real_shapes"],
                                                   calibration),
               "reliability_held_out_real_shapes": reliability(rows["held_out_real_shapes"], calibration),
               "reliability_held_out_film_look": reliability(rows["held_out_film_look"], calibration),
               "reliability_held_out_augmented": reliability(rows["held_out_augmented"], calibration),
               "rows": rows}
    out.write_text(json.dumps(results, indent=1))
    return results



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--renders", type=Path, help="AnatomySet .npz of the plausibility set (seeds 1 300 000..)")
    parser.add_argument("--look-seed", type=int, default=17_004)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--figure", type=Path, help="write the film-look panel here and stop")
    parser.add_argument("--bank", type=Path, help="cached lung-shape bank for --figure")
    parser.add_argument("--calibrate", type=Path, help="fit the confidence calibration, measure refusals and "
                        "reliability (issue 46), write the results here and stop")
    parser.add_argument("--calibration-file", type=Path, help="where the calibration goes (default: beside the "
                        "bundle's weights, monai_bundle/models/anatomy_confidence.json)")
    args = parser.parse_args()
    if args.calibrate:
        from medcf.anatomy.calibration import default_calibration_path

        torch.set_num_threads(1)
        results = calibrate(default_segmenter(args.weights), args.weights, args.calibrate,
                            args.calibration_file or default_calibration_path(), args.look_seed)
        print(json.dumps({k: v for k, v in results.items() if k != "rows"}, indent=1))
        return
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
