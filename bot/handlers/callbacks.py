"""Buttons under answers: whom to look for on a picker, and "More" results.

Callback data can be forged (see keyboards.py), so a button is honoured only where it was shown:
pages and person choices are looked up together with the chat the button was pressed in, and a
page id from another chat is answered exactly like an expired button, touching nothing. In a
group, anyone may press "More" (the answer is already the chat's to read, and paging costs no
engine work); only the asker may choose on a person picker (it starts a search on their behalf).
"""

from __future__ import annotations

from aiogram import Bot, Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.types import CallbackQuery, Message

from .. import texts
from ..keyboards import MoreResults, PersonChoice, results_keyboard
from ..middlewares.throttling import ENGINE_QUERY
from ..services.queries import QueryService
from ..services.storage import Storage
from ..services.telegram_io import ResultSender


def _chat_id(callback: CallbackQuery) -> int | None:
    """The chat whose message carries the button; None for inline-mode messages (never ours)."""
    return callback.message.chat.id if callback.message is not None else None


async def on_person_chosen(
    callback: CallbackQuery,
    callback_data: PersonChoice,
    bot: Bot,
    db: Storage,
    queries: QueryService,
    received_at: float | None = None,
) -> None:
    chat_id = _chat_id(callback)
    pick = await db.pick(callback_data.pick, chat_id=chat_id) if chat_id is not None else None
    if pick is None:
        await callback.answer(texts.pick_expired(), show_alert=True)
        return
    if pick.user_id != callback.from_user.id:
        await callback.answer(texts.pick_not_yours(), show_alert=True)
        return
    who = callback_data.who  # "all" or ASCII digits within the picker's buttons (keyboards.py)
    if who != "all" and int(who) > len(pick.people):
        await callback.answer(texts.pick_expired(), show_alert=True)
        return
    await callback.answer(texts.pick_started(who))
    chat_type = callback.message.chat.type if callback.message else "private"
    await queries.run_pick(bot, pick, who, chat_type=chat_type, user_id=callback.from_user.id,
                           received_at=received_at)


async def on_more(
    callback: CallbackQuery, callback_data: MoreResults, bot: Bot, db: Storage, queries: QueryService
) -> None:
    chat_id = _chat_id(callback)
    page = await db.results(callback_data.page, chat_id=chat_id) if chat_id is not None else None
    if page is None:
        await callback.answer(texts.results_expired(), show_alert=True)
        return
    if not 0 <= callback_data.offset < len(page.results):
        await callback.answer(texts.no_more_results())
        return
    if isinstance(callback.message, Message):
        # The button goes first: a second tap (or a concurrent one) then finds nothing to
        # remove, and the page is not sent twice. The list's ▶ and ✓/✗ buttons stay (handlers/clips.py, feedback.py).
        shown = page.results[max(0, callback_data.offset - page.page_size) : callback_data.offset]
        try:
            await callback.message.edit_reply_markup(reply_markup=results_keyboard(page, shown, len(page.results)))
        except TelegramBadRequest:
            await callback.answer()
            return
    await callback.answer()
    await ResultSender(bot, queries.thumbnails).send_page(page, callback_data.offset)


async def on_unknown_button(callback: CallbackQuery) -> None:
    """Data no handler could read (empty, another prefix, a forged or malformed field, a button of
    an older version of the bot): answered, so the button stops spinning, as an expired one."""
    await callback.answer(texts.button_expired(), show_alert=True)


def create_router() -> Router:
    router = Router(name="callbacks")
    router.callback_query.register(on_person_chosen, PersonChoice.filter(), flags={ENGINE_QUERY: True})
    router.callback_query.register(on_more, MoreResults.filter())
    # Last of all callback handlers (the movies router, which reads MovieChoice, comes earlier).
    router.callback_query.register(on_unknown_button)
    return router
