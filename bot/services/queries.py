"""One query from screenshot to answer: movie, queue, download, people, search, reply, log.

Handlers turn updates into a `QueryRequest` (or a person choice) and hand it here; this module
knows nothing about routers or filters.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace
from typing import Any, Awaitable, Callable, Literal

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError, TelegramForbiddenError

from core import (
    AmbiguousMovieError,
    BadInputError,
    MovieInfo,
    MovieNotFoundError,
    Person,
    Progress,
    QueryImage,
    SearchResponse,
)

from .. import texts
from ..errors import QueryRefused, explain
from ..keyboards import people_keyboard
from ..settings import BotSettings
from .engine_gateway import EngineGateway
from .feedback import pack, stored_results
from .limits import QueryQueue, QueueFull, Ticket, UserBusy
from .shared_state import RedisUserPlaces
from .status import StatusMessage, chat_action
from .storage import ChatSettings, DatabaseUnavailable, PendingPick, QueryLogEntry, Storage
from .telegram_io import ImageRef, ReplyTarget, ResultSender, ThumbnailCache, check_ref, download

log = logging.getLogger(__name__)

Select = Literal["main", "all"] | tuple[int, ...]


@dataclass(frozen=True)
class QueryRequest:
    """A query as a handler hands it over: who asked, where the answer goes, which screenshots."""

    target: ReplyTarget
    chat_type: str
    user_id: int
    images: tuple[ImageRef, ...]
    movie_hint: str | None = None
    explicit_movie: bool = False  # the caption named the movie with a command or a mention
    received_at: float | None = None
    notes: tuple[str, ...] = ()  # told to the user with the results


@dataclass(frozen=True)
class ChosenPeople:
    """Whom to look for, chosen on a person picker: the picker's people and the choice."""

    select: Select
    people: tuple[Person, ...]


@dataclass
class QueryRecord:
    """What the query log records, filled in as the query advances."""

    received_at: float
    outcome: str = "error"
    movie_slug: str | None = None
    results: int = 0
    engine_ms: float | None = None


@dataclass(frozen=True)
class QueryContext:
    """One query from the moment its movie is known: everything the steps of the service need,
    passed whole. What the query learns on the way goes to `record` and `status`."""

    bot: Bot
    request: QueryRequest
    movie: MovieInfo
    topk: int
    status: StatusMessage
    record: QueryRecord
    notes: tuple[str, ...] = ()
    chosen: ChosenPeople | None = None  # None: find the people in the screenshots
    identity: int | None = None  # a cast member (CastMember.identity) searched instead of screenshots

    @property
    def target(self) -> ReplyTarget:
        return self.request.target

    @property
    def user_id(self) -> int:
        return self.request.user_id

    @property
    def images(self) -> tuple[ImageRef, ...]:
        return self.request.images


