"""A screenshot with no movie named and none set for the chat: "which movie is this?".

The screenshot is matched against the whole catalogue (`Engine.identify`); the answer names the
movie, the shot and its time, with two buttons: search this character there, or set the movie
for the chat. The screenshot waits server-side as a `PendingPick` (its Telegram file id and the
people found in it), bound to the chat, so a button only ever acts on its own chat's screenshot.
It shares the query service's queue, error messages and query log.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from aiogram import Bot

from core import BadInputError, IdentifyResponse, Person

from .. import texts
from ..errors import QueryRefused
from ..keyboards import identify_keyboard
from .queries import QueryRecord, QueryRequest, QueryService
from .status import StatusMessage, chat_action
from .telegram_io import check_ref, download

log = logging.getLogger(__name__)


def main_person(people: list[Person]) -> str:
    """The picker's choice that searches the most prominent person (as a search's "main"), or
    "all" (the whole screenshot) when nobody was found."""
    if not people:
        return "all"
    return str(max(people, key=lambda p: (p.score * p.area_fraction**0.5, p.score)).index)


class IdentifyService:
    def __init__(self, queries: QueryService) -> None:
        self.queries = queries

    async def run(self, bot: Bot, req: QueryRequest) -> None:
        """Answer "Looks like …" or "not in the catalogue". Never raises for anything the user did."""
        q = self.queries
        rec = q._record(req)
        with q._tracked():
            try:
                if q.closing:
                    raise QueryRefused(texts.shutting_down(), "shutdown")
                if not req.images:
                    raise QueryRefused(texts.unsupported_message(), "no_image")
                ref = req.images[0]  # an album: its first screenshot says which movie
                check_ref(ref, q.settings.max_download_bytes)
                await self._run(bot, req, rec)
            except BaseException as exc:
                await q._fail(bot, req.target, rec, exc)
            finally:
                await q._log(req, rec)

    async def _run(self, bot: Bot, req: QueryRequest, rec: QueryRecord) -> None:
        q, target = self.queries, req.target
        status = StatusMessage(bot, target.chat_id, reply_to=target.reply_to, thread_id=target.thread_id,
                               interval=q.settings.status_interval_s)
        ticket = q._enter(req.user_id)
        try:
            async with ticket:
                if ticket.position:
                    await status.start(texts.status_queued(ticket.position))
                    await ticket.wait(lambda pos: status.update(texts.status_queued(pos)))
                    status.update(texts.status_identifying())
                else:
                    await status.start(texts.status_identifying())
                async with chat_action(bot, target.chat_id, thread_id=target.thread_id):
                    data = await download(bot, req.images[0], limit_bytes=q.settings.max_download_bytes)
                    try:
                        image, people = await q.gateway.detect(data)
                    except BadInputError as exc:
                        raise QueryRefused(texts.bad_image(str(exc)), "bad_image") from exc
                    started = q.clock()
                    response = await q.gateway.identify(image)
                    rec.engine_ms = (q.clock() - started) * 1000
                await status.close()
                await self._answer(bot, req, rec, response, people)
        except asyncio.CancelledError:
            await status.close(final_text=texts.cancelled_by_shutdown())
            raise
        finally:
            await status.close()

    async def _answer(self, bot: Bot, req: QueryRequest, rec: QueryRecord, response: IdentifyResponse,
                      people: list[Person]) -> None:
        target = req.target
        if response.slug is None or response.movie is None or not response.shots:
            await target.text(bot, texts.not_identified([c.name for c in response.candidates]))
            rec.outcome = "not_identified"
            return
        rec.movie_slug = response.slug
        best = response.shots[0]
        pick = await self.queries.storage.save_pick(
            chat_id=target.chat_id, user_id=req.user_id, message_id=target.reply_to or 0, thread_id=target.thread_id,
            file_id=req.images[0].file_id, movie_slug=response.slug,
            people=[{"index": p.index, "bbox": list(p.bbox), "score": p.score, "area_fraction": p.area_fraction}
                    for p in people])
        caption = texts.identified(response.movie, best.shot, best.scene, best.frame_s, response.confidence)
        markup = identify_keyboard(pick.id, response.movie)
        thumbnail = await _read(best.thumbnail)
        if thumbnail is not None:
            await target.photo(bot, thumbnail, caption, markup)
        else:
            await target.text(bot, caption, markup)
        rec.results = len(response.shots)
        rec.outcome = "identified"


async def _read(path: str | None) -> bytes | None:
    if not path:
        return None
    try:
        return await asyncio.to_thread(Path(path).read_bytes)
    except OSError:
        log.warning("the thumbnail %s cannot be read; answering without it", path)
        return None
