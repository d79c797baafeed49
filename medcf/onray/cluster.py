"""Joining or starting a Ray cluster, starting the editor actors, and keeping a bounded
number of calls in flight on them.

Why actors and not tasks: an editor (diffusion model, segmenter, steering vectors) takes
seconds to load and an edit well under that on a GPU; an actor loads it once per worker.
A killed worker is survived by Ray itself: the actor is restarted (``max_restarts``) and
the calls it had in flight are run again on the new process (``max_task_retries``). Each
call returns its outputs as bytes to the driver, which alone publishes them, so a call run
twice is still published once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from medcf.errors import InputError, MedCFError
from medcf.onray.address import LOCAL, LOOPBACK_HOSTS, check_address
from medcf.onray.worker import EditorWorker

RESTARTS = 3  # per actor: a worker killed more often than this fails its items (retried by the next run)
OBJECT_STORE_MB = 512  # for --ray local: results pass through it on their way to the driver


def import_ray():
    """Ray, or one line saying how to install it (an optional dependency: ``medcf[ray]``)."""
    try:
        import ray
    except ImportError:
        raise InputError("--ray needs the ray package: pip install 'medcf[ray]' (or ray==2.60.0)") from None
    return ray


@dataclass
class Cluster:
    """A connection this process opened (and, for ``local``, the cluster it started)."""

    address: str
    workers: int
    gpus_per_worker: float
    ship_inputs: bool  # True when workers may run on other machines: send them the input files too


# Ray replaces a loopback address by the machine's network address (which a cluster bound
# to loopback does not listen on) unless "Ray clusters" are off, i.e. single-machine, which
# is what a loopback cluster is; this environment variable is Ray's switch for that.
_LOOPBACK_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextmanager
def connect(address: str, workers: int | None = None, object_store_mb: int = OBJECT_STORE_MB) -> Iterator[Cluster]:
    """``local``: start a cluster on this machine, on loopback, with ``workers`` CPUs (default:
    all); else join the cluster at ``address`` (``host:port`` or ``ray://host:port``). One
    worker per GPU when the cluster has GPUs, else one per CPU, unless ``workers`` says
    fewer. The connection (and a local cluster) is closed on exit, whatever happened."""
    if workers is not None and workers < 1:
        raise InputError(f"--ray-workers {workers}: at least 1")
    loopback = address == LOCAL or check_address(address) in LOOPBACK_HOSTS
    ray = import_ray()
    saved = {name: os.environ.get(name) for name in ("RAY_USAGE_STATS_ENABLED", _LOOPBACK_SWITCH)}
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report leaves the machine
    if loopback:
        os.environ[_LOOPBACK_SWITCH] = "0"
    try:
        try:
            if address == LOCAL:
                ray.init(address="local", num_cpus=workers or os.cpu_count() or 1, include_dashboard=False,
                         _node_ip_address="127.0.0.1", object_store_memory=object_store_mb * 2 ** 20,
                         log_to_driver=False, configure_logging=False)
            else:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
        except Exception as error:  # noqa: BLE001 - Ray raises several types for a cluster it cannot use
            ray.shutdown()
            raise InputError(f"--ray {address}: could not {'start a local' if address == LOCAL else 'join the'} "
                             f"Ray cluster: {_first_line(error)}") from None
        try:
            resources = ray.cluster_resources()
            gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
            capacity = gpus or cpus
            if capacity < 1:
                raise InputError(f"--ray {address}: the cluster has no CPU or GPU to run an editor on")
            if workers is not None and workers > capacity:
                raise InputError(f"--ray-workers {workers}: the cluster at {address} has room for {capacity} "
                                 f"({'GPUs' if gpus else 'CPUs'})")
            yield Cluster(address, workers or capacity, 1.0 if gpus else 0.0, ship_inputs=address != LOCAL)
        finally:
            ray.shutdown()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:300]


def start_workers(cluster: Cluster, recipe) -> list:
    """One :class:`medcf.onray.worker.EditorWorker` actor per worker, each loading
    ``recipe`` (:class:`medcf.editing.api.EditorRecipe`) once; waits until every one has
    loaded it, so that a wrong model is one line here, not a failure per item."""
    ray = import_ray()
    remote = ray.remote(EditorWorker).options(num_cpus=0 if cluster.gpus_per_worker else 1,
                                              num_gpus=cluster.gpus_per_worker, max_restarts=RESTARTS,
                                              max_task_retries=RESTARTS)
    actors = [remote.remote(recipe) for _ in range(cluster.workers)]
    try:
        ray.get([actor.identity.remote() for actor in actors])
    except Exception as error:  # noqa: BLE001 - the creation error arrives wrapped by Ray
        raise worker_error(error, "a Ray worker could not load the editor") from None
    return actors


def worker_error(error: BaseException, what: str) -> MedCFError:
    """A Ray error as one line; MedCF's own error (a wrong model, say) keeps its message."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, MedCFError):
        return type(cause)(f"{what}: {cause}")
    return MedCFError(f"{what}: {type(error).__name__}: {_first_line(error)}")


@dataclass
class ActorQueue:
    """Calls on a pool of actors, at most ``per_actor`` in flight on each (so results come
    back while the rest waits, and a killed worker has little to redo); each call goes to
    the least busy actor, each result comes back with the payload it was submitted with."""

    actors: list
    per_actor: int = 2
    _flight: dict = field(default_factory=dict)  # ObjectRef -> (payload, actor index)
    _busy: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self._busy = [0] * len(self.actors)

    @property
    def has_room(self) -> bool:
        return len(self._flight) < self.per_actor * len(self.actors)

    @property
    def pending(self) -> int:
        return len(self._flight)

    def submit(self, payload: Any, method: str, *args: Any) -> None:
        index = min(range(len(self.actors)), key=self._busy.__getitem__)
        reference = getattr(self.actors[index], method).remote(*args)
        self._flight[reference] = (payload, index)
        self._busy[index] += 1

    def next(self) -> tuple[Any, Any]:
        """The next finished call: (payload, its result), or (payload, the exception) when
        its worker was lost for good (restarts used up)."""
        ray = import_ray()
        (reference,), _ = ray.wait(list(self._flight), num_returns=1)
        payload, index = self._flight.pop(reference)
        self._busy[index] -= 1
        try:
            return payload, ray.get(reference)
        except Exception as error:  # noqa: BLE001 - RayActorError and friends: reported per item
            return payload, error
