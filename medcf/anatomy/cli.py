"""``medcf segment`` and ``medcf train segmenter``: argument parsing only."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medcf.devices import add_device_options, placement_from_args

EPILOG = ("The default anatomy model learned from simulated radiographs only. MedCF output is for "
          "research only, never for diagnosis.")


def cmd_segment(args: argparse.Namespace) -> int:
    from medcf.anatomy.outputs import load_segmenter, segment_input

    segmenter = load_segmenter(args.segmenter, args.weights, placement_from_args(args))
    result = segment_input(args.input, args.out, segmenter, min_confidence=args.min_confidence,
                           accept_anatomy=args.accept_anatomy)
    masks = result.masks
    print(f"segmented {args.input} ({masks.shape[0]}x{masks.shape[1]}) with {masks.segmenter} "
          f"in {result.seconds:.2f} s (confidence {masks.confidence() or float('nan'):.2f})")
    if result.plausibility is not None and result.plausibility.overridden:
        print(f"medcf: warning: implausible anatomy accepted (--accept-anatomy): {', '.join(result.plausibility.failed)}",
              file=sys.stderr)
    for name, path in result.files.items():
        print(f"  {name}: {path}")
    return 0


def cmd_train_segmenter(args: argparse.Namespace) -> int:
    from medcf.anatomy.train import TrainConfig, train_segmenter
    from medcf.world.film import FilmLook

    config = TrainConfig(out_dir=args.out, patients=args.patients, steps=args.steps, batch=args.batch,
                         learning_rate=args.lr, seed=args.seed, eval_patients=args.eval_patients,
                         checkpoint_every=args.checkpoint_every, init_weights=args.init,
                         film_look=None if args.no_film_look else FilmLook(), lung_shapes=args.lung_shapes,
                         lung_shape_source=args.lung_shape_source)
    weights = train_segmenter(config, resume=args.resume, progress=not args.quiet)
    print(f"weights: {weights}", file=sys.stderr)
    print(f"record: {weights.parent / 'training.json'}", file=sys.stderr)
    return 0


def cmd_anatomy_score(args: argparse.Namespace) -> int:
    import json

    from medcf.anatomy.outputs import load_segmenter
    from medcf.anatomy.score import rank_inputs

    segmenter = load_segmenter(args.segmenter, args.weights, placement_from_args(args))
    print(json.dumps(rank_inputs(args.inputs, segmenter), indent=1))
    return 0


def cmd_train_segmenter_labels(args: argparse.Namespace) -> int:
    from medcf.anatomy.finetune import FinetuneConfig, finetune_segmenter, read_manifest

    config = FinetuneConfig(out_dir=args.out, init_weights=args.init, steps=args.steps, batch=args.batch,
                            learning_rate=args.lr, seed=args.seed, min_labels=args.min_labels)
    weights = finetune_segmenter(read_manifest(args.pairs), config, progress=not args.quiet)
    print(f"weights: {weights}")
    print(f"record: {weights.parent / 'training.json'}")
    return 0


def add_anatomy_parsers(sub: argparse._SubParsersAction, train_sub: argparse._SubParsersAction) -> None:
    from medcf.anatomy.masks import MIN_CONFIDENCE

    segment = sub.add_parser(
        "segment",
        help="lungs, heart, lung zones and costophrenic regions of a frontal chest radiograph",
        description="Segment the right lung, left lung and heart of a frontal chest radiograph (DICOM file, "
                    "series or study folder, PNG, or 2D NIfTI) at its native size, and derive the upper, middle "
                    "and lower zone of each lung and the costophrenic regions. Lungs are the whole projected lung, "
                    "behind the heart too. Writes into OUT (new or empty): anatomy.nii.gz and zones.nii.gz (label "
                    "maps), anatomy-seg.dcm (DICOM SEG referencing the source, DICOM input only), overlay.png, and "
                    "anatomy.json (legends, areas, cardiothoracic ratio, segmenter, weights checksum, plausibility "
                    "check). Masks that fail the anatomy plausibility check are refused unless --accept-anatomy.",
        epilog=EPILOG,
    )
    segment.add_argument("input", type=Path, metavar="INPUT", help="DICOM file or folder, .png, or .nii/.nii.gz")
    segment.add_argument("--out", type=Path, required=True, help="new or empty output folder")
    segment.add_argument("--segmenter", default=None,
                         help="segmenter: medcf, torchxrayvision (ChestX-Det PSPNet; needs --weights) or a site's "
                              "registered name (default: segmenter_name in monai_bundle/configs/anatomy.json)")
    segment.add_argument("--weights", type=Path, default=None,
                         help="local weights file for the segmenter (default: the bundle's); nothing is downloaded")
    segment.add_argument("--min-confidence", type=float, default=MIN_CONFIDENCE,
                         help="refuse images the segmenter draws less surely than this (mean organ probability "
                              f"inside the least sure organ; default {MIN_CONFIDENCE}); lower it for real radiographs "
                              "the simulated-world model finds unfamiliar, and check the overlay")
    segment.add_argument("--accept-anatomy", action="store_true",
                         help="write the masks even if they fail the anatomy plausibility check (docs/anatomy.md); "
                              "anatomy.json records that the check failed and was overridden")
    add_device_options(segment)
    segment.set_defaults(func=cmd_segment)

    score = sub.add_parser(
        "anatomy-score",
        help="rank films by how sure the segmenter is of them (active learning: label the first)",
        description="Segment each film and print a JSON list, least sure first: films whose masks fail "
                    "plausibility rules (more rules first), then by the network's confidence (lowest first). "
                    "A film that cannot be segmented is listed first with its error; nothing is written.",
        epilog=EPILOG,
    )
    score.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="DICOM, PNG or NIfTI films")
    score.add_argument("--segmenter", default=None, help="segmenter name (default: the bundle config's)")
    score.add_argument("--weights", type=Path, default=None, help="weights file (default: the bundle's)")
    add_device_options(score)
    score.set_defaults(func=cmd_anatomy_score)

    from medcf.anatomy.finetune import MIN_LABELS

    labels = train_sub.add_parser(
        "segmenter-labels",
        help="fine-tune the anatomy network on films people labelled",
        description="Fine-tune the anatomy network on labelled films, starting from --init (default: the bundle's "
                    "weights), and write OUT/anatomy_unet.safetensors and OUT/training.json. The manifest is a "
                    "JSON list of {\"image\": FILE, \"label\": FILE}: images as `medcf segment` reads them, labels "
                    "as `medcf edit --masks` reads them (label map 1 lung_right, 2 lung_left, 3 heart; Slicer "
                    ".seg.nrrd; DICOM SEG). Lungs are not trained under a labelled heart (docs/monailabel.md).",
        epilog=EPILOG,
    )
    labels.add_argument("--pairs", type=Path, required=True, metavar="MANIFEST.json", help="labelled films")
    labels.add_argument("--out", type=Path, required=True, help="new or empty folder for the weights and record")
    labels.add_argument("--init", type=Path, default=None, help="start weights (default: the bundle's)")
    labels.add_argument("--steps", type=int, default=100, help="optimiser steps (default 100)")
    labels.add_argument("--batch", type=int, default=4, help="films per step (default 4)")
    labels.add_argument("--lr", type=float, default=1e-4, help="learning rate (default 1e-4)")
    labels.add_argument("--seed", type=int, default=0, help="seed of batches and augmentation (default 0)")
    labels.add_argument("--min-labels", type=int, default=MIN_LABELS,
                        help=f"refuse to train on fewer labelled films (default {MIN_LABELS})")
    labels.add_argument("--quiet", action="store_true", help="no per-step lines")
    labels.set_defaults(func=cmd_train_segmenter_labels)

    train = train_sub.add_parser(
        "segmenter",
        help="train the anatomy network on the simulated world",
        description="Render training images from the simulated world (cached in $MEDCF_CACHE/anatomy), train the "
                    "MONAI UNet of monai_bundle/configs/anatomy.json with augmentation aimed at real radiographs, "
                    "check Dice on held-out seeds, and write OUT/anatomy_unet.safetensors and OUT/training.json. "
                    "A checkpoint is kept every --checkpoint-every steps; --resume continues an interrupted run.",
        epilog=EPILOG,
    )
    train.add_argument("--out", type=Path, required=True, help="run folder (new or empty, or the run to --resume)")
    train.add_argument("--patients", type=int, default=800, help="simulated patients, 2 images each (default 800)")
    train.add_argument("--steps", type=int, default=4000, help="optimiser steps (default 4000)")
    train.add_argument("--batch", type=int, default=16, help="images per step (default 16)")
    train.add_argument("--lr", type=float, default=3e-3, help="peak learning rate, one-cycle schedule (default 3e-3)")
    train.add_argument("--seed", type=int, default=0, help="seed of initialisation and augmentation (default 0)")
    train.add_argument("--eval-patients", type=int, default=40, help="held-out patients checked during training")
    train.add_argument("--checkpoint-every", type=int, default=250, help="steps between checkpoints (default 250)")
    train.add_argument("--init", type=Path, default=None,
                       help="start from these weights (.safetensors) instead of random ones: fine-tuning")
    train.add_argument("--no-film-look", action="store_true",
                       help="train on renders as they are, without the real-film steps (processing, grid lines, "
                            "collimation, lung shapes; docs/anatomy.md)")
    train.add_argument("--lung-shapes", type=int, default=48,
                       help="real lung outlines the renders' lungs are warped toward (default 48; 0: none)")
    train.add_argument("--lung-shape-source", type=Path, default=None, metavar="ZIP",
                       help="zip of lung mask images (default: semantic_masks_v7labs_lungs.zip of an installed "
                            "torchxrayvision, CC BY 4.0)")
    train.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=cmd_train_segmenter)
