"""``medcf edit``, ``medcf pairs``, ``medcf steer-vectors`` and ``medcf demo``: parsing
only, each command calls one function of :mod:`medcf.editing.api`. Nothing heavy is
imported until a command runs."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from medcf.devices import add_device_options, placement_from_args
from medcf.editing.options import EditCommand, add_edit_options, schema_json, schema_table, spec_from_args
from medcf.editing.spec import OPTIONS
from medcf.onray.options import add_ray_options
from medcf.vocab import Action, Finding, Severity, Side

EPILOG = (
    "The default model learned from simulated radiographs rendered from one chest CT, not from patients. "
    "MedCF output is synthetic, for research only, never for diagnosis. Methods: docs/editing.md."
)


def _values(enum) -> list[str]:
    return [member.value for member in enum]


def _edit_options(parser: argparse.ArgumentParser, command: EditCommand, finding_required: bool = False,
                  action_required: bool = True) -> None:
    """The edit options (generated from the schema, :mod:`medcf.editing.options`) and the
    model's: what every command that edits takes."""
    add_edit_options(parser, command, finding_required, action_required)
    parser.add_argument("--model", type=Path, help="model folder (default: the MedCF bundle's default model)")
    parser.add_argument("--vectors", type=Path, help="steering vectors file (default: shipped with the model)")
    parser.add_argument("--text-encoder", type=Path, default=None,
                        help="local CLIP folder for a MONAI LDM bundle that does not carry models/text_encoder")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device_options(parser)


_spec = spec_from_args  # its former name here (tests/test_bundle.py)


def cmd_options(args: argparse.Namespace) -> int:
    print(schema_json() if args.json else schema_table(), end="" if args.json else "\n")
    return 0


def cmd_edit(args: argparse.Namespace) -> int:
    from medcf.editing.api import EditorRecipe, edit_file, needs_model, specs_from_report
    from medcf.errors import InputError
    from medcf.io.inputs import read_input

    command = "medcf " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    extras = None
    if args.from_report is not None:
        if args.finding:
            raise InputError("--finding and --from-report exclude each other: the report names the findings")
        if not args.from_report.is_file():
            raise InputError(f"--from-report {args.from_report}: no such file")
        text = args.from_report.read_text(encoding="utf-8", errors="replace")
        base = spec_from_args(args, Finding.PLEURAL_EFFUSION.value, Side.LEFT.value)  # the report names the finding
        specs, extras = specs_from_report(text, Action(args.action), base)
    elif not args.finding:
        raise InputError("--finding (or --from-report REPORT.txt) is required")
    else:
        specs = [spec_from_args(args)]
    image = read_input(args.input)  # a bad input fails before the model loads
    masks = args.masks
    if masks is not None:  # and so do bad masks
        from medcf.anatomy.given import read_masks
        masks = read_masks(masks, image)
    # the device is resolved first, then a named segmenter, then the model: each fails in one line before the next
    editor = EditorRecipe.from_args(args, segmenter=args.masks is None).load(model=needs_model(specs))
    outputs = edit_file(args.input, specs, args.out, editor, progress=not args.quiet, command=command,
                        extras=extras, sop_class=args.sop_class,
                        masks=masks, accept_anatomy=args.accept_anatomy, image=image)
    for output in outputs:
        for note in output.notes:
            print(note)
        for name in ("dicom", "image", "panel", "provenance"):
            if name in output.files:
                print(output.files[name])
        if output.check:
            print(output.check)
    return 0


