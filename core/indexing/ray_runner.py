"""Parts of films run on a Ray cluster (`castfinder index --ray`): Ray actors, each holding the
models loaded once (one GPU each when the cluster has GPUs, one CPU otherwise), fed one part at a
time by a dispatcher thread so that a free worker takes the next part whichever film it is of. A
worker lost mid-part (its process killed, its machine gone) costs that part alone: Ray restarts
the actor and the part runs again on the first free worker.

Ray is the optional extra castfinder[scale]; nothing imports this module without --ray.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import BadInputError, CastfinderError
from ..ray_cluster import endpoint, import_ray, unreachable
from ..settings import Settings
from .distributed import PartsStopped, PartWorker
from .parts import PartResult, Window

log = logging.getLogger(__name__)

LOCAL = ("", "local", "auto")  # start a cluster on this machine
PART_TRIES = 3  # a part whose worker is lost this many times fails its film
ACTOR_RESTARTS = 4
_POLL_S = 0.2  # how long the dispatcher waits on running parts before looking at new ones


class PartLostError(CastfinderError):
    """A part's worker was lost on every try."""


def loopback_only(ray: Any) -> None:
    """A cluster started here listens on 127.0.0.1 alone. Ray replaces a node address of 127.0.0.1
    with the machine's outward one (and then listens on every interface) unless it is told it may
    not form a cluster: its switch for that, read at import for this process and from the
    environment by the processes it starts."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray._private.ray_constants.ENABLE_RAY_CLUSTER = False


def check_reachable(address: str) -> None:
    """A cluster's address answers on TCP, or BadInputError at once (Ray itself would retry for a
    minute and then print a traceback)."""
    where = endpoint(address)
    if where is None:
        raise BadInputError(f"--ray {address!r} is not an address: give host:port of a Ray head (ray start --head "
                            "prints it), or --ray alone to start Ray on this machine.")
    why = unreachable(*where)
    if why is not None:
        raise BadInputError(f"--ray {address}: no Ray cluster answers there ({why}); start one with "
                            "`ray start --head`, or give --ray alone to start Ray on this machine.")


class PartActor:
    """A Ray actor's body: a PartWorker (models loaded once, here) in its own process."""

    def __init__(self, settings: Settings) -> None:
        if settings.torch_threads:
            import torch

            torch.set_num_threads(settings.torch_threads)
        self.worker = PartWorker(settings)

    def name(self) -> str:
        return f"{socket.gethostname()}:{os.getpid()}"

    def part(self, path: str, window: Window) -> PartResult:
        result = self.worker.part(Path(path), window)
        result.worker = self.name()
        return result


@dataclass
class _Job:
    path: Path
    window: Window
    future: Future[PartResult] = field(default_factory=Future)
    tries: int = 0


