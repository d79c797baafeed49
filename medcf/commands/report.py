"""``medcf report-parse``: the report reader on the command line.

Kept beside the reader so that medcf/cli.py only registers it (one line).
Three inputs: TEXT, ``--file F`` and ``--jsonl FILE`` (``-`` = stdin; one
``{"id": ..., "text": ...}`` per line -> one ``{"id": ..., "findings": [...]}``
per line, streamed, reports batched through spaCy for speed).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medcf.errors import InputError
from medcf.text.schema import report_to_dict

EPILOG = (
    "MedCF output is synthetic, for research only, never for diagnosis. "
    "Documentation: README.md and docs/reports.md in the MedCF repository."
)


def _reader(args: argparse.Namespace):
    from medcf.text import get_reader

    if args.backend == "llm":
        return get_reader("llm", base_url=args.llm_url, model=args.llm_model, api_key_env=args.llm_key_env)
    return get_reader("rules")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read ({type(error).__name__})") from None


def _jsonl_items(lines, source: str) -> Iterator[tuple[Any, str]]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"{source}:{number}: not JSON ({error.msg})") from None
        if not isinstance(item, dict) or "id" not in item or not isinstance(item.get("text"), str):
            raise InputError(f'{source}:{number}: expected {{"id": ..., "text": "..."}}')
        yield item["id"], item["text"]


def _run_jsonl(args: argparse.Namespace) -> int:
    reader = _reader(args)
    source = "stdin" if args.jsonl == "-" else args.jsonl
    if args.jsonl == "-":
        lines = sys.stdin
    else:
        path = Path(args.jsonl)
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        lines = path.open(encoding="utf-8")
    # Validate the whole input first: a bad line 900 must not leave 899 answers on stdout.
    items = list(_jsonl_items(lines, source))
    ids = [i for i, _ in items]
    for report_id, mentions in zip(ids, reader.parse_many(t for _, t in items)):
        print(json.dumps({"id": report_id, **report_to_dict(mentions)}))
    return 0


def cmd_report_parse(args: argparse.Namespace) -> int:
    given = [x for x in (args.text, args.file, args.jsonl) if x is not None]
    if len(given) != 1:
        raise InputError("give exactly one of TEXT, --file F or --jsonl FILE")
    if args.jsonl is not None:
        return _run_jsonl(args)
    text = args.text if args.text is not None else _read_text(args.file)
    mentions = _reader(args).parse(text)
    print(json.dumps(report_to_dict(mentions), indent=None if args.compact else 2))
    return 0


def add_report_parse_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "report-parse",
        help="read a radiology report: findings, negation, uncertainty, side, zone, severity (JSON)",
        description="Read a chest radiograph report and print its findings as JSON: "
                    '{"findings": [{"finding", "present", "uncertain", "laterality", "zone", "severity", '
                    '"evidence"}]}. Only FINDINGS/IMPRESSION (and text without headers) count; INDICATION, '
                    "HISTORY and COMPARISON are context. The default reader is rule-based, offline and "
                    "deterministic; --backend llm asks an OpenAI-compatible endpoint you configure. "
                    "Exit status 0, or 2 with a one-line error on stderr.",
        epilog=EPILOG,
    )
    parser.add_argument("text", nargs="?", metavar="TEXT", help="the report text (quote it)")
    parser.add_argument("--file", type=Path, metavar="F", help="read one report from a text file")
    parser.add_argument("--jsonl", metavar="FILE",
                        help='batch: lines {"id": ..., "text": ...} in FILE (- for stdin); prints one line '
                             '{"id": ..., "findings": [...]} per input line')
    parser.add_argument("--compact", action="store_true", help="one-line JSON for TEXT/--file")
    parser.add_argument("--backend", choices=("rules", "llm"), default="rules",
                        help="rules (default, offline) or llm (needs --llm-url and --llm-model)")
    parser.add_argument("--llm-url", metavar="URL",
                        help="base URL of an OpenAI-compatible server (default $MEDCF_LLM_URL); "
                             "/v1/chat/completions is appended")
    parser.add_argument("--llm-model", metavar="NAME", help="model name (default $MEDCF_LLM_MODEL)")
    parser.add_argument("--llm-key-env", metavar="VAR", default="MEDCF_LLM_API_KEY",
                        help="environment variable holding the API key (default MEDCF_LLM_API_KEY)")
    parser.set_defaults(func=cmd_report_parse)
    return parser
