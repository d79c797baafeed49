"""``medcf batch --ray``: the batch's edits on Ray actors; publishing and the manifest stay
with :func:`medcf.batch.runner.run_batch` in the driver (one mechanism for both engines)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from medcf.batch.runner import EditOptions, EditResult, Ticket
from medcf.onray.cluster import ActorQueue, connect, start_workers, worker_error


class RayEngine:
    """Runs a batch's edits on ``workers`` actors of the cluster at ``address`` (``local``:
    one started on this machine). Joins the cluster and loads the editors only at the first
    edit (a resumed run with nothing left to edit touches no cluster). Results are written
    into the ticket's ``.partial`` folder by the driver as each comes back."""

    def __init__(self, address: str, recipe, workers: int | None = None, per_actor: int = 2):
        self.address, self.recipe, self.workers, self.per_actor = address, recipe, workers, per_actor

    def run(self, tickets: Iterable[Ticket], options: EditOptions) -> Iterator[tuple[Ticket, EditResult | None]]:
        tickets = iter(tickets)
        for ticket in tickets:  # everything decided before editing passes straight through
            if ticket.edit:
                break
            yield ticket, None
        else:
            return
        with connect(self.address, self.workers) as cluster:
            queue = ActorQueue(start_workers(cluster, self.recipe), self.per_actor)
            waiting: Ticket | None = ticket
            while waiting is not None or queue.pending:
                while waiting is not None and queue.has_room:
                    if waiting.edit:
                        source = Path(waiting.item.study.selected).read_bytes() if cluster.ship_inputs else None
                        queue.submit(waiting, "edit", waiting.item, options, source)
                    else:
                        yield waiting, None
                    waiting = next(tickets, None)
                if queue.pending:
                    ticket, answer = queue.next()
                    yield ticket, _result(ticket, answer)


def _result(ticket: Ticket, answer) -> EditResult:
    """A worker's answer as the driver's :class:`EditResult`, its files put in ``.partial``."""
    if isinstance(answer, BaseException):
        return EditResult(error=str(worker_error(answer, "the Ray worker was lost")))
    if answer.get("error") is not None:
        return EditResult(error=answer["error"], worker=answer["worker"])
    for relative, data in answer["files"].items():
        path = ticket.partial / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return EditResult(seconds=answer["seconds"], worker=answer["worker"])
