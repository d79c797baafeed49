"""Run a batch: each (study, edit) item once, published atomically, recorded in the manifest.

The order of one item is the whole exactly-once argument:

1. ``edit_file`` (the function ``medcf edit`` calls) writes into ``OUT/.partial/<random>/``;
2. with de-identification, that folder is de-identified in place and the pseudonym table
   is saved (fsync) *before* anything is published;
3. ``os.rename`` moves the folder to ``OUT/<key>/`` (atomic on one file system);
4. with ``--send``, the DICOM files of ``OUT/<key>/`` are stored, with bounded retries;
5. only then is the manifest line appended (fsync).

A kill before 3 leaves only ``.partial/``, removed by the next run; a kill between 3 and 5
leaves a complete folder without a line: the next run finds it, does not edit again,
sends it (a repeated C-STORE / STOW-RS of the same SOP Instance UID replaces the same
instance on the server) and writes the line, marked ``recovered``. Done keys are never
run again; failed and skipped keys are tried again.

Step 1 is an *engine*'s: :class:`LocalEngine` edits here, in order;
:class:`medcf.onray.batch.RayEngine` on Ray actors, whose files the driver writes into
``.partial/``. Steps 2-5 are always :func:`run_batch`'s, in this process: one mechanism,
and one writer of the output folder and the manifest, whatever ran the edits.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from medcf.batch.manifest import ItemStatus, Manifest, ManifestLine
from medcf.batch.plan import BatchItem
from medcf.editing import api
from medcf.errors import InputError, MedCFError, OutputError
from medcf.io.pacs import NetworkError, send

PARTIAL = ".partial"
LOCK = ".lock"


@dataclass
class BatchReport:
    """Counts of this run (``done`` counts keys finished now; ``already`` those done before)."""

    out_dir: Path
    manifest: Path
    total: int
    already: int = 0
    done: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    edit_seconds: list[float] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.total} item(s): {self.already} done before, {self.done} done now, {self.failed} failed, "
                f"{self.skipped} skipped; manifest {self.manifest}")


@dataclass(frozen=True)
class SendOptions:
    """Where results go and how hard to try: ``retries`` attempts in all, waiting
    ``wait`` s, then twice that, … between them (bounded: a dead server costs little)."""

    target: str
    calling_aet: str = "MEDCF"
    retries: int = 3
    wait: float = 1.0


def send_with_retries(folder: Path, options: SendOptions) -> dict:
    """Store every .dcm under ``folder`` with :func:`medcf.io.pacs.send`; retry network
    errors only (a refused object fails at once). Returns the record for the manifest;
    raises the last error, with the attempts in its message, when every try failed."""
    attempts = 0
    while True:
        attempts += 1
        try:
            report = send([folder], options.target, calling_aet=options.calling_aet)
            return {"to": options.target, "instances": report.sent, "attempts": attempts}
        except NetworkError as error:
            if attempts >= options.retries:
                raise NetworkError(f"send failed after {attempts} attempt(s): {error}") from None
            time.sleep(options.wait * 2 ** (attempts - 1))


def one_line(error: BaseException) -> str:
    """An error as one manifest line (MedCF's own messages as they are)."""
    text = " ".join(str(error).split())
    return text if isinstance(error, MedCFError) else f"{type(error).__name__}: {text or 'no message'}"


def _lock(out: Path):
    """One writer per output folder: a second ``medcf batch`` on it would break exactly-once."""
    handle = open(out / LOCK, "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise OutputError(f"another medcf batch is writing to {out}; wait for it or choose another --out") from None
    return handle


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _outputs(out: Path, folder: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in folder.rglob("*") if p.is_file())


def check_out_dir(out: Path, sources: Sequence[str | Path]) -> None:
    """The output folder may hold an earlier run of the same batch, never an input."""
    resolved = out.resolve()
    for source in sources:
        path = Path(source).resolve()
        if resolved == path or path in resolved.parents or resolved in path.parents:
            raise InputError(f"--out {out} overlaps the source {source}; MedCF never writes into its inputs")
    if out.exists() and (not out.is_dir()
                         or (any(out.iterdir()) and not (out / "manifest.jsonl").is_file())):
        raise OutputError(f"{out} exists and is not a medcf batch folder (no manifest.jsonl): choose a new --out")


@dataclass
class Ticket:
    """One item of this run on its way to a manifest line. ``edit`` False: decided before
    editing (refused, skipped, or already published by a killed run); True: an engine edits
    it into ``partial`` (``OUT/.partial/<random>/``), which only the driver publishes."""

    key: str
    item: BatchItem
    line: ManifestLine
    final: Path
    begin: float
    edit: bool
    partial: Path | None = None


@dataclass
class EditResult:
    """What an engine reports for an edited ticket: its one-line error (None: the edit's
    files are in ``ticket.partial``), the edit's seconds, and which worker made it."""

    error: str | None = None
    seconds: float = 0.0
    worker: dict | None = None


@dataclass(frozen=True)
class EditOptions:
    """The settings every edit of a batch shares (passed to every worker)."""

    sop_class: str = "sc"
    accept_anatomy: bool = False
    command: str | None = None


class Engine(Protocol):
    """Where edits run. ``run`` yields every ticket it is given exactly once, with an
    :class:`EditResult` for tickets to edit (None for the others), in any order; the driver
    publishes and records each as it comes, so results stream to the output folder."""

    def run(self, tickets: Iterable[Ticket], options: EditOptions) -> Iterator[tuple[Ticket, EditResult | None]]:
        ...


def edit_item(editor: object, source: Path, item: BatchItem, dest: Path, options: EditOptions) -> None:
    """The one edit of an item (:func:`medcf.editing.api.edit_file`, as ``medcf edit``),
    written into ``dest``, a folder that does not exist yet. Every engine calls this."""
    extra = {"batch": {"key": item.key}, **({"report": item.report} if item.report else {})}
    api.edit_file(source, [item.spec], dest, editor, progress=False, command=options.command,
                  extras=[extra], sop_class=options.sop_class,
                  accept_anatomy=options.accept_anatomy)


class LocalEngine:
    """Edits in this process, one after another, in order; the editor is loaded at the
    first edit (a run with nothing left to edit never loads the model)."""

    def __init__(self, editor: Callable[[], object] | object):
        self._editor = editor
        self._loaded = None

    def run(self, tickets: Iterable[Ticket], options: EditOptions) -> Iterator[tuple[Ticket, EditResult | None]]:
        for ticket in tickets:
            if not ticket.edit:
                yield ticket, None
                continue
            try:
                if self._loaded is None:
                    self._loaded = self._editor() if callable(self._editor) else self._editor
                ticket.partial.parent.mkdir(parents=True, exist_ok=True)
                edit_item(self._loaded, ticket.item.study.selected, ticket.item, ticket.partial, options)
                result = EditResult(seconds=time.monotonic() - ticket.begin)
            except KeyboardInterrupt:
                raise  # nothing of this item is reported; .partial/ is cleared by the next run
            except Exception as error:  # noqa: BLE001 - one item's failure never stops the batch
                result = EditResult(error=one_line(error))
            yield ticket, result


def run_batch(items: Sequence[BatchItem], out_dir: str | Path, editor: Callable[[], object] | object | None = None,
              *, sop_class: str = "sc", accept_anatomy: bool = False, send: SendOptions | None = None,
              deidentifier=None, allow_burned_in: bool = False, progress: bool = True,
              command: str | None = None, engine: Engine | None = None) -> BatchReport:
    """Run every item not yet done in ``out_dir`` (see the module docstring for the order
    that makes this resumable). ``editor`` is a loaded :class:`~medcf.editing.api.Editor`
    or a function that loads one: it is called only if something is left to do.
    ``engine`` runs the edits elsewhere (:class:`medcf.batch.on_ray.RayEngine`); this
    function stays the only writer of the output folder's published items and manifest.
    ``deidentifier`` (:class:`medcf.io.deidentify.Deidentifier`) de-identifies every
    result before it is published, and keys and manifest then name studies only by
    their pseudonymous UIDs."""
    from tqdm import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.jsonl").touch()  # from now on a rerun recognises the folder as this batch's
    started = time.monotonic()
    lock = _lock(out)
    try:
        shutil.rmtree(out / PARTIAL, ignore_errors=True)  # a killed run's unpublished work
        manifest = Manifest.open(out)
        keyed = [(deidentifier.public_key(item) if deidentifier else item.key, item) for item in items]
        if deidentifier is not None:
            deidentifier.save()  # manifest lines name studies by these pseudonyms: keep them
        latest = manifest.latest()
        for key, item in keyed:
            earlier = latest.get(key)
            if earlier is not None and earlier["status"] == ItemStatus.DONE.value and earlier.get("spec") \
                    and earlier["spec"] != item.spec.to_dict():
                raise InputError(f"{key} was done in {out} with other settings ({_diff(earlier['spec'], item.spec.to_dict())}); "
                                 "use a new --out for new settings")
        done = manifest.done_keys()
        todo = [(key, item) for key, item in keyed if key not in done]
        report = BatchReport(out, manifest.path, len(items), already=len(items) - len(todo))
        tickets = (_ticket(out, manifest, key, item, deidentifier, allow_burned_in) for key, item in todo)
        engine = engine or LocalEngine(editor)
        options = EditOptions(sop_class, accept_anatomy, command)
        # closing(): an interrupted run also closes the engine (and a cluster it started) at once
        with tqdm(total=len(todo), desc="medcf batch", unit="edit", disable=not progress or not todo) as bar, \
                closing(engine.run(tickets, options)) as results:
            for ticket, result in results:
                line = _finish(out, ticket, result, deidentifier, allow_burned_in, send, report)
                manifest.append(line)
                setattr(report, line.status.value, getattr(report, line.status.value) + 1)
                bar.update()
        report.seconds = time.monotonic() - started
        return report
    finally:
        lock.close()


def _ticket(out: Path, manifest: Manifest, key: str, item: BatchItem, deidentifier, allow_burned_in: bool) -> Ticket:
    """What the driver decides about an item before any edit: refusals, and folders a killed
    run published without a line (recovered: sent and recorded, never edited again)."""
    source = deidentifier.public_source(item) if deidentifier else str(item.study.selected or item.study.source)
    line = ManifestLine(key, source, ItemStatus.FAILED, spec=item.spec.to_dict(), attempt=manifest.attempts(key) + 1)
    ticket = Ticket(key, item, line, out / key, time.monotonic(), edit=False)
    if item.study.selected is None:
        line.error = one_line(InputError(f"nothing to edit in study {key.split('/')[0]}: {item.study.reason}"))
    elif item.study.burned_in and deidentifier is not None and not allow_burned_in:
        line.status = ItemStatus.SKIPPED  # its text would survive de-identification in the pixels
        line.error = one_line(InputError("the source says Burned In Annotation = YES: its text would be in the "
                                         "de-identified output; use --allow-burned-in to export it anyway"))
    elif ticket.final.is_dir():
        line.recovered = True  # published by a run killed before its manifest line
    else:
        ticket.edit, ticket.partial = True, out / PARTIAL / uuid.uuid4().hex
    return ticket


class _EditFailed(Exception):
    """An engine's one-line error, carried to the manifest line as it is."""


def _finish(out: Path, ticket: Ticket, result: EditResult | None, deidentifier, allow_burned_in: bool,
            send: SendOptions | None, report: BatchReport) -> ManifestLine:
    """Publish an edited ticket (de-identify, rename), send it, and complete its line: steps
    2-4 of the module docstring, the same whichever engine edited it."""
    line = ticket.line
    if line.error is None:  # not refused before editing
        try:
            if result is not None:
                line.worker = result.worker
                if result.error is not None:
                    raise _EditFailed(result.error)
                report.edit_seconds.append(result.seconds)
                if deidentifier is not None:
                    deidentifier.apply_to_edit_folder(ticket.partial, ticket.item, allow_burned_in)
                ticket.final.parent.mkdir(parents=True, exist_ok=True)
                os.rename(ticket.partial, ticket.final)  # the publication: atomic, and final cannot half-exist
                _fsync_dir(ticket.final.parent)
            line.outputs = _outputs(out, ticket.final)
            if send is not None:
                line.sent = send_with_retries(ticket.final / "dicom", send)
            line.status = ItemStatus.DONE
        except KeyboardInterrupt:
            raise  # nothing of this item is reported; .partial/ is cleared by the next run
        except Exception as error:  # noqa: BLE001 - one item's failure never stops the batch
            line.error = str(error) if isinstance(error, _EditFailed) else one_line(error)
    if line.status is not ItemStatus.DONE and ticket.final.is_dir():
        line.outputs = _outputs(out, ticket.final)
    line.seconds = round(time.monotonic() - ticket.begin, 3)
    return line


def _diff(before: dict, now: dict) -> str:
    return ", ".join(f"{k} {before.get(k)!r} then, {now.get(k)!r} now" for k in sorted(now) if before.get(k) != now.get(k))
