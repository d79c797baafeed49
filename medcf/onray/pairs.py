"""``medcf pairs --ray``: pairs made by Ray actors, written by the driver as they come
(:func:`medcf.editing.pairs.write_pair_stream`, the writer of the plain command)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

from medcf.editing.pairs import spare_seeds
from medcf.editing.spec import EditSpec
from medcf.errors import InputError
from medcf.onray.cluster import ActorQueue, connect, start_workers, worker_error


def ray_pairs(address: str, recipe, specs: list[EditSpec], workers: int | None = None,
              max_tries: int = 3) -> Iterator[tuple[int, dict]]:
    """Pair ``i`` of ``specs[i]``, in the order they finish. A refused factual sample is
    replaced by the next spare seed after the run's seeds, as in the plain command (spares
    are handed out in the order refusals arrive, so with refusals the seeds can differ from a
    plain run's); a pair refused ``max_tries`` times stops the run."""
    spare = spare_seeds(specs)
    n = len(specs)
    with connect(address, workers) as cluster:
        queue = ActorQueue(start_workers(cluster, recipe))
        waiting = iter(range(n))
        index = next(waiting, None)
        while index is not None or queue.pending:
            while index is not None and queue.has_room:
                queue.submit((index, 1), "pair", specs[index])
                index = next(waiting, None)
            (number, tries), answer = queue.next()
            if isinstance(answer, BaseException):
                raise worker_error(answer, f"pair {number}: the Ray worker was lost")
            if "refused" in answer:
                if tries >= max_tries:
                    raise InputError(f"pair {number}: {max_tries} samples in a row were not read as frontal chest "
                                     "films; is the model a chest radiograph model?")
                queue.submit((number, tries + 1), "pair", replace(specs[number], seed=next(spare)))
                continue
            yield number, answer