def cmd_pairs(args: argparse.Namespace) -> int:
    from medcf.editing.api import EditorRecipe, make_pairs
    from medcf.editing.pairs import check_count, seeded_specs
    from medcf.errors import InputError
    from medcf.onray.options import check_ray_options

    check_ray_options(args)
    mix = None
    if args.from_reports is not None:
        if args.finding:
            raise InputError("--finding and --from-reports exclude each other: the reports name the findings")
        check_count(args.n)
        from medcf.editing.report_mix import mix_of
        from medcf.text.corpus import read_corpus

        # side and severity of the base are what a report leaves unsaid (the base's finding is replaced)
        base = spec_from_args(args, Finding.PLEURAL_EFFUSION.value, Side.LEFT.value)
        mix = mix_of(read_corpus(args.from_reports), Action(args.action), base, progress=not args.quiet)
        specs = mix.draw(args.n, base)
        print(f"{mix.corpus}: {mix.reports} reports, {mix.stated} editable findings in {len(mix.counts)} "
              f"combinations ({mix.without} reports state none); {args.n} pairs drawn with their frequencies",
              file=sys.stderr)
    elif not args.finding:
        raise InputError("--finding (or --from-reports [REPORTS.csv|FOLDER]) is required")
    else:
        specs = seeded_specs(spec_from_args(args), args.n)
    recipe = EditorRecipe.from_args(args)
    if args.ray is not None:  # only now is anything of Ray imported
        from medcf.editing.pairs import write_pair_stream
        from medcf.onray.pairs import ray_pairs

        out = write_pair_stream(ray_pairs(args.ray, recipe, specs, args.ray_workers), len(specs), args.out,
                                progress=not args.quiet)
    else:
        out = make_pairs(specs, args.out, recipe.load(), progress=not args.quiet)
    if mix is not None:
        from medcf.io.atomic import write_new_text

        write_new_text(out / "report_mix.json", mix.to_json(specs))
        write_new_text(out / "report_mix.md", mix.to_markdown(specs))
    print(out / "pairs.jsonl")
    print(out / "panel.png")
    if mix is not None:
        print(out / "report_mix.md")
    return 0


