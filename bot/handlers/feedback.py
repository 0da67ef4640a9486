""""✓ that's them" / "✗ not them" under a list of results: the tap is stored, every tap on the
answer so far goes to the engine (`Engine.refine` on the query's stored vectors) and the list
message is edited in place with the new ranking.

Forged data is answered like an expired button (pages are looked up with the chat the button was
pressed in; a rank the page does not have is refused). Only the asker may correct an answer: in a
group, another member's tap would change the asker's results. Taps on one answer are handled one
at a time, so quick taps accumulate instead of racing.
"""

from __future__ import annotations

import asyncio
import logging
from weakref import WeakValueDictionary

from aiogram import Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.types import CallbackQuery, Message

from core import BadInputError

from .. import texts
from ..keyboards import MAX_FEEDBACK_TAPS, FeedbackButton
from ..services import feedback as fb
from ..services.engine_gateway import EngineGateway
from ..services.queries import QueryService
from ..services.storage import FeedbackTap, Storage
from ..services.telegram_io import list_message

log = logging.getLogger(__name__)


class FeedbackHandler:
    def __init__(self) -> None:
        self._locks: WeakValueDictionary[str, asyncio.Lock] = WeakValueDictionary()

    def _lock(self, page_id: str) -> asyncio.Lock:
        lock = self._locks.get(page_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[page_id] = lock
        return lock

    async def handle(self, callback: CallbackQuery, callback_data: FeedbackButton, db: Storage,
                       gateway: EngineGateway, queries: QueryService) -> None:
        message = callback.message
        if not isinstance(message, Message):  # inline-mode or inaccessible: never ours to edit
            await callback.answer(texts.results_expired(), show_alert=True)
            return
        lock = self._lock(callback_data.page)
        async with lock:
            await self._tap(callback, callback_data, message, db, gateway, queries)

    async def _tap(self, callback: CallbackQuery, data: FeedbackButton, message: Message, db: Storage,
                   gateway: EngineGateway, queries: QueryService) -> None:
        page = await db.results(data.page, chat_id=message.chat.id)
        result = next((r for r in page.results if r.rank == data.rank), None) if page is not None else None
        stored = await db.query_vectors(page.id, chat_id=page.chat_id) if page is not None else None
        if page is None or result is None or stored is None or not page.build_id or result.shot_id < 1:
            await callback.answer(texts.results_expired(), show_alert=True)
            return
        if page.user_id != callback.from_user.id:
            await callback.answer(texts.feedback_not_yours(), show_alert=True)
            return
        if data.version != page.version or page.version >= MAX_FEEDBACK_TAPS:
            await callback.answer(texts.feedback_stale())
            return
        vectors = fb.unpack(stored)
        movie = next((m for m in await gateway.movies() if m.slug == page.slug), None)
        if vectors is None or movie is None or movie.build_id != page.build_id:
            # The movie was re-indexed or removed since: the results' crops are no longer its own.
            await callback.answer(texts.results_expired(), show_alert=True)
            return
        verdict = "yes" if data.verdict == "y" else "no"
        taps = [*await db.feedback(page), FeedbackTap(verdict, result.shot_id, result.crop)]
        top = max(len(page.results), queries.settings.max_results, page.page_size)
        try:
            response = await gateway.refine(movie, vectors, fb.feedback_of(taps), top=top)
        except BadInputError as exc:
            await callback.answer(texts.feedback_failed(str(exc)), show_alert=True)
            return
        await db.add_feedback(page, user_id=callback.from_user.id, tap=taps[-1])
        new = fb.refreshed(page, response)
        await db.replace_results(new)
        await callback.answer(texts.feedback_applied(data.verdict, result))
        # The same slice of the ranking as the list that was tapped (a "More" list stays one).
        offset = (data.rank - 1) // page.page_size * page.page_size
        offset = offset if offset < len(new.results) else 0
        yes, no = fb.counts(taps)
        notes = [*(page.notes if offset == 0 else []), texts.feedback_note(yes, no)]
        text, markup = list_message(new, offset, notes)
        try:
            await message.edit_text(text, reply_markup=markup)
        except TelegramBadRequest as exc:  # deleted meanwhile, or too old to edit
            log.info("could not edit the results list in chat %s: %s", message.chat.id, exc)


def create_router() -> Router:
    router = Router(name="feedback")
    router.callback_query.register(FeedbackHandler().handle, FeedbackButton.filter())
    return router