class QueryService:
    def __init__(
        self,
        *,
        settings: BotSettings,
        gateway: EngineGateway,
        storage: Storage,
        queue: QueryQueue,
        thumbnails: ThumbnailCache | None = None,
        clock: Callable[[], float] = time.monotonic,
        places: RedisUserPlaces | None = None,
    ) -> None:
        self.settings = settings
        self.gateway = gateway
        self.storage = storage
        self.queue = queue
        # With several processes, the user's places counted across all of them (Redis).
        self.places = places
        self.thumbnails = thumbnails or ThumbnailCache()
        self.clock = clock
        self.closing = False
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- entry points ---------------------------------------------------------------------
    async def run_query(self, bot: Bot, req: QueryRequest) -> None:
        """Answer screenshots: results, a person picker, or an explanation. Never raises for
        anything the user did."""
        rec = self._record(req)

        async def context() -> QueryContext:
            if not req.images:
                raise QueryRefused(texts.unsupported_message(), "no_image")
            for ref in req.images:
                check_ref(ref, self.settings.max_download_bytes)
            chat = await self.storage.chat(req.target.chat_id)
            movie, notes = await self._movie_for(req, chat)
            rec.movie_slug = movie.slug
            return self._context(bot, req, movie, chat.topk, rec, notes=(*notes, *req.notes))

        await self._serve(bot, req, rec, context)

    async def run_pick(
        self, bot: Bot, pick: PendingPick, who: str, *, chat_type: str, user_id: int, received_at: float | None = None
    ) -> None:
        """Search for the person(s) chosen on a picker."""
        req = QueryRequest(
            target=ReplyTarget(pick.chat_id, pick.message_id, pick.thread_id), chat_type=chat_type, user_id=user_id,
            images=(ImageRef(pick.file_id, None, "photo"),), received_at=received_at,
        )
        rec = self._record(req)
        rec.movie_slug = pick.movie_slug

        async def context() -> QueryContext:
            people = tuple(
                Person(int(p["index"]), tuple(p["bbox"]), float(p["score"]), float(p["area_fraction"]))
                for p in pick.people
            )
            select: Select = "all" if who == "all" else (int(who),)
            movie = await self._movie_by_slug(pick.movie_slug, None)
            chat = await self.storage.chat(pick.chat_id)
            return self._context(bot, req, movie, chat.topk, rec, chosen=ChosenPeople(select, people))

        await self._serve(bot, req, rec, context)

    async def run_cast(self, bot: Bot, req: QueryRequest, movie_slug: str, build_id: str, identity: int) -> None:
        """Search from a cast member tapped on a /cast sheet: answered as a screenshot is."""
        rec = self._record(req)
        rec.movie_slug = movie_slug

        async def context() -> QueryContext:
            movie = await self._movie_by_slug(movie_slug, None)
            if movie.build_id != build_id:  # re-indexed since the sheet: its numbers mean others now
                raise QueryRefused(texts.cast_expired(), "expired")
            chat = await self.storage.chat(req.target.chat_id)
            return replace(self._context(bot, req, movie, chat.topk, rec), identity=identity)

        await self._serve(bot, req, rec, context)

    # -- the work -------------------------------------------------------------------------
    async def _serve(
        self, bot: Bot, req: QueryRequest, rec: QueryRecord, context: Callable[[], Awaitable[QueryContext]]
    ) -> None:
        """Run one query to its answer or its explanation, and log it either way."""
        with self._tracked():
            try:
                if self.closing:
                    raise QueryRefused(texts.shutting_down(), "shutdown")
                await self._run(await context())
            except BaseException as exc:
                await self._fail(bot, req.target, rec, exc)
            finally:
                await self._log(req, rec)

    def _record(self, req: QueryRequest) -> QueryRecord:
        return QueryRecord(req.received_at if req.received_at is not None else self.clock())

    def _context(
        self,
        bot: Bot,
        req: QueryRequest,
        movie: MovieInfo,
        topk: int,
        rec: QueryRecord,
        *,
        notes: tuple[str, ...] = (),
        chosen: ChosenPeople | None = None,
    ) -> QueryContext:
        # The status message sends nothing until the query starts, so building it here is free.
        status = StatusMessage(bot, req.target.chat_id, reply_to=req.target.reply_to, thread_id=req.target.thread_id,
                               interval=self.settings.status_interval_s)
        return QueryContext(bot, req, movie, topk, status, rec, notes=notes, chosen=chosen)

    async def _run(self, ctx: QueryContext) -> None:
        if self.places is None:
            return await self._run_here(ctx)
        try:
            async with self.places.hold(ctx.user_id):  # inside, UserBusy is already a QueryRefused
                await self._run_here(ctx)
        except UserBusy as exc:
            raise QueryRefused(None if exc.repeated else texts.user_busy(), "user_busy") from None

    async def _run_here(self, ctx: QueryContext) -> None:
        ticket = self._enter(ctx.user_id)
        status, count = ctx.status, len(ctx.images)
        # A cast member has nothing to download: its vectors are in the index.
        first = texts.status_searching(ctx.movie.name) if ctx.identity is not None else texts.status_downloading(count)
        try:
            async with ticket:
                if ticket.position:
                    await status.start(texts.status_queued(ticket.position))
                    await ticket.wait(lambda pos: status.update(texts.status_queued(pos)))
                    status.update(first)
                else:
                    await status.start(first)
                async with chat_action(ctx.bot, ctx.target.chat_id, thread_id=ctx.target.thread_id):
                    # Stored for "More"; never fewer than one page.
                    top = max(self.settings.max_results, ctx.topk)
                    if ctx.identity is not None:
                        response = await self._search(ctx, ctx.identity, top)
                    else:
                        # The downloaded bytes are not kept in this frame: once decoded they are freed
                        # (an album may be ten files of up to 20 MB), not held through the search.
                        queries = await self._prepare(ctx, await self._download(ctx))
                        if queries is None:
                            return
                        response = await self._search(ctx, queries, top)
                    await self._answer(ctx, response)
        except asyncio.CancelledError:
            await status.close(final_text=texts.cancelled_by_shutdown())
            raise
        finally:
            await status.close()

    async def _download(self, ctx: QueryContext) -> list[bytes]:
        limit = self.settings.max_download_bytes
        return list(await asyncio.gather(*(download(ctx.bot, ref, limit_bytes=limit) for ref in ctx.images)))

    async def _prepare(self, ctx: QueryContext, datas: list[bytes]) -> list[QueryImage] | None:
        """Decoded query images, or None when the user must first choose whom to look for."""
        if ctx.chosen is not None:
            image = await self._decode(datas[0], None, 1)
            return [QueryImage(image, select=ctx.chosen.select, people=ctx.chosen.people)]
        if len(datas) == 1:
            ctx.status.update(texts.status_people(0, 1))
            try:
                image, found = await self.gateway.detect(datas[0])
            except BadInputError as exc:
                raise QueryRefused(texts.bad_image(str(exc)), "bad_image") from exc
            if len(found) > 1:
                await self._offer_pick(ctx, image, found)
                ctx.record.outcome = "picker"
                return None
            return [QueryImage(image, select="main", people=found)]
        decoded = [await self._decode(data, i, len(datas)) for i, data in enumerate(datas, start=1)]
        # In an album every screenshot contributes its most prominent person.
        return [QueryImage(image, select="main") for image in decoded]

    async def _decode(self, data: bytes, position: int | None, total: int) -> Any:
        try:
            return await self.gateway.load(data)
        except BadInputError as exc:
            raise QueryRefused(texts.bad_image(str(exc), position, total), "bad_image") from exc

    async def _offer_pick(self, ctx: QueryContext, image: Any, people: list[Person]) -> None:
        annotated = await self.gateway.annotate(image, people)
        target = ctx.target
        pick = await self.storage.save_pick(
            chat_id=target.chat_id, user_id=ctx.user_id, message_id=target.reply_to or 0, thread_id=target.thread_id,
            file_id=ctx.images[0].file_id, movie_slug=ctx.movie.slug,
            people=[{"index": p.index, "bbox": list(p.bbox), "score": p.score, "area_fraction": p.area_fraction}
                    for p in people],
        )
        await target.photo(ctx.bot, annotated, texts.pick_person(len(people)), people_keyboard(pick.id, len(people)))

    async def _search(self, ctx: QueryContext, queries: list[QueryImage] | int, top: int) -> SearchResponse:
        """Screenshots' people, or (an int) a cast member's identity: one search path."""
        total, status, movie = (1 if isinstance(queries, int) else len(queries)), ctx.status, ctx.movie

        def on_progress(event: Progress) -> None:
            # A single screenshot's people were found before the search (to offer the picker);
            # only albums have a people stage worth showing.
            if event.stage == "people" and total > 1:
                status.update(texts.status_people(int(event.done), int(event.total or total)))
            elif event.stage == "search":
                status.update(texts.status_searching(movie.name))

        status.update(texts.status_people(0, total) if total > 1 else texts.status_searching(movie.name))
        started = self.clock()
        response = await self.gateway.search(movie, queries, top=top, on_progress=on_progress)
        ctx.record.engine_ms = (self.clock() - started) * 1000
        return response

    async def _answer(self, ctx: QueryContext, response: SearchResponse) -> None:
        notes = list(ctx.notes)
        if response.whole_image_queries:
            notes.append(texts.whole_image_note(response.whole_image_queries, len(ctx.images)))
        stored = stored_results(response)
        target = ctx.target
        # The query's vectors go with the page: "✓"/"✗" on a result re-rank it (services/feedback.py).
        # Without them (an engine that gives none) the page takes no feedback: no slug, no buttons.
        query = pack(response.query_vectors)
        page = await self.storage.save_results(
            chat_id=target.chat_id, user_id=ctx.user_id, reply_to=target.reply_to, thread_id=target.thread_id,
            movie=response.movie, page_size=ctx.topk, results=stored, notes=notes, slug=response.slug,
            build_id=ctx.movie.build_id if query else "", query=query,
        )
        await ResultSender(ctx.bot, self.thumbnails).send_page(page, 0, timeline=await self._timeline(response))
        ctx.record.results = len(stored)
        ctx.record.outcome = "ok"

    async def _timeline(self, response: SearchResponse) -> tuple[bytes, str] | None:
        """The screen-time picture and its caption; None without results, from an engine that
        computes no timeline, or when drawing it fails (the answer goes out without it)."""
        if not response.results or response.timeline is None:
            return None
        try:
            return await self.gateway.timeline(response), texts.timeline_caption(response.timeline)
        except Exception:
            log.exception("could not draw the timeline of a search of %s", response.slug)
            return None

    # -- movie ----------------------------------------------------------------------------
    async def _movie_for(self, req: QueryRequest, chat: ChatSettings) -> tuple[MovieInfo, list[str]]:
        hint = req.movie_hint
        if hint:
            try:
                return await self.gateway.resolve(hint), []
            except (MovieNotFoundError, AmbiguousMovieError) as exc:
                # Free text in a caption may be a remark rather than a title: fall back to the
                # chat's movie. A title given with /movie or a mention is meant literally.
                if not req.explicit_movie and chat.movie_slug:
                    movie = await self._movie_by_slug(chat.movie_slug, chat.movie_name)
                    return movie, [texts.caption_ignored(hint, movie.name)]
                if isinstance(exc, AmbiguousMovieError):
                    raise QueryRefused(texts.ambiguous_caption(hint, exc.candidates), "movie_not_found") from exc
                closest = exc.suggestions or [m.name for m in (await self.gateway.movies())[:5]]
                raise QueryRefused(texts.movie_not_found(hint, closest), "movie_not_found") from exc
        if chat.movie_slug is None:
            raise QueryRefused(texts.no_movie_selected(), "no_movie")
        return await self._movie_by_slug(chat.movie_slug, chat.movie_name), []

    async def _movie_by_slug(self, slug: str, name: str | None) -> MovieInfo:
        movie = next((m for m in await self.gateway.movies() if m.slug == slug), None)
        if movie is None:
            raise QueryRefused(texts.movie_gone(name or slug), "movie_gone")
        return movie

    # -- plumbing -------------------------------------------------------------------------
    def _enter(self, user_id: int) -> Ticket:
        try:
            return self.queue.enter(user_id)
        except UserBusy as exc:
            raise QueryRefused(None if exc.repeated else texts.user_busy(), "user_busy") from None
        except QueueFull:
            raise QueryRefused(texts.queue_full(), "queue_full") from None

    async def _fail(self, bot: Bot, target: ReplyTarget, rec: QueryRecord, exc: BaseException) -> None:
        """Tell the user why there is no answer; re-raise only cancellation."""
        if isinstance(exc, asyncio.CancelledError):
            rec.outcome = "cancelled"
            raise exc
        if not isinstance(exc, Exception):
            raise exc
        why = explain(exc)
        rec.outcome = why.outcome
        if why.unexpected:
            log.exception("query in chat %s failed", target.chat_id)
        if why.html is None:  # nobody to tell, or already told
            if why.outcome == "blocked":
                log.info("chat %s is closed to the bot (%s); query dropped", target.chat_id, exc)
            return
        try:
            await target.text(bot, why.html)
        except TelegramForbiddenError:
            rec.outcome = "blocked"
        except TelegramAPIError as err:
            log.warning("could not tell chat %s why its query failed: %s", target.chat_id, err)

    async def _log(self, req: QueryRequest, rec: QueryRecord) -> None:
        chat_id, user_id, images = req.target.chat_id, req.user_id, len(req.images)
        latency = (self.clock() - rec.received_at) * 1000
        log.info("query chat=%s user=%s movie=%s images=%d -> %s (%d results) in %.0f ms",
                 chat_id, user_id, rec.movie_slug, images, rec.outcome, rec.results, latency)
        try:
            await self.storage.log_query(QueryLogEntry(
                chat_id, req.chat_type, user_id, rec.movie_slug, images, rec.results, rec.outcome, latency,
                rec.engine_ms,
            ))
        except DatabaseUnavailable:
            pass  # an outage: the storage backend logged it once, not a traceback per query
        except Exception:  # the log must never cost the user their answer
            log.exception("could not write the query log")

    def _tracked(self) -> _Tracking:
        return _Tracking(self._tasks)

    async def shutdown(self, grace_s: float) -> None:
        """Refuse new queries, let running ones finish for `grace_s`, then cancel the rest."""
        self.closing = True
        pending = {t for t in self._tasks if not t.done()}
        if pending:
            log.info("waiting up to %.0f s for %d running queries", grace_s, len(pending))
            done, pending = await asyncio.wait(pending, timeout=grace_s) if grace_s > 0 else (set(), pending)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("cancelled %d queries still running at shutdown", len(pending))
            await asyncio.gather(*pending, return_exceptions=True)


class _Tracking:
    """Registers the current task as a running query for the duration of a `with` block."""

    def __init__(self, tasks: set[asyncio.Task[Any]]) -> None:
        self._tasks = tasks
        self._task: asyncio.Task[Any] | None = None

    def __enter__(self) -> None:
        self._task = asyncio.current_task()
        if self._task is not None:
            self._tasks.add(self._task)

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._tasks.discard(self._task)
