"""Report reader: chest radiograph report text -> findings (present, uncertain,
side, zone, severity, evidence) in one fixed schema.

>>> from medcf.text import parse_report
>>> parse_report("FINDINGS: Small left pleural effusion.")["findings"][0]["laterality"]
'left'

Backends share one interface (``parse(text)`` and ``parse_many(texts)``
returning :class:`~medcf.text.schema.Mention` lists): ``rules`` (default,
offline, deterministic; :mod:`medcf.text.rules`) and ``llm`` (opt-in,
OpenAI-compatible endpoint; :mod:`medcf.text.llm`). See docs/reports.md.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Protocol

from medcf.errors import InputError
from medcf.text.editable import EditableFinding, editable_findings
from medcf.text.llm import LLMConfig, LLMReader
from medcf.text.rules import RuleReader
from medcf.text.schema import Mention, report_to_dict, validate_report

__all__ = ["EditableFinding", "Mention", "ReportReader", "editable_findings", "get_reader", "parse_report",
           "report_to_dict", "validate_report"]


class ReportReader(Protocol):
    name: str

    def parse(self, text: str) -> list[Mention]: ...

    def parse_many(self, texts): ...


@lru_cache(maxsize=1)
def _rule_reader():
    return RuleReader()


def get_reader(backend: str = "rules", **llm_options: Any) -> ReportReader:
    """``rules`` (shared, built once) or ``llm`` (options: base_url, model, api_key_env)."""
    if backend == "rules":
        return _rule_reader()
    if backend == "llm":
        return LLMReader(LLMConfig.from_env(**llm_options))
    raise InputError(f"unknown report reader backend {backend!r}; choose rules or llm")


def parse_report(text: str, backend: str = "rules", **llm_options: Any) -> dict[str, Any]:
    """The schema's JSON object for one report."""
    return report_to_dict(get_reader(backend, **llm_options).parse(text))
