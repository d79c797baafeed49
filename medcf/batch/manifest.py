"""``manifest.jsonl``: one line per attempt at a (study, edit) key, appended only after
the item's outputs are in place.

Why append-only JSON lines: a crash can at worst leave a truncated last line, which
:meth:`Manifest.open` cuts off, so every complete line is true. A key is *done* once a
line with ``status: done`` exists; a resumed run skips done keys and retries the rest.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from medcf.errors import OutputError
from medcf.vocab import StrEnum

MANIFEST_NAME = "manifest.jsonl"


class ItemStatus(StrEnum):
    """What happened to one (study, edit) key in one attempt."""

    DONE = "done"  # outputs published (and sent, with --send); final
    FAILED = "failed"  # an error; retried by the next run
    SKIPPED = "skipped"  # refused by a policy before editing (e.g. burned-in text); re-evaluated next run


@dataclass
class ManifestLine:
    """The fields the issue asks for (key, source, status, outputs, error, seconds) plus
    what makes a line auditable: the edit's settings, the send record, when, which attempt,
    and (on Ray) which worker."""

    key: str
    source: str
    status: ItemStatus
    outputs: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    spec: dict | None = None
    sent: dict | None = None
    recovered: bool = False
    attempt: int = 1
    worker: dict | None = None  # with --ray: the node and process that made the edit
    time: float = field(default_factory=time.time)

    def to_json(self) -> str:
        record = asdict(self)
        record["status"] = self.status.value
        return json.dumps(record, sort_keys=False, default=str)


class Manifest:
    """The append-only manifest of one output folder."""

    def __init__(self, path: Path, lines: list[dict]):
        self.path = path
        self.lines = lines

    @classmethod
    def open(cls, out_dir: Path) -> "Manifest":
        """Read ``out_dir/manifest.jsonl`` (cutting off a line a crash left half-written)."""
        path = Path(out_dir) / MANIFEST_NAME
        lines: list[dict] = []
        if path.is_file():
            data = path.read_bytes()
            end = data.rfind(b"\n") + 1
            if end < len(data):  # a torn last line: never reported, so drop it
                with open(path, "r+b") as handle:
                    handle.truncate(end)
                data = data[:end]
            for number, raw in enumerate(data.decode("utf-8").splitlines(), 1):
                if not raw.strip():
                    continue
                try:
                    lines.append(json.loads(raw))
                except json.JSONDecodeError:
                    raise OutputError(f"{path} line {number} is not JSON; the manifest was edited by hand") from None
        return cls(path, lines)

    def latest(self) -> dict[str, dict]:
        """The last line per key, a done line winning over any later line (done is final)."""
        result: dict[str, dict] = {}
        for line in self.lines:
            previous = result.get(line["key"])
            if previous is not None and previous["status"] == ItemStatus.DONE.value:
                continue
            result[line["key"]] = line
        return result

    def done_keys(self) -> set[str]:
        return {k for k, v in self.latest().items() if v["status"] == ItemStatus.DONE.value}

    def attempts(self, key: str) -> int:
        return sum(1 for line in self.lines if line["key"] == key)

    def append(self, line: ManifestLine) -> None:
        """Append one line and fsync it: after this returns the line survives a crash."""
        text = line.to_json() + "\n"
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        self.lines.append(json.loads(text))

    def __iter__(self) -> Iterator[dict]:
        return iter(self.lines)