def cmd_steer_vectors(args: argparse.Namespace) -> int:
    from medcf.editing.api import estimate_and_cache, parse_seed_range

    findings = list(Finding) if args.finding == ["all"] else [Finding(f) for f in args.finding]
    start, count = parse_seed_range(args.seeds)
    path, cost = estimate_and_cache(findings, count, start, args.steps, Side(args.side) if args.side else None,
                              Severity(args.severity) if args.severity else None, args.model, args.out,
                              progress=not args.quiet, placement=placement_from_args(args),
                              text_encoder=args.text_encoder)
    print(path)
    if cost:
        print(f"cost: {cost['seconds']:.1f} s for {len(findings)} finding(s): {cost['films_sampled']} films sampled "
              f"({cost['denoiser_passes']} denoiser evaluations) on {cost['device']} in {cost['dtype']}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from medcf.editing.api import run_demo

    for name, value in run_demo(args.out, progress=not args.quiet, placement=placement_from_args(args)).items():
        print(f"{name}: {value}")
    return 0


def add_editing_parsers(sub: argparse._SubParsersAction) -> None:
    edit = sub.add_parser(
        "edit", help="add or remove a finding on a chest radiograph (counterfactual)",
        description="Edit a frontal chest radiograph so that one finding appears or disappears in a chosen side "
                    "and zone, and nothing else changes: MedCF segments lungs and heart, builds the edit region, "
                    "inverts the image into the diffusion model, re-samples it under anatomy-aware attention "
                    "control and/or activation steering, and transfers only the change inside the region back to "
                    "the original pixels. DICOM in gives a new synthetic DICOM series out (the source is never "
                    "changed); PNG and NIfTI inputs give the same format out. Also writes panel.png "
                    "(input | counterfactual | difference | region), masks/ and edit.json (provenance).",
        epilog=EPILOG)
    edit.add_argument("input", type=Path, metavar="INPUT", help="DICOM file or folder, PNG, or NIfTI radiograph")
    _edit_options(edit, EditCommand.EDIT)
    edit.add_argument("--from-report", type=Path, metavar="REPORT.txt",
                      help="take the findings (side, zone, severity) from a free-text report: one output folder "
                           "per present, certain, editable finding")
    edit.add_argument("--sop-class", choices=["sc", "dx"], default="sc",
                      help="DICOM output: Secondary Capture (default) or DX For Presentation")
    edit.add_argument("--out", type=Path, required=True, help="output folder (new or empty)")
    edit.add_argument("--masks", type=Path, metavar="FILE",
                      help="your own lungs and heart instead of the segmenter's: the anatomy.nii.gz of `medcf "
                           "segment`, a 3D Slicer .seg.nrrd, or a DICOM SEG (docs/anatomy.md)")
    edit.add_argument("--accept-anatomy", action="store_true",
                      help="edit even if the anatomy fails the plausibility check; edit.json records the override")
    edit.add_argument("--segmenter", default=None,
                      help="anatomy segmenter: medcf (default), torchxrayvision, or a site's registered name")
    edit.add_argument("--weights", type=Path, default=None, help="local weights file for --segmenter")
    edit.set_defaults(func=cmd_edit)

    pairs = sub.add_parser(
        "pairs", help="generate factual/counterfactual pairs from scratch (augmentation)",
        description="Sample N films from the model and, from the same noise, their counterfactuals with the "
                    "finding added or removed inside the segmented region (MedSteer-style; no inversion). "
                    "Writes pairs.jsonl in the simulated world's layout, images/, masks/ and panel.png.",
        epilog=EPILOG)
    _edit_options(pairs, EditCommand.PAIRS)
    pairs.add_argument("--from-reports", nargs="?", const="iu", default=None, metavar="REPORTS.csv|FOLDER",
                       help="instead of --finding: draw each pair's finding, side, zone and severity with the "
                            "frequencies a report corpus states them (read by MedCF's report reader, as "
                            "--from-report of edit): alone, the IU reports 1-1000; or a .csv with a 'report' "
                            "column, or a folder of .txt reports. Writes report_mix.md/.json (the corpus's "
                            "combinations, head/medium/tail, pairs drawn)")
    pairs.add_argument("--n", type=int, default=8, help="number of pairs (default 8); pair i uses seed --seed + i")
    pairs.add_argument("--out", type=Path, required=True, help="output folder (new or empty)")
    pairs.add_argument("--segmenter", default=None,
                       help="segmenter of the factual films (default medcf; or a site's registered name)")
    pairs.add_argument("--weights", type=Path, default=None, help="local weights file for --segmenter")
    add_ray_options(pairs)
    pairs.set_defaults(func=cmd_pairs)

    vectors = sub.add_parser(
        "steer-vectors", help="estimate MedSteer steering vectors for a model",
        description="Estimate a pathology direction per cross-attention layer and step: mean layer output with "
                    "prompts naming the finding minus with the normal prompt, over the same seeds. Written to "
                    "--out, or cached per model weights ($MEDCF_CACHE/steering) where `medcf edit` finds them. "
                    "The default model ships its vectors (monai_bundle/models/steering_vectors.safetensors).",
        epilog=EPILOG)
    vectors.add_argument("--finding", nargs="+", required=True, choices=_values(Finding) + ["all"],
                         help="finding(s), or all")
    vectors.add_argument("--side", choices=_values(Side), help="only this side in the prompts (default: every side)")
    vectors.add_argument("--severity", choices=_values(Severity), help="only this severity (default: every one)")
    vectors.add_argument("--seeds", default="64", help="a count (64, from seed 0) or a range (100-163); default 64")
    steps = OPTIONS["steps"].default  # the vectors are estimated at the editor's steps
    vectors.add_argument("--steps", type=int, default=steps, help=f"sampling steps (default {steps}, as the editor)")
    vectors.add_argument("--model", type=Path, help="model folder (default: the bundle's)")
    vectors.add_argument("--text-encoder", type=Path, default=None,
                         help="local CLIP folder for a MONAI LDM bundle that does not carry models/text_encoder")
    vectors.add_argument("--out", type=Path, help="vectors file to write (default: the cache)")
    vectors.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device_options(vectors)
    vectors.set_defaults(func=cmd_steer_vectors)

    options = sub.add_parser(
        "options", help="list the edit options: flag, choices or type, range, default",
        description="The edit options of medcf edit, pairs and batch as MedCF states them (medcf.editing.spec."
                    "EditSpec), one per line; --json prints the document the Slicer module and the MONAI Label "
                    "app read (their committed copies are kept equal to it by a test).",
        epilog=EPILOG)
    options.add_argument("--json", action="store_true", help="one JSON document instead of a table")
    options.set_defaults(func=cmd_options)

    demo = sub.add_parser(
        "demo", help="the main job on the committed sample study: add, then remove, a left pleural effusion",
        description="On medcf/data/sample_study: segment, add a moderate left pleural effusion, write a new "
                    "synthetic DICOM series and a panel; then read that series back and remove the effusion "
                    "again. Prints where everything is.",
        epilog=EPILOG)
    demo.add_argument("--out", type=Path, default=Path("build/demo/edit"), help="output folder (default build/demo/edit)")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device_options(demo)
    demo.set_defaults(func=cmd_demo)
