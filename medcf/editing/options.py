"""Command-line options generated from the edit options schema (:data:`EDIT_OPTIONS`).

``medcf edit``, ``medcf pairs`` and ``medcf batch`` offer every option :class:`EditSpec`
states, and ``medcf bench --suite counterfactual`` the settings it may override for
MedCF's methods; all of them are added here, from the schema, so a flag's name, choices,
type and help cannot drift from the field it sets. Ranges are not checked by argparse:
:class:`EditSpec` checks every value (:meth:`Option.check`) whichever door it came in by
(a flag, the bundle's ``configs/edit.json``, a plan's cell, a library call), with one
message.

Defaults: an editor setting (:attr:`Scope.SETTING`) is None on the command line and filled
when the command runs from the bundle's ``configs/edit.json``, which falls back to the
schema's default (:func:`chosen_settings`), so one config serves every entry point; an
option that describes one edit (:attr:`Scope.EDIT`) takes the schema's default directly.

Generated options that belong to one consumer get a namespaced ``dest``
(``PREFIX.name``, read back only by :func:`namespaced_values`), so that one command's
options can never be read as another's.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from medcf.editing.config import EditSettings, load_edit_settings
from medcf.editing.schema import Kind, Option, Scope
from medcf.editing.spec import EDIT_OPTIONS, OPTIONS, EditSpec
from medcf.errors import InputError
from medcf.vocab import StrEnum

SCHEMA_NAME = "medcf.edit-options/1"  # the JSON document's format, for its readers outside medcf


class EditCommand(StrEnum):
    """The commands that offer the edit options (each takes the options its scope allows)."""

    EDIT = "edit"
    PAIRS = "pairs"
    BATCH = "batch"


def offered(command: EditCommand) -> tuple[Option, ...]:
    """The options ``command`` offers: every option, and the pairs-only ones for pairs."""
    return tuple(o for o in EDIT_OPTIONS if o.spec.scope is not Scope.PAIRS or command is EditCommand.PAIRS)


def shown_settings() -> EditSettings:
    """The config's defaults for ``--help``; a broken config is reported when a command runs."""
    try:
        return load_edit_settings()
    except InputError:
        return EditSettings()


def add_edit_options(parser: argparse.ArgumentParser, command: EditCommand, finding_required: bool = False,
                     action_required: bool = True) -> None:
    """Every option ``command`` offers, generated from the schema. ``finding_required`` and
    ``action_required``: whether argparse itself demands them (a command that can take the
    findings from a report or a plan checks them when it runs)."""
    shown = shown_settings()
    required = {"finding": finding_required, "action": action_required}
    for option in offered(command):
        kwargs = _argument(option)
        if option.spec.scope is Scope.SETTING:
            # None here: the bundle's configs/edit.json fills it when the command runs
            kwargs["default"] = None
            kwargs["help"] = _help(option, _setting_default(option, shown))
        else:
            kwargs["default"] = None if option.required else option.default
            shown_default = option.required or (option.default is None and option.spec.unset is None)
            kwargs["help"] = _help(option, None if shown_default else option.describe_default())
        if option.name in required:
            kwargs["required"] = required[option.name]
        parser.add_argument(option.flag, **kwargs)


def chosen_settings(args: argparse.Namespace, settings: EditSettings | None = None) -> dict[str, Any]:
    """The :class:`EditSpec` keyword arguments the options of :func:`add_edit_options` ask
    for: each setting the command line left out comes from the bundle's configs/edit.json
    (``settings``; read here when not given), which falls back to the schema's default;
    with the seed and the methods' constants."""
    settings = settings or load_edit_settings()
    chosen = {o.name: getattr(args, o.name) if getattr(args, o.name) is not None else settings.default(o.name)
              for o in EDIT_OPTIONS if o.spec.scope is Scope.SETTING}
    return {**chosen, "seed": args.seed, "constants": settings.constants}


def spec_from_args(args: argparse.Namespace, finding: str | None = None, side: str | None = None) -> EditSpec:
    """The spec the options of :func:`add_edit_options` ask for. ``finding``/``side``: a
    base whose finding a report replaces (its zone is the report's, so the options' is dropped)."""
    return EditSpec(finding or args.finding, args.action, side or args.side, None if side else args.zone,
                    optimize_noise=bool(getattr(args, "optimize_noise", False)),
                    allow_out_of_domain=bool(getattr(args, "allow_out_of_domain", False)), **chosen_settings(args))


def add_namespaced_options(container, names: tuple[str, ...], prefix: str, purpose: str) -> list[argparse.Action]:
    """Settings ``names`` of the schema as options whose values land under ``PREFIX.name``
    (read them with :func:`namespaced_values`): e.g. the counterfactual suite's overrides
    of MedCF's methods. ``purpose`` starts each help text. Left out, a setting keeps
    :class:`EditSpec`'s default (not the bundle config's: a benchmark states its settings).
    Returns the actions added."""
    actions = []
    for name in names:
        option = OPTIONS[name]
        kwargs = _argument(option)
        kwargs.update(dest=f"{prefix}.{name}", default=None,
                      help=f"{purpose}: " + _help(option, option.describe_default()))
        if option.kind is not Kind.FLAG:
            kwargs["metavar"] = name.upper()
        actions.append(container.add_argument(option.flag, **kwargs))
    return actions


def namespaced_values(args: argparse.Namespace, prefix: str) -> dict[str, Any]:
    """The options under ``prefix`` that were given (name -> value), e.g. ``{"depth": 0.4}``."""
    start = prefix + "."
    return {dest[len(start):]: value for dest, value in vars(args).items()
            if dest.startswith(start) and value is not None}


def schema_document() -> dict[str, Any]:
    """The schema as data (``medcf options --json``): the Slicer module and the MONAI Label
    app run in other Python environments and read a committed copy of this, which a test
    keeps equal to it."""
    return {"schema": SCHEMA_NAME, "spec": f"{EditSpec.__module__}.{EditSpec.__qualname__}",
            "options": [option.to_json() for option in EDIT_OPTIONS]}


def schema_json() -> str:
    """:func:`schema_document` as the committed files hold it."""
    return json.dumps(schema_document(), indent=1, ensure_ascii=False) + "\n"


def schema_table() -> str:
    """The options one per line for a reader (``medcf options``): flag, kind, default, range."""
    lines = []
    for option in EDIT_OPTIONS:
        values = "|".join(option.values) if option.choices else option.kind.value
        limits = f" in {option.spec.range.describe()}" if option.spec.range else ""
        lines.append(f"{option.flag:17s} {values}{limits}; {option.spec.scope.value}; "
                     f"default {option.describe_default()}")
    return "\n".join(lines)


def _argument(option: Option) -> dict[str, Any]:
    """argparse keywords for ``option``'s kind (no default, no help)."""
    if option.kind is Kind.FLAG:
        return {"action": "store_true"}
    if option.kind is Kind.CHOICE:
        return {"choices": option.values}
    return {"type": int if option.kind is Kind.INT else float}


def _setting_default(option: Option, shown: EditSettings) -> str:
    value = shown.default(option.name)
    if value is None:
        return option.spec.unset or "none"
    if option.kind is Kind.FLAG:
        return ("on" if value else "off") + " (configs/edit.json)"
    return (f"{value:g}" if isinstance(value, float) else str(value)) + " (configs/edit.json)"


def _help(option: Option, default: str | None) -> str:
    """The schema's help, its range and the default (None: the option has none)."""
    text = option.spec.help
    if option.spec.range is not None:
        text += f"; in {option.spec.range.describe()}"
    return text + (f"; default: {default}" if default is not None else "")
