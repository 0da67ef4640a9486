"""Indexing films in parts on workers: several films at once, long films split into runs of shots
(core/indexing/parts.py), each film's index written and published by this process through the
same IndexWriter, claim, checkpoints and swap as `castfinder index` on one machine.

`DrivenIndexer` is the Indexer whose parts come from elsewhere; `index_films` runs it for every
film over a `PartRunner`. core/indexing/ray_runner.py is the runner on a Ray cluster.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

from ..errors import CastfinderError
from ..settings import Settings
from ..store import Checkpoint, IndexWriter
from ..types import IndexReport, Progress, ProgressCallback, Shot, no_progress
from .indexer import Indexer, ModelFacts
from .parts import PartAssembler, PartResult, Window, windows
from .sources import MovieSource
from .state import StageTimer

log = logging.getLogger(__name__)

# Films written at once by the driver (each in its own thread: writing, calibration and FAISS are
# its work; detection and embedding are the workers').
MAX_FILMS_AT_ONCE = 4


class PartRunner(Protocol):
    """Runs parts of films on workers."""

    def submit(self, path: Path, window: Window) -> Future[PartResult]: ...

    def stop(self) -> None:
        """Fail every part not yet done with PartsStopped (Ctrl-C)."""


class PartsStopped(CastfinderError):
    """The run was stopped before this part was done."""


class Tally:
    """Parts and films done, across the films indexed at once: one progress bar."""

    def __init__(self, films: int, progress: ProgressCallback) -> None:
        self.films, self.progress = films, progress
        self.parts = self.parts_done = self.films_done = 0
        self._lock = threading.Lock()

    def add(self, parts: int = 0, parts_done: int = 0, films_done: int = 0) -> None:
        with self._lock:
            self.parts += parts
            self.parts_done += parts_done
            self.films_done += films_done
            self.progress(Progress("parts", self.parts_done, self.parts, "part",
                                   f"{self.films_done} of {self.films} film{'s' if self.films != 1 else ''} done"))


def _no_models() -> Future[tuple]:  # a driver loads no model: the workers do
    raise RuntimeError("the driver loads no model")


class DrivenIndexer(Indexer):
    """An Indexer whose film's detection and embedding run as parts on workers; this process
    claims, assembles (PartAssembler), calibrates and publishes the index as Indexer.run does."""

    def __init__(self, settings: Settings, runner: PartRunner, tally: Tally | None = None,
                 on_part: Callable[[PartResult], None] | None = None) -> None:
        super().__init__(settings, _no_models)
        self.runner = runner
        self.tally = tally or Tally(1, no_progress)
        self.on_part = on_part
        self._parts: list[Future[PartResult]] = []
        self._facts: ModelFacts | None = None

    def _claimed(self, source: MovieSource) -> None:
        # The parts start once the build is claimed: a refused run (a busy slug) costs no worker time.
        path = Path(source.path).expanduser().resolve()
        self._parts = [self.runner.submit(path, w)
                       for w in windows(source.estimated_duration_s, self.settings.ray_part_s)]
        self.tally.add(parts=len(self._parts))

    def facts(self) -> ModelFacts:
        if self._facts is None:
            raise RuntimeError("no part has been indexed yet")
        return self._facts

    def _process(self, source: MovieSource, writer: IndexWriter, checkpoint: Checkpoint, timer: StageTimer,
                 progress: ProgressCallback) -> tuple[list[Shot], dict[str, int]]:
        assembler = PartAssembler(self.settings, writer, checkpoint, timer, source.warnings, progress)
        try:
            for future in self._parts:
                part = future.result()
                assembler.add(part)
                self._facts = part.facts
                source.duration_s = max(source.duration_s, part.duration_s)
                self.tally.add(parts_done=1)
                if self.on_part is not None:
                    self.on_part(part)
        finally:
            for future in self._parts:
                future.cancel()  # the film failed: its parts not yet begun are dropped
        left_out = len(assembler.shots) - assembler.counts.shots_done
        if left_out:
            log.warning("%d shot(s) had no decodable frame and are left out", left_out)
        return assembler.shots, assembler.counts.totals()


@dataclass(frozen=True)
class Film:
    source: Path
    movie: str


@dataclass
class FilmOutcome:
    film: Film
    report: IndexReport | None = None
    error: BaseException | None = None


def index_films(settings: Settings, films: Sequence[Film], runner: PartRunner, *, replace: bool = False,
                progress: ProgressCallback = no_progress,
                on_part: Callable[[Film, PartResult], None] | None = None) -> list[FilmOutcome]:
    """Index every film over `runner`, several at once. A film that fails (a corrupt source, a
    busy slug, a disk fault, a part that failed on every try) is its outcome's `error` and costs
    the others nothing. Ctrl-C (KeyboardInterrupt) stops them all, each build left as
    Indexer.run leaves one (the previous index untouched), and is raised again."""
    outcomes = [FilmOutcome(f) for f in films]
    tally = Tally(len(films), progress)

    def one(outcome: FilmOutcome) -> None:
        film = outcome.film
        hook = (lambda part: on_part(film, part)) if on_part is not None else None
        try:
            outcome.report = DrivenIndexer(settings, runner, tally, hook).run(film.source, film.movie, no_progress,
                                                                             replace=replace)
        except Exception as exc:  # noqa: BLE001 — one film's failure, told with it; the others go on
            outcome.error = exc
        tally.add(films_done=1)

    pool = ThreadPoolExecutor(min(MAX_FILMS_AT_ONCE, max(1, len(films))), thread_name_prefix="castfinder-film")
    futures: list[Future[None]] = []
    try:
        futures += [pool.submit(one, outcome) for outcome in outcomes]
        for future in futures:
            future.result()
    except BaseException:
        runner.stop()  # the films' threads see their parts fail, abort their builds and end
        for future in futures:
            future.cancel()
        raise
    finally:
        pool.shutdown(wait=True)
    return outcomes


class PartWorker:
    """The models loaded once, and parts of films run with them: the body of a Ray actor, or of
    the in-process runner."""

    def __init__(self, settings: Settings) -> None:
        from ..models.factory import make_channel, make_detector

        self.settings = settings
        device = settings.resolve_device()
        self.detector = make_detector(settings, device).load()
        self.channels = [make_channel(name, settings.model_for(name), settings, device).load()
                         for name in settings.index_channels()]

    def part(self, path: Path, window: Window) -> PartResult:
        from .parts import PartIndexer

        indexer = PartIndexer(self.settings, (self.detector, self.channels))
        return indexer.part(indexer.open(path), window)


class InProcessRunner:
    """Parts run one after another by one PartWorker in this process: the parts path without a
    cluster (tests compare it with Indexer.run)."""

    def __init__(self, settings: Settings) -> None:
        self.worker = PartWorker(settings)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="castfinder-part")

    def submit(self, path: Path, window: Window) -> Future[PartResult]:
        return self._pool.submit(self.worker.part, path, window)

    def stop(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
