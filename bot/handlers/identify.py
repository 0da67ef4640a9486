"""The buttons under "Looks like <movie>": search the screenshot's character there, or set the
movie for the chat. The screenshot itself is routed here by handlers/queries.py when no movie is
named or set (bot/services/identify.py answers it).

Callback data can be forged (keyboards.py): the pick is looked up with the chat the button was
pressed in, and only the asker may start a search with it (as on a person picker).
"""

from __future__ import annotations

from aiogram import Bot, Router
from aiogram.types import CallbackQuery

from core import Person

from .. import texts
from ..keyboards import IdentifyAction
from ..middlewares.throttling import ENGINE_QUERY
from ..services.identify import main_person
from ..services.queries import QueryService
from ..services.storage import Storage


async def on_identify_action(
    callback: CallbackQuery,
    callback_data: IdentifyAction,
    bot: Bot,
    db: Storage,
    queries: QueryService,
    received_at: float | None = None,
) -> None:
    chat = callback.message.chat if callback.message is not None else None
    pick = await db.pick(callback_data.pick, chat_id=chat.id) if chat is not None else None
    if pick is None or chat is None:
        await callback.answer(texts.pick_expired(), show_alert=True)
        return
    if pick.user_id != callback.from_user.id:
        await callback.answer(texts.pick_not_yours(), show_alert=True)
        return
    movie = next((m for m in await queries.gateway.movies() if m.slug == pick.movie_slug), None)
    if movie is None:
        await callback.answer(texts.shorten(texts.movie_gone(None), 190), show_alert=True)
        return
    await db.set_movie(chat.id, movie.slug, movie.name)
    if callback_data.act == "m":
        await callback.answer()
        await bot.send_message(chat.id, texts.movie_set(movie), message_thread_id=pick.thread_id)
        return
    await callback.answer(texts.identify_searching(movie.name))
    who = main_person([Person(int(p["index"]), tuple(p["bbox"]), float(p["score"]), float(p["area_fraction"]))
                       for p in pick.people])
    await queries.run_pick(bot, pick, who, chat_type=chat.type, user_id=callback.from_user.id,
                           received_at=received_at)


def create_router() -> Router:
    router = Router(name="identify")
    router.callback_query.register(on_identify_action, IdentifyAction.filter(), flags={ENGINE_QUERY: True})
    return router
