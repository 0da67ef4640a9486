"""/cast: a contact sheet of the chat's movie's main people, with a button per person; a tap
searches that person's shots and is answered exactly as a screenshot is (services/queries.py).

The sheet is kept server-side as a person choice (`Storage.save_pick`, no schema change): its
people are the members' identities, its file id marks it as a cast sheet of one build of the index.
A tap is honoured only in the chat the sheet was sent to, by the one who asked for it, while the
index is the one it was drawn from; anything else answers as an expired button.
"""

from __future__ import annotations

from aiogram import Bot, Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, Message

from core import CastUnavailableError
from core.engine import format_duration

from .. import texts
from ..keyboards import MAX_CAST_BUTTONS, CastChoice, cast_keyboard
from ..middlewares.throttling import ENGINE_QUERY
from ..services.engine_gateway import EngineGateway
from ..services.queries import QueryRequest, QueryService
from ..services.storage import Storage
from ..services.telegram_io import ReplyTarget
from .replies import respond

_SHEET_MARK = "cast:"  # a stored pick whose file id starts so is a cast sheet; then the build id


async def on_cast(message: Message, bot: Bot, gateway: EngineGateway, db: Storage) -> None:
    chat = await db.chat(message.chat.id)
    movie = next((m for m in await gateway.movies() if m.slug == chat.movie_slug), None)
    if movie is None:
        await respond(message, texts.no_movie_selected() if chat.movie_slug is None
                      else texts.movie_gone(chat.movie_name or chat.movie_slug))
        return
    try:
        members, sheet = await gateway.cast_sheet(movie, MAX_CAST_BUTTONS)
    except CastUnavailableError:
        await respond(message, texts.cast_unavailable(movie.name))
        return
    if not members or sheet is None:
        await respond(message, texts.cast_none(movie.name))
        return
    shown = members
    target = ReplyTarget.of(message)
    stored = await db.save_pick(
        chat_id=message.chat.id, user_id=message.from_user.id if message.from_user else 0,
        message_id=message.message_id, thread_id=target.thread_id, file_id=f"{_SHEET_MARK}{movie.build_id}",
        movie_slug=movie.slug, people=[{"index": m.number, "identity": m.identity} for m in shown],
    )
    labels = [texts.cast_button(m.number, format_duration(m.screen_s)) for m in shown]
    await target.photo(bot, sheet, texts.cast_caption(movie.name, len(shown)),
                       cast_keyboard(stored.id, labels))


async def on_cast_chosen(callback: CallbackQuery, callback_data: CastChoice, bot: Bot, db: Storage,
                         queries: QueryService, received_at: float | None = None) -> None:
    message = callback.message
    sheet = await db.pick(callback_data.sheet, chat_id=message.chat.id) if message is not None else None
    number = int(callback_data.number)  # ASCII digits within the buttons' range (keyboards.py)
    if message is None or sheet is None or not sheet.file_id.startswith(_SHEET_MARK) or number > len(sheet.people):
        await callback.answer(texts.cast_expired(), show_alert=True)
        return
    if sheet.user_id != callback.from_user.id:
        await callback.answer(texts.pick_not_yours(), show_alert=True)
        return
    identity = sheet.people[number - 1].get("identity")
    if not isinstance(identity, int):
        await callback.answer(texts.cast_expired(), show_alert=True)
        return
    await callback.answer(texts.cast_started(number))
    req = QueryRequest(target=ReplyTarget(sheet.chat_id, sheet.message_id, sheet.thread_id),
                       chat_type=message.chat.type, user_id=callback.from_user.id, images=(),
                       received_at=received_at)
    await queries.run_cast(bot, req, sheet.movie_slug, sheet.file_id.removeprefix(_SHEET_MARK), identity)


def create_router() -> Router:
    router = Router(name="cast")
    router.message.register(on_cast, Command("cast"), flags={ENGINE_QUERY: True})
    router.callback_query.register(on_cast_chosen, CastChoice.filter(), flags={ENGINE_QUERY: True})
    return router
