"""The grammar of an options schema: what a dataclass field says about the option it is.

:class:`~medcf.editing.spec.EditSpec` states every edit option once, as a field whose
metadata holds an :class:`OptionSpec`: the field gives the name, the type and the default,
the ``OptionSpec`` the help, the range, the scope and what leaving the option out means.
:func:`options_of` reads that statement into :class:`Option` objects, and everything that
offers an edit option reads those: the command lines (:mod:`medcf.editing.options`), the
bundle's ``configs/edit.json`` (:mod:`medcf.editing.config`), the batch plan's cells, and,
as data (``medcf options --json``), the Slicer panel and the MONAI Label app, which run in
other Python environments. Validation lives here too (:meth:`Option.check`), so a range is
checked in one place whichever door a value came in by.
"""

from __future__ import annotations

import dataclasses
import numbers
import types
import typing
from dataclasses import MISSING, dataclass
from typing import Any

from medcf.errors import InputError
from medcf.vocab import StrEnum

METADATA_KEY = "option"  # the key of a field's metadata that holds its OptionSpec


class Scope(StrEnum):
    """Who sets an option: it says which doors offer it and whether a config may default it."""

    EDIT = "edit"  # what one edit is (finding, action, side, zone, seed): given per edit, never a config default
    SETTING = "setting"  # how the editor works: a bundle's configs/edit.json may change its default
    PAIRS = "pairs"  # only for pairs sampled from scratch (medcf pairs)


class Kind(StrEnum):
    """The value an option takes, as a command line and a JSON reader see it."""

    CHOICE = "choice"
    FLOAT = "float"
    INT = "int"
    FLAG = "flag"


@dataclass(frozen=True)
class Range:
    """The closed interval ``low..high``, or ``(low, high]`` when ``low_open``."""

    low: float
    high: float
    low_open: bool = False

    def __contains__(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        return above and value <= self.high

    def describe(self) -> str:
        return f"({self.low:g}, {self.high:g}]" if self.low_open else f"{self.low:g}..{self.high:g}"


@dataclass(frozen=True)
class OptionSpec:
    """What a field's type and default do not say about its option.

    ``unset``: what leaving out an option whose default is None means (who decides
    instead); None where leaving it out is no answer for most edits (``side``)."""

    help: str
    scope: Scope = Scope.SETTING
    range: Range | None = None
    unset: str | None = None

    def field(self, default: Any = MISSING) -> Any:
        """A dataclass field with ``default`` that carries this spec."""
        return dataclasses.field(default=default, metadata={METADATA_KEY: self})


@dataclass(frozen=True)
class Option:
    """One option as the schema states it: read from a dataclass field by :func:`options_of`."""

    name: str
    kind: Kind
    default: Any  # MISSING: no default (the option must be given)
    optional: bool  # None is a value (left to ``unset``)
    spec: OptionSpec
    choices: type[StrEnum] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def required(self) -> bool:
        return self.default is MISSING

    @property
    def values(self) -> list[str]:
        """The choices as spelled on a command line (empty for an option without choices)."""
        return [member.value for member in self.choices] if self.choices else []

    def check(self, value: Any) -> Any:
        """``value`` parsed (a choice's member) and checked against the option's type and
        range; a one-line :class:`InputError` naming the flag otherwise."""
        if value is None and self.optional:
            return None
        if self.kind is Kind.CHOICE:
            if isinstance(value, self.choices):
                return value
            try:
                return self.choices.parse(str(value))
            except ValueError as error:
                raise InputError(f"{self.flag}: {error}") from None
        if self.kind is Kind.FLAG:
            if not isinstance(value, (bool, int)) or value not in (0, 1):
                raise InputError(f"{self.flag}: {value!r} is not true or false")
            return value
        wanted = numbers.Integral if self.kind is Kind.INT else numbers.Real
        if isinstance(value, bool) or not isinstance(value, wanted):
            raise InputError(f"{self.flag}: {value!r} is not {'an integer' if self.kind is Kind.INT else 'a number'}")
        if self.spec.range is not None and value not in self.spec.range:
            raise InputError(f"{self.flag} {value:g} is outside {self.spec.range.describe()}")
        return value

    def from_text(self, text: str) -> Any:
        """A value written as text (a plan's cell), checked; a one-line error otherwise."""
        if self.kind is Kind.CHOICE:
            return self.check(text)
        if self.kind is Kind.FLAG:
            words = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
            if text.strip().lower() not in words:
                raise InputError(f"{self.flag}: {text!r} is not true or false")
            return words[text.strip().lower()]
        try:
            value = int(text) if self.kind is Kind.INT else float(text)
        except ValueError:
            raise InputError(f"{self.name} {text!r} is not {'an integer' if self.kind is Kind.INT else 'a number'}") \
                from None
        return self.check(value)

    def describe_default(self) -> str:
        """The default in words, for help texts."""
        if self.required:
            return "none (required)"
        if self.default is None:
            return self.spec.unset or "none"
        if self.kind is Kind.FLAG:
            return "on" if self.default else "off"
        return str(self.default) if not isinstance(self.default, float) else f"{self.default:g}"

    def to_json(self) -> dict[str, Any]:
        """The option as data, for readers that do not import medcf (the Slicer module,
        the MONAI Label app): ``medcf options --json``."""
        entry: dict[str, Any] = {"name": self.name, "flag": self.flag, "kind": self.kind.value,
                                 "scope": self.spec.scope.value, "required": self.required}
        if not self.required:
            entry["default"] = self.default.value if isinstance(self.default, StrEnum) else self.default
        if self.choices:
            entry["choices"] = self.values
        if self.spec.range is not None:
            entry["range"] = dataclasses.asdict(self.spec.range)
        entry["help"] = self.spec.help
        if self.spec.unset is not None:
            entry["unset"] = self.spec.unset
        return entry


def options_of(cls: type) -> tuple[Option, ...]:
    """The options a dataclass states: each field whose metadata holds an :class:`OptionSpec`,
    in field order; its kind and choices come from the field's type annotation."""
    hints = typing.get_type_hints(cls)
    options = []
    for field in dataclasses.fields(cls):
        spec = field.metadata.get(METADATA_KEY)
        if spec is None:
            continue
        kind, choices, optional = _kind(hints[field.name], f"{cls.__name__}.{field.name}")
        options.append(Option(field.name, kind, field.default, optional, spec, choices))
    return tuple(options)


def _kind(annotation: Any, where: str) -> tuple[Kind, type[StrEnum] | None, bool]:
    """(kind, choices, optional) of a field's annotation: ``X`` or ``X | None``."""
    optional = False
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(members) < len(typing.get_args(annotation))
        if len(members) != 1:
            raise TypeError(f"{where}: an option is one type, optionally None, not {annotation}")
        annotation = members[0]
    if isinstance(annotation, type) and issubclass(annotation, StrEnum):
        return Kind.CHOICE, annotation, optional
    kinds = {bool: Kind.FLAG, int: Kind.INT, float: Kind.FLOAT}
    if annotation not in kinds:
        raise TypeError(f"{where}: an option is a StrEnum, bool, int or float, not {annotation}")
    return kinds[annotation], None, optional
