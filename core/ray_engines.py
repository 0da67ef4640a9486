"""Engine workers on a Ray cluster: processes that hold the models, so that the bot's do not.

`start_workers` (`castfinder engines --ray ADDRESS --workers N`) creates N detached, named Ray
actors (`castfinder-engine-0` … in the namespace `castfinder`), each an `Engine` with its models
loaded once; Ray restarts one that dies (`max_restarts=-1`) and re-sends the call it was running
(`max_task_retries`: every call is a read, so repeating it is safe). `RemoteEngine` is what the bot
holds instead of an `Engine` (CASTFINDER_ENGINE_RAY_ADDRESS): the same methods, each forwarded
to the next worker in turn; the engine's own errors (`CastfinderError`s: an unknown movie, a
damaged index) arrive as themselves, so users read the same texts as with an in-process engine.

What crosses the wire: decoded query images (PIL pickles its pixels) and the typed results of
core/types.py. Paths in results (thumbnails, clips) point into the storage root, which the bot
must see at the same path (a shared filesystem), as for a bot beside the indexes.

`ray` is the optional extra `castfinder[scale]`, imported only here and only when used.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .errors import CastfinderError
from .ray_cluster import endpoint, import_ray, unreachable
from .search.images import load_image
from .settings import Settings
from .types import (
    CastMember,
    Feedback,
    IdentifyResponse,
    MovieInfo,
    Person,
    Progress,
    SearchResponse,
    no_progress,
)

if TYPE_CHECKING:
    from PIL import Image

    from .clips import Clip
    from .engine import Engine

log = logging.getLogger(__name__)

NAMESPACE = "castfinder"
ACTOR_PREFIX = "castfinder-engine-"
# A call that finds its worker dead is sent again this many times (to the restarted worker);
# past that the user is told the engines are unavailable.
_TASK_RETRIES = 2
# The engine methods a worker answers: everything the bot uses except decoding (done where the
# bytes arrived: a bad image is refused before anything crosses the wire).
_FORWARDED = frozenset({
    "movies", "resolve_movie", "match_movies", "find_people", "annotate_people", "search", "cast",
    "cast_sheet", "search_identity", "timeline_png", "refine", "check_clip", "clip", "identify",
})


class EnginesUnavailableError(CastfinderError):
    """No engine worker answers (none started, or all of them gone for good)."""


def _ray() -> Any:
    return import_ray(CastfinderError("Engine workers need Ray: pip install 'castfinder[scale]'."))


def connect(address: str) -> Any:
    """Join the Ray cluster at `address` ("auto", "ray://host:10001", "host:6379") in castfinder's namespace."""
    ray = _ray()
    if ray.is_initialized():
        return ray
    _check_reachable(address)
    try:
        ray.init(address=address, namespace=NAMESPACE, logging_level=logging.WARNING, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise EnginesUnavailableError(f"The Ray cluster at {address} cannot be reached ({exc}); "
                                      "check CASTFINDER_ENGINE_RAY_ADDRESS.") from None
    return ray


def _check_reachable(address: str) -> None:
    """A host:port (or ray://host:port) that refuses connections is said at once: Ray itself
    retries an unreachable head for minutes before giving up."""
    where = endpoint(address)
    if where is None:
        return  # "auto", "local": Ray finds the cluster itself
    why = unreachable(*where)
    if why is not None:
        raise EnginesUnavailableError(f"The Ray cluster at {address} cannot be reached ({why}); "
                                      "check CASTFINDER_ENGINE_RAY_ADDRESS, or start it with ray start --head.")


class EngineWorker:
    """One worker: an engine with its models loaded. Made a Ray actor by `start_workers`."""

    def __init__(self, settings: Settings) -> None:
        from .engine import Engine

        self.engine: Engine = Engine(settings)  # models load now, not on the first query

    def ready(self) -> int:
        return os.getpid()

    def settings(self) -> Settings:
        return self.engine.settings

    def call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if method not in _FORWARDED:
            raise CastfinderError(f"an engine worker does not answer {method!r}")
        return getattr(self.engine, method)(*args, **kwargs)


def _gpus_each(ray: Any, workers: int, gpus: float | None) -> float:
    """GPUs per worker: as asked, else one each when the cluster has enough, a share when fewer, none without."""
    if gpus is not None:
        return gpus
    total = float(ray.cluster_resources().get("GPU", 0.0))
    return 0.0 if total <= 0 else min(1.0, total / workers)


def start_workers(address: str, workers: int, settings: Settings, *, cpus: float = 1.0, gpus: float | None = None,
                  concurrency: int = 2) -> list[int]:
    """Make sure `workers` engine workers run on the cluster (those already running are kept,
    extra ones stopped), each with its models loaded; returns their process ids. `concurrency`:
    calls one worker runs at once (the engine is thread-safe; catalogue look-ups then never wait
    behind a search)."""
    if workers < 1:
        raise CastfinderError("--workers must be at least 1.")
    ray = connect(address)
    each = _gpus_each(ray, workers, gpus)
    worker_cls = ray.remote(EngineWorker)
    handles = [
        worker_cls.options(
            name=f"{ACTOR_PREFIX}{i}", namespace=NAMESPACE, get_if_exists=True, lifetime="detached",
            max_restarts=-1, max_task_retries=_TASK_RETRIES, max_concurrency=concurrency,
            num_cpus=cpus, num_gpus=each,
        ).remote(settings)
        for i in range(workers)
    ]
    for name in worker_names(ray)[workers:]:
        ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
    try:
        return [int(pid) for pid in ray.get([h.ready.remote() for h in handles])]
    except ray.exceptions.RayActorError as exc:
        # The constructor raised (a model missing, a bad setting): say why, and leave nothing behind.
        for h in handles:
            ray.kill(h, no_restart=True)
        cause = getattr(exc, "cause", None) or exc
        raise CastfinderError(f"The engine workers could not start: {_first_line(cause)}") from None


def stop_workers(address: str) -> int:
    """Stop every engine worker on the cluster; returns how many there were."""
    ray = connect(address)
    names = worker_names(ray)
    handles = [ray.get_actor(name, namespace=NAMESPACE) for name in names]
    for handle in handles:
        ray.kill(handle, no_restart=True)
    for handle in handles:  # a kill is asynchronous: return once each worker is gone
        try:
            ray.get(handle.ready.remote(), timeout=60)
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            pass
    return len(names)


def worker_names(ray: Any) -> list[str]:
    found = [a["name"] if isinstance(a, dict) else a for a in ray.util.list_named_actors(all_namespaces=True)
             if not isinstance(a, dict) or a.get("namespace") == NAMESPACE]
    names = [n for n in found if n.startswith(ACTOR_PREFIX) and n[len(ACTOR_PREFIX):].isdigit()]
    return sorted(names, key=lambda n: int(n[len(ACTOR_PREFIX):]))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


class RemoteEngine:
    """The bot's engine when the models live in engine workers: `bot.services.engine_gateway.EngineLike`."""

    def __init__(self, address: str, *, timeout_s: float = 600.0) -> None:
        self.address = address
        self._ray = connect(address)
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._actors: list[Any] = []
        self._turn = itertools.count()
        self._refresh()
        # The workers' settings: limits such as the cast sheet's size are theirs to say.
        self.settings: Settings = self._ray.get(self._next().settings.remote(), timeout=timeout_s)

    def _refresh(self) -> None:
        names = worker_names(self._ray)
        if not names:
            raise EnginesUnavailableError(
                f"No castfinder engine worker runs on the Ray cluster at {self.address}; start them with "
                f"castfinder engines --ray {self.address} --workers N.")
        with self._lock:
            self._actors = [self._ray.get_actor(n, namespace=NAMESPACE) for n in names]

    def _next(self) -> Any:
        with self._lock:
            return self._actors[next(self._turn) % len(self._actors)]

    @property
    def workers(self) -> int:
        return len(self._actors)

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        ray = self._ray
        for attempt in range(2):
            try:
                return ray.get(self._next().call.remote(method, args, kwargs), timeout=self._timeout_s)
            except ray.exceptions.RayTaskError as exc:
                cause = exc.cause
                if isinstance(cause, CastfinderError):
                    raise cause from None  # the engine's own message, for the user as in-process
                raise
            except ray.exceptions.GetTimeoutError:
                raise EnginesUnavailableError("The search engines are too busy to answer; try again in a minute.") \
                    from None
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError):
                # Ray already re-sent the call to the restarted worker and gave up: that worker is gone
                # for good. Look again (another may have been started) and try once more elsewhere.
                log.warning("an engine worker is gone; %s sent to another", method)
                if attempt == 0:
                    try:
                        self._refresh()
                        continue
                    except EnginesUnavailableError:
                        pass
                raise EnginesUnavailableError("The search engines are restarting; try again in a minute.") \
                    from None
        raise AssertionError("unreachable")

    # -- what the bot uses of an Engine ------------------------------------------------------
    def movies(self) -> list[MovieInfo]:
        return list(self._call("movies"))

    def resolve_movie(self, query: str) -> MovieInfo:
        info: MovieInfo = self._call("resolve_movie", query)
        return info

    def match_movies(self, query: str, limit: int = 5) -> list[MovieInfo]:
        return list(self._call("match_movies", query, limit=limit))

    def load_image(self, image: Any) -> Image.Image:
        # Here, not in a worker: a bad or oversized image is refused before it crosses the wire.
        return load_image(image, max_pixels=self.settings.max_image_pixels, max_side=self.settings.max_query_side)

    def find_people(self, image: Any) -> list[Person]:
        return list(self._call("find_people", self.load_image(image)))

    def annotate_people(self, image: Any, people: Sequence[Person]) -> bytes:
        data: bytes = self._call("annotate_people", self.load_image(image), list(people))
        return data

    def search(self, movie: Any, queries: Any, *, top: int = 5, aggregation: str | None = None,
               progress: Callable[[Progress], None] = no_progress) -> SearchResponse:
        # Progress events stay in the worker (a callback cannot cross processes): the caller hears
        # that the search began, then gets the answer.
        progress(Progress("search", 0, 1, "step"))
        response: SearchResponse = self._call("search", movie, list(queries), top=top, aggregation=aggregation)
        progress(Progress("search", 1, 1, "step"))
        return response

    def search_identity(self, movie: Any, identity: int, *, top: int = 5, aggregation: str | None = None,
                        progress: Callable[[Progress], None] = no_progress) -> SearchResponse:
        progress(Progress("search", 0, 1, "step"))
        response: SearchResponse = self._call("search_identity", movie, identity, top=top, aggregation=aggregation)
        progress(Progress("search", 1, 1, "step"))
        return response

    def refine(self, movie: Any, query_vectors: Any, feedback: Feedback, *, top: int = 5) -> SearchResponse:
        response: SearchResponse = self._call("refine", movie, query_vectors, feedback, top=top)
        return response

    def cast(self, movie: Any) -> list[CastMember]:
        return list(self._call("cast", movie))

    def cast_sheet(self, movie: Any, members: Sequence[CastMember] | None = None) -> bytes:
        data: bytes = self._call("cast_sheet", movie, None if members is None else list(members))
        return data

    def timeline_png(self, response: SearchResponse) -> bytes:
        data: bytes = self._call("timeline_png", response)
        return data

    def check_clip(self, movie: Any, shot: int) -> None:
        self._call("check_clip", movie, shot)

    def clip(self, movie: Any, shot: int, around_s: float | None = None) -> Clip:
        clip: Clip = self._call("clip", movie, shot, around_s)
        return clip

    def identify(self, image: Any, *, top: int = 3) -> IdentifyResponse:
        response: IdentifyResponse = self._call("identify", self.load_image(image), top=top)
        return response
