"""The only door from the event loop to the engine: every blocking call runs in a thread pool
owned here, never on the loop and never in the loop's default executor."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence, TypeVar

from core import (
    CastMember,
    Feedback,
    IdentifyResponse,
    MovieInfo,
    MovieNotFoundError,
    Person,
    Progress,
    QueryImage,
    SearchResponse,
    Settings,
)

if TYPE_CHECKING:
    from core.clips import Clip

log = logging.getLogger(__name__)

T = TypeVar("T")

# Movie look-ups of longer text are answered "not found" without asking the engine: a caption or a
# /movie argument of thousands of characters is no title, and the engine's fuzzy match costs time
# in proportion to it (60,000 characters: 4.5 s against 30 movies, on the one catalogue thread
# that /movies and /movie share).
MAX_TITLE_CHARS = 256


class EngineLike(Protocol):
    """What the bot uses of `core.Engine` (tests may pass a stand-in with the same methods)."""

    def movies(self) -> list[MovieInfo]: ...
    def resolve_movie(self, query: str) -> MovieInfo: ...
    def match_movies(self, query: str, limit: int = 5) -> list[MovieInfo]: ...
    def load_image(self, image: Any) -> Any: ...
    def find_people(self, image: Any) -> list[Person]: ...
    def annotate_people(self, image: Any, people: Sequence[Person]) -> bytes: ...
    def search(self, movie: Any, queries: Any, *, top: int = 5, aggregation: str | None = None,
               progress: Callable[[Progress], None] = ...) -> SearchResponse: ...
    settings: Settings

    def cast(self, movie: Any) -> list[CastMember]: ...
    def cast_sheet(self, movie: Any, members: Sequence[CastMember] | None = None) -> bytes: ...
    def search_identity(self, movie: Any, identity: int, *, top: int = 5, aggregation: str | None = None,
                        progress: Callable[[Progress], None] = ...) -> SearchResponse: ...
    def timeline_png(self, response: SearchResponse) -> bytes: ...
    def refine(self, movie: Any, query_vectors: Any, feedback: Feedback, *, top: int = 5) -> SearchResponse: ...
    def check_clip(self, movie: Any, shot: int) -> None: ...
    def clip(self, movie: Any, shot: int, around_s: float | None = None) -> Clip: ...
    def identify(self, image: Any, *, top: int = 3) -> IdentifyResponse: ...


def movie_key(slug: str) -> str:
    """A short id for a movie in callback data (slugs may be longer than its 64 bytes)."""
    return hashlib.sha1(slug.encode("utf-8")).hexdigest()[:10]


class EngineGateway:
    def __init__(self, engine: EngineLike, *, workers: int) -> None:
        self.engine = engine
        self.workers = workers
        # Heavy work (detection, embedding) and catalogue look-ups (reading manifests) get
        # separate pools so that `/movies` answers while every worker is busy searching.
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="castfinder-engine")
        self._catalog = ThreadPoolExecutor(1, thread_name_prefix="castfinder-catalog")
        self._closed = False

    async def _heavy(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def _light(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._catalog, fn, *args)

    # -- catalogue ------------------------------------------------------------------------
    async def movies(self) -> list[MovieInfo]:
        return await self._light(self.engine.movies)

    async def resolve(self, query: str) -> MovieInfo:
        if len(query) > MAX_TITLE_CHARS:
            # Not a title: fuzzy matching it would hold the catalogue thread for seconds.
            raise MovieNotFoundError(query, [])
        return await self._light(self.engine.resolve_movie, query)

    async def match(self, query: str, limit: int = 5) -> list[MovieInfo]:
        if len(query) > MAX_TITLE_CHARS:
            return []
        return await self._light(lambda: self.engine.match_movies(query, limit=limit))

    async def by_key(self, key: str) -> MovieInfo | None:
        return next((m for m in await self.movies() if movie_key(m.slug) == key), None)

    async def by_names(self, names: Sequence[str]) -> list[MovieInfo]:
        movies = {m.name: m for m in await self.movies()}
        return [movies[n] for n in names if n in movies]

    # -- queries --------------------------------------------------------------------------
    async def detect(self, data: bytes) -> tuple[Any, list[Person]]:
        """Decode a screenshot and find its people; the decoded image is reused for searching."""

        def work() -> tuple[Any, list[Person]]:
            image = self.engine.load_image(data)
            return image, self.engine.find_people(image)

        return await self._heavy(work)

    async def load(self, data: bytes) -> Any:
        return await self._heavy(self.engine.load_image, data)

    async def annotate(self, image: Any, people: Sequence[Person]) -> bytes:
        return await self._heavy(self.engine.annotate_people, image, list(people))

    async def cast_sheet(self, movie: MovieInfo, limit: int) -> tuple[list[CastMember], bytes | None]:
        """The movie's cast (raises CastUnavailableError) and a contact sheet of the members
        shown: the first CASTFINDER_CAST_SHEET_SIZE, at most `limit`. Returns those members only."""

        def work() -> tuple[list[CastMember], bytes | None]:
            members = self.engine.cast(movie)
            shown = members[: min(limit, self.engine.settings.cast_sheet_size)]
            return shown, self.engine.cast_sheet(movie, shown) if shown else None

        return await self._heavy(work)

    async def search(
        self,
        movie: MovieInfo,
        queries: list[QueryImage] | int,
        *,
        top: int,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> SearchResponse:
        """A search from screenshots, or (`queries` an int: a `CastMember.identity`) from a cast member."""
        loop = asyncio.get_running_loop()

        def progress(event: Progress) -> None:
            # Called on the worker thread: hand the event to the loop, never touch it here.
            if on_progress is not None and not loop.is_closed():
                try:
                    loop.call_soon_threadsafe(on_progress, event)
                except RuntimeError:  # the loop closed between the check and the call
                    pass

        if isinstance(queries, int):
            identity = queries
            return await self._heavy(lambda: self.engine.search_identity(movie, identity, top=top, progress=progress))
        return await self._heavy(lambda: self.engine.search(movie, queries, top=top, progress=progress))

    async def timeline(self, response: SearchResponse) -> bytes:
        """The response's screen-time timeline picture (PNG)."""
        return await self._heavy(self.engine.timeline_png, response)

    async def refine(self, movie: MovieInfo, vectors: Any, feedback: Feedback, *, top: int) -> SearchResponse:
        """A stored query searched again with the user's feedback (no screenshots, no models)."""
        return await self._heavy(lambda: self.engine.refine(movie, vectors, feedback, top=top))

    # -- clips --------------------------------------------------------------------------
    async def check_clip(self, movie: str, shot: int) -> None:
        """Raise at once what cutting would raise (frames folder, moved video, no such shot): on
        the catalogue thread, so the answer to a ▶ tap does not wait behind searches."""
        await self._light(self.engine.check_clip, movie, shot)

    async def clip(self, movie: str, shot: int, around_s: float | None) -> Clip:
        """Cut (or take from the cache) a clip: decoding and encoding, on the engine threads."""
        return await self._heavy(self.engine.clip, movie, shot, around_s)

    async def identify(self, image: Any, *, top: int = 3) -> IdentifyResponse:
        """Which movie a screenshot is from (the whole catalogue: a heavy call)."""
        return await self._heavy(lambda: self.engine.identify(image, top=top))

    def close(self) -> None:
        """Drop queued engine calls; running ones finish on their threads (they cannot be interrupted)."""
        if self._closed:
            return
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._catalog.shutdown(wait=False, cancel_futures=True)
