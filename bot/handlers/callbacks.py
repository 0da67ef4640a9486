"""Buttons under answers: whom to look for on a picker, and "More" results."""

from __future__ import annotations

from aiogram import Bot, Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.types import CallbackQuery, Message

from .. import texts
from ..keyboards import MoreResults, PersonChoice
from ..middlewares.throttling import ENGINE_QUERY
from ..services.queries import QueryService
from ..services.storage import Storage
from ..services.telegram_io import ResultSender


async def on_person_chosen(
    callback: CallbackQuery,
    callback_data: PersonChoice,
    bot: Bot,
    db: Storage,
    queries: QueryService,
    received_at: float | None = None,
) -> None:
    pick = await db.pick(callback_data.pick)
    if pick is None:
        await callback.answer(texts.pick_expired(), show_alert=True)
        return
    if pick.user_id != callback.from_user.id:
        await callback.answer(texts.pick_not_yours(), show_alert=True)
        return
    who = callback_data.who
    if who != "all" and not (who.isdigit() and 1 <= int(who) <= len(pick.people)):
        await callback.answer(texts.pick_expired(), show_alert=True)
        return
    await callback.answer(texts.pick_started(who))
    chat_type = callback.message.chat.type if callback.message else "private"
    await queries.run_pick(bot, pick, who, chat_type=chat_type, user_id=callback.from_user.id,
                           received_at=received_at)


async def on_more(
    callback: CallbackQuery, callback_data: MoreResults, bot: Bot, db: Storage, queries: QueryService
) -> None:
    page = await db.results(callback_data.page)
    if page is None:
        await callback.answer(texts.results_expired(), show_alert=True)
        return
    if not 0 <= callback_data.offset < len(page.results):
        await callback.answer(texts.no_more_results())
        return
    if isinstance(callback.message, Message):
        # The button goes first: a second tap (or a concurrent one) then finds nothing to
        # remove, and the page is not sent twice.
        try:
            await callback.message.edit_reply_markup(reply_markup=None)
        except TelegramBadRequest:
            await callback.answer()
            return
    await callback.answer()
    await ResultSender(bot, queries.thumbnails).send_page(page, callback_data.offset)


def create_router() -> Router:
    router = Router(name="callbacks")
    router.callback_query.register(on_person_chosen, PersonChoice.filter(), flags={ENGINE_QUERY: True})
    router.callback_query.register(on_more, MoreResults.filter())
    return router
