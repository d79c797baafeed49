"""``medcf batch``: parsing only; :func:`cmd_batch` reads the plan and sources (headers
only, so bad input fails before the model loads) and calls :func:`run_batch`."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

EPILOG = ("Every output is a synthetic image, for research only. Rerun the same command to resume: done "
          "(study, edit) keys are never run again. Details: docs/batch.md.")


def cmd_batch(args: argparse.Namespace) -> int:
    from medcf.batch.plan import (REPORT_COLUMNS, discover_studies, items_from_plan, items_from_spec, plan_paths,
                                  read_plan)
    from medcf.batch.runner import SendOptions, check_out_dir, run_batch
    from medcf.editing.options import spec_from_args
    from medcf.errors import InputError
    from medcf.batch.sources import expand_sources, fetch_sources
    from medcf.io.pacs import is_remote
    from medcf.editing.api import EditorRecipe
    from medcf.onray.options import check_ray_options

    if args.plan is not None and args.finding:
        raise InputError("--finding and --plan exclude each other: the plan names each edit")
    if args.from_report is not None and (args.finding or args.plan is not None):
        raise InputError("--from-report excludes --finding and --plan: the reports name the findings")
    if args.plan is None and args.from_report is None and not args.finding:
        raise InputError("--finding F --action A … (one edit for every study), --from-report REPORTS.csv --action A "
                         "or --plan PLAN.csv is required")
    if args.plan is None and not args.action:
        raise InputError(f"--action add|remove is required with {'--from-report' if args.from_report else '--finding'}")
    check_ray_options(args)
    recipe = EditorRecipe.from_args(args)
    # a device this machine lacks fails before anything is fetched or written (Ray's workers place their own)
    placement = recipe.placement() if args.ray is None else None
    check_move_port(args)
    if args.send_retries < 1:
        raise InputError(f"--send-retries {args.send_retries}: at least 1")
    rows = read_plan(args.plan) if args.plan is not None else []
    named = list(args.sources) + [str(p) for p in (plan_paths(rows, args.plan) if rows else [])]
    reports = read_plan(args.from_report, REPORT_COLUMNS, REPORT_COLUMNS, "--from-report") \
        if args.from_report is not None else []
    named += [str(p) for p in (plan_paths(reports, args.from_report, "--from-report") if reports else [])]
    if not named:
        raise InputError("no SOURCE given: name study folders (or study addresses), or paths in the plan")
    deidentifier = None
    if args.deidentify:
        if args.deid_map is None:
            raise InputError("--deidentify needs --deid-map FILE: the table that keeps pseudonyms consistent across "
                             "the batch and its resumption; it identifies patients, so put it outside --out")
        from medcf.io.deidentify import Deidentifier, DeidOption

        try:
            options = [DeidOption.parse(o) for o in args.deid_option or []]
        except ValueError as error:
            raise InputError(f"--deid-option: {error}") from None
        deidentifier = Deidentifier.open(args.deid_map, options, out_dir=args.out)
    elif args.deid_map is not None or args.deid_option:
        raise InputError("--deid-map and --deid-option only apply with --deidentify")
    named = expand_sources(named, args.server)
    check_out_dir(args.out, [p for p in named if not is_remote(p)])
    local, unfetched = fetch_sources(named, args.cache_dir, args.aet, progress=not args.quiet,
                                     move_port=args.move_port)
    check_out_dir(args.out, local)
    studies = (discover_studies(local) if local else []) + unfetched
    if rows:
        from medcf.editing.options import chosen_settings

        # blank plan cells take the command line's values, and the bundle's configs/edit.json where it is silent
        defaults = chosen_settings(args)
        items = items_from_plan(rows, studies, args.plan, defaults)
    elif reports:
        from medcf.batch.plan import items_from_reports
        from medcf.vocab import Action, Finding, Side

        # the findings, sides, zones and severities come from each report; the rest from the options
        base = spec_from_args(args, Finding.PLEURAL_EFFUSION.value, Side.LEFT.value)
        items, silent = items_from_reports(reports, studies, args.from_report, Action(args.action), base,
                                           evidence=not args.deidentify)
        if silent:
            print(f"medcf: {len(silent)} report(s) state no present, certain finding to {args.action} (--from-report "
                  f"line(s) {', '.join(silent[:10])}{', …' if len(silent) > 10 else ''}): those studies get no edit",
                  file=sys.stderr)
    else:
        items = items_from_spec(studies, spec_from_args(args))
    from dataclasses import replace

    engine = None
    if args.ray is None:  # a wrong segmenter fails before any edit
        segmenter = recipe.load_segmenter(placement)
    else:  # the workers place their own copies (their GPUs): here only the check that it loads
        replace(recipe, device="cpu", dtype="float32").load_segmenter()
        segmenter = None

    def editor():
        return recipe.load(segmenter)

    if args.ray is not None:  # only now is anything of Ray imported
        from medcf.onray.batch import RayEngine

        engine = RayEngine(args.ray, recipe, args.ray_workers)
    send = SendOptions(args.send, args.aet, args.send_retries, args.send_wait) if args.send else None
    command = "medcf " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    report = run_batch(items, args.out, editor, sop_class=args.sop_class, accept_anatomy=args.accept_anatomy,
                       send=send, deidentifier=deidentifier, allow_burned_in=args.allow_burned_in,
                       progress=not args.quiet, command=None if deidentifier else command, engine=engine)
    print(report.summary())
    if report.failed or report.skipped:
        print(f"medcf: {report.failed} failed and {report.skipped} skipped item(s); their manifest lines say why, "
              "and rerunning the same command tries them again", file=sys.stderr)
        return 1
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from medcf.batch.sources import expand_sources, pull
    from medcf.errors import InputError
    from medcf.io.pacs import is_remote

    check_move_port(args)
    addresses = expand_sources(args.sources, args.server)
    local = [a for a in addresses if not is_remote(a)]
    if local:
        raise InputError(f"{local[0]} is not a study address or a study list (.csv); medcf pull fetches from servers")
    report = pull(addresses, args.cache_dir, args.aet, progress=not args.quiet, move_port=args.move_port)
    for address, folder in report.fetched:
        print(f"{folder}\t{address}")
    for address, reason in report.failed:
        print(f"medcf: not fetched: {address}: {reason}", file=sys.stderr)
    return 1 if report.failed else 0


def check_move_port(args: argparse.Namespace) -> None:
    from medcf.errors import InputError

    if args.move_port is not None and not 0 < args.move_port < 65536:
        raise InputError(f"--move-port {args.move_port}: a TCP port, 1-65535")


def add_move_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--move-port", type=int, metavar="PORT",
                        help="retrieve DIMSE studies by C-MOVE instead of C-GET: listen on PORT as --aet, which the "
                             "server must list (AE title, this host, PORT) among its destinations")


def add_pull_parser(sub: argparse._SubParsersAction) -> None:
    pull = sub.add_parser(
        "pull", help="fetch studies from a DICOM server into the cache (C-GET, C-MOVE or WADO-RS), with progress",
        description="Fetch studies by address (dicom://AET@host:port/<uid>, …/?AccessionNumber=…, "
                    "…/?PatientID=…, http(s)://…/dicom-web/studies/<uid>) or by a study list LIST.csv ('study' "
                    "column of UIDs or addresses, or 'accession') on --server, into the cache that `medcf inspect`, "
                    "`medcf edit` and `medcf batch` read. Instances already cached are kept. Prints one line per "
                    "study: its cache folder and address. A study that cannot be fetched is reported on stderr "
                    "and the exit status is 1; the others are still fetched.",
        epilog=EPILOG)
    pull.add_argument("sources", nargs="+", metavar="STUDY", help="study address(es) or study list(s) (.csv)")
    pull.add_argument("--server", metavar="URL", help="the server a study list's bare UIDs and accession numbers are on")
    pull.add_argument("--cache-dir", type=Path, default=None,
                      help="where studies go (default $MEDCF_CACHE/studies or ~/.cache/medcf/studies)")
    pull.add_argument("--aet", default="MEDCF", help="our (calling) AE title for DIMSE (default MEDCF)")
    add_move_option(pull)
    pull.add_argument("--quiet", action="store_true", help="no progress bar")
    pull.set_defaults(func=cmd_pull)


def add_batch_parser(sub: argparse._SubParsersAction) -> None:
    from medcf.commands.edit import _edit_options
    from medcf.editing.options import EditCommand
    from medcf.onray.options import add_ray_options

    batch = sub.add_parser(
        "batch", help="many studies x many edits: resumable, with a manifest, optional send and de-identification",
        description="Edit every study under the SOURCEs (study folders, folders of studies, DICOM files, or study "
                    "addresses as for `medcf inspect`) with the edit the options name, or with the edits of a plan "
                    "(PLAN.csv columns: study, finding, action, side, zone, severity, method, seed; study = a Study "
                    "Instance UID under the sources or a path relative to the plan; blank cells take the command "
                    "line's values). Each (study, edit) is one call of the function `medcf edit` uses, written to "
                    "OUT/<study uid>/<edit>/ (dicom/, panel.png, masks/, edit.json) through a temporary folder and "
                    "a rename, and then recorded in OUT/manifest.jsonl (key, source, status, outputs, error, "
                    "seconds). A failure does not stop the run; rerunning the same command does only what is not "
                    "done yet.",
        epilog=EPILOG)
    batch.add_argument("sources", nargs="*", metavar="SOURCE", help="study folder(s), folder(s) of studies, "
                       "DICOM files, study addresses (dicom://AET@host:port/<uid>, http(s)://…/studies/<uid>), or a "
                       "study list LIST.csv (column 'study' = Study Instance UID or address, or 'accession') "
                       "fetched from --server")
    _edit_options(batch, EditCommand.BATCH, action_required=False)
    batch.add_argument("--plan", type=Path, metavar="PLAN.csv", help="the edits, one row each (instead of --finding)")
    batch.add_argument("--from-report", type=Path, metavar="REPORTS.csv",
                       help="the edits from each study's report: columns study (Study Instance UID, or a path "
                            "relative to the CSV) and report (its free text); one edit per present, certain, "
                            "editable finding, with --action and the other options (as `medcf edit --from-report`). "
                            "A report naming none is listed on stderr and its study not edited")
    batch.add_argument("--out", type=Path, required=True,
                       help="output folder: new, or the folder of an earlier run of this batch (resume)")
    batch.add_argument("--sop-class", choices=["sc", "dx"], default="sc",
                       help="DICOM output: Secondary Capture (default) or DX For Presentation")
    batch.add_argument("--accept-anatomy", action="store_true",
                       help="edit even if the anatomy fails the plausibility check (recorded in edit.json)")
    batch.add_argument("--segmenter", default=None, help="anatomy segmenter (default medcf)")
    batch.add_argument("--weights", type=Path, default=None, help="local weights file for --segmenter")
    batch.add_argument("--send", metavar="URL",
                       help="store each result on a server: dicom://AET@host:port (C-STORE) or http(s)://…/dicom-web "
                            "(STOW-RS); recorded in the manifest")
    batch.add_argument("--send-retries", type=int, default=3, help="attempts per item for --send (default 3)")
    batch.add_argument("--send-wait", type=float, default=1.0,
                       help="seconds before the second attempt, doubling after (default 1)")
    batch.add_argument("--server", metavar="URL",
                       help="the server a study list's bare UIDs and accession numbers are on: dicom://AET@host:port "
                            "(C-FIND + C-GET) or http(s)://…/dicom-web (QIDO-RS + WADO-RS); fetched into --cache-dir")
    batch.add_argument("--aet", default="MEDCF", help="our (calling) AE title for DIMSE (default MEDCF)")
    add_move_option(batch)
    batch.add_argument("--cache-dir", type=Path, default=None, help="where studies fetched from a server are kept")
    batch.add_argument("--deidentify", action="store_true",
                       help="de-identify every result (DICOM PS3.15 Basic Application Level Confidentiality Profile "
                            "with the Clean Descriptors Option; docs/batch.md); needs --deid-map")
    batch.add_argument("--deid-map", type=Path, metavar="FILE",
                       help="pseudonym table (JSON; created if missing, reused and extended otherwise): original "
                            "patient IDs and UIDs -> pseudonyms. It identifies patients: keep it outside --out")
    batch.add_argument("--deid-option", action="append", metavar="OPTION",
                       help="a PS3.15 option to apply as well: retain-patient-characteristics, "
                            "retain-device-identity, retain-institution-identity (repeatable)")
    batch.add_argument("--allow-burned-in", action="store_true",
                       help="with --deidentify, also export sources marked Burned In Annotation = YES (their text "
                            "stays in the pixels; skipped by default)")
    add_ray_options(batch)
    batch.set_defaults(func=cmd_batch)
