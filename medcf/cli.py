"""The ``medcf`` command line: argument parsing only; each command calls one
library function and prints its result.

Errors a user can fix print one line on stderr and exit 2; nothing is written.
Set MEDCF_DEBUG=1 to see tracebacks of unexpected errors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import medcf
from medcf.commands.segment import add_anatomy_parsers
from medcf.commands.batch import add_batch_parser, add_pull_parser
from medcf.commands.edit import add_editing_parsers
from medcf.errors import InputError, MedCFError
from medcf.eval.cli import add_eval_parsers
from medcf.commands.model import add_model_parsers
from medcf.commands.report import add_report_parse_parser
from medcf.training.cli import add_training_parsers
from medcf.world.cli import add_world_parsers

EPILOG = (
    "MedCF output is synthetic, for research only, never for diagnosis. "
    "Documentation: README.md and docs/ in the MedCF repository."
)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    text = " ".join(str(message).split())
    print(f"medcf: warning: {text}", file=sys.stderr)


def _format_spacing(instance) -> str:
    if not instance.spacing_mm:
        return "none"
    row, col = instance.spacing_mm
    return f"{row:g}x{col:g} ({instance.spacing_source.value})"


def format_inspection(inspection) -> str:
    """Human-readable report of :class:`~medcf.io.StudyInspection`."""
    rows = []
    header = ("", "series", "inst", "modality", "view", "frontal", "rows x cols", "bits", "photometric",
              "transfer syntax", "spacing mm (from)", "file")
    common = os.path.commonpath([str(i.path) for i in inspection.instances]) if inspection.instances else ""
    if common and Path(common).is_file():
        common = str(Path(common).parent)
    for instance in inspection.instances:
        mark = "*" if inspection.selected is instance else ("!" if instance.problems else " ")
        bits = f"{instance.bits_stored}/{instance.bits_allocated}"
        rows.append((
            mark, str(instance.series_number or "-"), str(instance.instance_number or "-"), instance.modality,
            instance.view.value, "yes" if instance.frontal else "no", f"{instance.rows}x{instance.columns}",
            bits, instance.photometric, instance.transfer_syntax, _format_spacing(instance),
            os.path.relpath(instance.path, common) if common else str(instance.path),
        ))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [f"MedCF inspect: {', '.join(inspection.inputs)}",
             f"{len(inspection.instances)} DICOM instance(s) in "
             f"{len({i.series_instance_uid for i in inspection.instances})} series; "
             f"{len(inspection.skipped)} file(s) skipped", ""]
    for r in [header, *rows]:
        lines.append("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    lines.append("")
    lines.append("SOP Instance UIDs:")
    for instance in inspection.instances:
        lines.append(f"  {os.path.relpath(instance.path, common) if common else instance.path}: "
                     f"{instance.sop_instance_uid}  [{instance.sop_class}; view from {instance.view_evidence}]")
    lines.append("")
    if inspection.selected is not None:
        lines.append(f"Would edit: {inspection.selected.path} (SOP Instance UID {inspection.selected.sop_instance_uid})")
        lines.append(f"Why: {inspection.selection_reason}")
    else:
        lines.append(f"Would edit: nothing. {inspection.selection_reason}")
    problems = [p for p in inspection.problems if not (inspection.selected is None and p == inspection.selection_reason)]
    lines.append("Problems: " + ("none" if not problems else ""))
    lines.extend(f"  - {p}" for p in problems)
    lines.append("(* = selected, ! = cannot be edited)")
    return "\n".join(lines)


def cmd_inspect(args: argparse.Namespace) -> int:
    from medcf.io import inspect_study
    from medcf.io.pacs import resolve_inputs

    inspection = inspect_study(resolve_inputs(args.paths, args.cache_dir, args.aet))
    if args.png:
        from medcf.viz import contact_sheet_tiles, render_grid, save_png

        title = f"MedCF inspect: {len(inspection.instances)} instance(s); * = would edit"
        save_png(render_grid(contact_sheet_tiles(inspection), title), args.png)
        print(f"contact sheet: {args.png}", file=sys.stderr)
    if args.json:
        print(json.dumps(inspection.to_dict(), indent=2))
    else:
        print(format_inspection(inspection))
    if inspection.selected is None:
        # The report above says what was found; the exit status and one line say it failed.
        raise InputError(f"nothing to edit in {', '.join(inspection.inputs)}: {inspection.selection_reason}")
    return 0


def cmd_sample_study(args: argparse.Namespace) -> int:
    from medcf.io.samples import write_sample_study

    paths = write_sample_study(args.out, seed=args.seed, rows=args.rows, columns=args.columns)
    for path in paths:
        print(path)
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    from medcf.io.pacs import send

    report = send(args.paths, args.to, calling_aet=args.aet, allow_non_synthetic=args.allow_non_synthetic)
    print(f"sent {report.sent} instance(s) to {report.target}")
    return 0


def _add_network_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--aet", default="MEDCF", help="our (calling) AE title for DIMSE (default MEDCF)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medcf",
        description="MedCF: counterfactual chest radiographs for research. Reads chest radiographs "
                    "(DICOM CR/DX/SC), and writes synthetic images as new, clearly tagged DICOM series.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"medcf {medcf.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    inspect = sub.add_parser(
        "inspect",
        help="show what MedCF sees in a study and which image it would edit",
        description="List every DICOM instance under PATH (a file, a series folder, a study folder "
                    "with several series, or several of these): SOP Instance UID, modality, view, "
                    "size, bits, photometric interpretation, transfer syntax and pixel spacing; "
                    "which instance MedCF would edit and why; and the problems found. Reads headers "
                    "only. Exit status: 0 if an editable frontal image was found; 2, with a one-line "
                    "error on stderr, if the input is unreadable or holds no editable frontal image.",
        epilog=EPILOG,
    )
    inspect.add_argument(
        "paths", nargs="+", metavar="PATH",
        help="DICOM file(s) or folder(s), or a study on a DICOM server: dicom://AET@host:port/<StudyInstanceUID> "
             "or dicom://AET@host:port/?AccessionNumber=… (C-FIND + C-GET), "
             "http(s)://host:port/dicom-web/studies/<StudyInstanceUID> (DICOMweb)",
    )
    inspect.add_argument("--cache-dir", type=Path, default=None,
                         help="where studies fetched from a server are kept (default $MEDCF_CACHE/studies "
                              "or ~/.cache/medcf/studies)")
    _add_network_options(inspect)
    inspect.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    inspect.add_argument("--png", type=Path, metavar="FILE",
                         help="also write a contact sheet: a thumbnail of every instance, the selected one framed "
                              "(decodes every image; never overwrites FILE)")
    inspect.set_defaults(func=cmd_inspect)

    send = sub.add_parser(
        "send",
        help="store synthetic DICOM files on a DICOM server (C-STORE or DICOMweb STOW-RS)",
        description="Send DICOM files (or every .dcm under folders) to a server: dicom://AET@host:port "
                    "(C-STORE) or http(s)://host:port/dicom-web (STOW-RS). Every file is read and checked "
                    "before the first is sent; files not marked Synthetic Data = YES are refused unless "
                    "--allow-non-synthetic is given.",
        epilog=EPILOG,
    )
    send.add_argument("paths", nargs="+", metavar="PATH", help="DICOM file(s) or folder(s) to send")
    send.add_argument("--to", required=True, metavar="URL", help="dicom://AET@host:port or http(s)://…/dicom-web")
    send.add_argument("--allow-non-synthetic", action="store_true",
                      help="also send objects that are not marked synthetic (e.g. sample studies for testing)")
    _add_network_options(send)
    send.set_defaults(func=cmd_send)

    sample = sub.add_parser(
        "sample-study",
        help="write a small sample chest study (PA, lateral, screen capture) for trying MedCF",
        description="Write a sample study: a PA CR (MONOCHROME1, 12-bit, JPEG-LS), a lateral CR and an "
                    "8-bit JPEG screen capture, one series folder each. The images are an analytic "
                    "drawing of a chest, not a patient and not a simulation; they exist to exercise "
                    "the DICOM path end to end.",
        epilog=EPILOG,
    )
    sample.add_argument("--out", required=True, type=Path, help="folder to create (must not hold the files yet)")
    sample.add_argument("--seed", type=int, default=0, help="random seed of the drawing (default 0)")
    sample.add_argument("--rows", type=int, default=1024, help="image rows (default 1024)")
    sample.add_argument("--columns", type=int, default=896, help="image columns (default 896)")
    sample.set_defaults(func=cmd_sample_study)
    add_editing_parsers(sub)
    add_batch_parser(sub)
    add_pull_parser(sub)
    add_report_parse_parser(sub)
    add_world_parsers(sub)
    train = sub.add_parser("train", help="train MedCF's networks on the simulated world",
                           description="Train one of MedCF's networks on the simulated world.", epilog=EPILOG)
    train_sub = train.add_subparsers(dest="train_command", metavar="MODEL")
    train_sub.required = True
    add_anatomy_parsers(sub)
    model_sub = add_model_parsers(sub)
    add_eval_parsers(sub, train_sub, model_sub)
    add_training_parsers(train_sub, model_sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = os.environ.get("MEDCF_DEBUG") == "1"
    if not debug:
        warnings.showwarning = _one_line_warning
    try:
        return int(args.func(args))
    except MedCFError as error:
        print(f"medcf: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("medcf: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # last resort: still one line unless debugging
        if debug:
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"medcf: internal error: {type(error).__name__}: {message} "
              "(set MEDCF_DEBUG=1 for the traceback and please report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