class RayRunner:
    """Runs parts on a Ray cluster: `address` as in CASTFINDER_RAY_ADDRESS (LOCAL: start one
    here, on 127.0.0.1). Use as a context manager: leaving it stops the workers, and the
    cluster when this runner started it."""

    def __init__(self, settings: Settings, address: str = "", *, workers: int = 0, cpus: int | None = None) -> None:
        self.ray = ray = import_ray(
            BadInputError("--ray needs Ray, which is not installed: pip install 'castfinder[scale]'"))
        self.address = address
        local = address.strip().lower() in LOCAL
        if not local:
            check_reachable(address)
        # Workers log through Python logging to their own files; only errors reach us.
        common: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
        if local:
            loopback_only(ray)
        try:
            if local:
                ray.init(address="local", num_cpus=cpus, _node_ip_address="127.0.0.1", **common)
            else:
                ray.init(address=address, **common)
        except (ConnectionError, RuntimeError, ValueError, OSError) as exc:
            # Something answers there, but not a Ray head this Ray can join (another service, another version).
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise BadInputError(f"--ray {address or 'local'}: could not start or join Ray there ({first}).") from None
        try:
            resources = ray.cluster_resources()
            gpus, cpu_count = int(resources.get("GPU", 0)), max(1, int(resources.get("CPU", 1)))
            n = workers or settings.ray_workers or (gpus or cpu_count)
            # One CPU per CPU worker, and torch threads to match: workers on one machine share it.
            options: dict[str, Any] = {"num_cpus": 1, "num_gpus": 1} if gpus else {"num_cpus": 1}
            worker_settings = settings if gpus or settings.torch_threads else settings.model_copy(
                update={"torch_threads": 1})
            actor = ray.remote(max_restarts=ACTOR_RESTARTS, max_task_retries=0)(PartActor)
            self.actors = [actor.options(**options).remote(worker_settings) for _ in range(n)]
            self.gpus = gpus
        except BaseException:
            ray.shutdown()
            raise
        self.lost = 0  # parts whose worker was lost (each ran again)
        # Test seam: called with the worker's number right after a part is handed to it (the part
        # is then running or queued on that worker: killing its process loses the part).
        self.on_dispatch: Callable[[int, Window], None] | None = None
        self._queue: deque[_Job] = deque()
        self._idle = deque(self.actors)
        self._running: dict[Any, tuple[Any, _Job]] = {}  # object ref -> (actor, job)
        # A lost worker is given no part until Ray has restarted it (a call to an actor that is
        # restarting fails at once): a call that waits for the restart says when it is back.
        self._recovering: dict[Any, Any] = {}  # object ref -> actor
        self._wake = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._dispatch, name="castfinder-ray", daemon=True)
        self._thread.start()

    def __enter__(self) -> RayRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def worker_names(self) -> list[str]:
        """host:pid of every worker (each waits for its models to load)."""
        return list(self.ray.get([a.name.remote() for a in self.actors]))

    def submit(self, path: Path, window: Window) -> Future[PartResult]:
        job = _Job(Path(path), window)
        with self._wake:
            if self._stopped:
                job.future.set_exception(PartsStopped("the run was stopped"))
            else:
                self._queue.append(job)
                self._wake.notify()
        return job.future

    def stop(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify()
            jobs = [*self._queue, *(j for _, j in self._running.values())]
        for job in jobs:
            if not job.future.done():
                job.future.set_exception(PartsStopped("the run was stopped"))

    def close(self) -> None:
        self.stop()
        self._thread.join()
        for actor in self.actors:
            try:
                self.ray.kill(actor)
            except Exception:  # noqa: BLE001 — gone already
                pass
        self.ray.shutdown()

    def _dispatch(self) -> None:
        ray = self.ray
        while True:
            with self._wake:
                while not self._stopped and not self._running and not self._recovering and not (
                        self._queue and self._idle):
                    self._wake.wait()
                if self._stopped:
                    return
                while self._queue and self._idle:
                    job = self._queue.popleft()
                    if job.tries == 0 and not job.future.set_running_or_notify_cancel():
                        continue  # its film failed meanwhile
                    actor = self._idle.popleft()
                    self._running[actor.part.remote(str(job.path), job.window)] = (actor, job)
                    if self.on_dispatch is not None:
                        self.on_dispatch(self.actors.index(actor), job.window)
                refs = [*self._running, *self._recovering]
            if not refs:
                continue
            ready, _ = ray.wait(refs, num_returns=1, timeout=_POLL_S)
            for ref in ready:
                if ref in self._recovering:
                    self._recovered(ref)
                    continue
                with self._wake:
                    actor, job = self._running.pop(ref)
                if self._settle(ref, job):
                    with self._wake:
                        self._idle.append(actor)
                else:
                    self._recovering[actor.name.options(max_task_retries=-1).remote()] = actor

    def _recovered(self, ref: Any) -> None:
        """A lost worker's probe answered: back among the free ones, or gone for good."""
        actor = self._recovering.pop(ref)
        try:
            self.ray.get(ref)
        except Exception as exc:  # noqa: BLE001 — restarts spent, or its machine gone
            log.warning("a worker is gone for good (%s)", exc)
            with self._wake:
                self.actors.remove(actor)
                if not self.actors:
                    for job in self._queue:
                        if not job.future.done():
                            job.future.set_exception(PartLostError("every Ray worker was lost; nothing more can run."))
                    self._queue.clear()
            return
        with self._wake:
            self._idle.append(actor)

    def _settle(self, ref: Any, job: _Job) -> bool:
        """The part's outcome to its future; False when its worker was lost (the part is queued again)."""
        from ray.exceptions import RayActorError, RayTaskError

        if job.future.done():
            return True
        try:
            job.future.set_result(self.ray.get(ref))
        except RayActorError as exc:
            job.tries += 1
            self.lost += 1
            where = f"part {job.window.number} of {job.path.name}"
            if job.tries >= PART_TRIES:
                job.future.set_exception(PartLostError(
                    f"{job.path.name}: the worker running {where} was lost {job.tries} times ({exc}); "
                    "nothing of it was published."))
                return False
            log.warning("a worker was lost running %s; it runs again on the next free worker", where)
            with self._wake:
                self._queue.appendleft(job)
                self._wake.notify()
            return False
        except RayTaskError as exc:
            cause = exc.cause if isinstance(getattr(exc, "cause", None), Exception) else None
            job.future.set_exception(cause or RuntimeError(str(exc)))
        except Exception as exc:  # noqa: BLE001 — told with the film, never lost in this thread
            job.future.set_exception(exc)
        return True
