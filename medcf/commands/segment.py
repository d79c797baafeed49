"""``medcf segment`` and ``medcf anatomy-score``: argument parsing only."""

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


def cmd_anatomy_score(args: argparse.Namespace) -> int:
    import json

    from medcf.anatomy.outputs import load_segmenter
    from medcf.anatomy.score import rank_inputs

    segmenter = load_segmenter(args.segmenter, args.weights, placement_from_args(args))
    print(json.dumps(rank_inputs(args.inputs, segmenter), indent=1))
    return 0


def add_anatomy_parsers(sub: argparse._SubParsersAction) -> None:
    """``medcf segment`` and ``medcf anatomy-score`` under ``sub``."""
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
