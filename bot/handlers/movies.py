"""Choosing the chat's movie: /movies, /movie <name>, and the buttons they show."""

from __future__ import annotations

from aiogram import Bot, Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Command, CommandObject
from aiogram.types import CallbackQuery, Message

from core import AmbiguousMovieError, MovieNotFoundError

from .. import texts
from ..keyboards import MovieChoice, movies_keyboard
from ..services.engine_gateway import EngineGateway
from ..services.storage import Storage
from .replies import respond

# Telegram allows 100 buttons; a list longer than this is better served by /movie <name>.
MAX_MOVIE_BUTTONS = 30


async def on_movies(message: Message, gateway: EngineGateway, db: Storage) -> None:
    movies = await gateway.movies()
    chat = await db.chat(message.chat.id)
    markup = movies_keyboard(movies[:MAX_MOVIE_BUTTONS]) if movies else None
    await respond(message, texts.movies_list(movies, chat.movie_slug, MAX_MOVIE_BUTTONS), markup)


async def on_movie(message: Message, command: CommandObject, gateway: EngineGateway, db: Storage) -> None:
    query = " ".join((command.args or "").split())
    if not query:
        chat = await db.chat(message.chat.id)
        name = chat.movie_name if chat.movie_slug else None
        await respond(message, texts.current_movie(name))
        return
    try:
        movie = await gateway.resolve(query)
    except AmbiguousMovieError as exc:
        candidates = await gateway.by_names(exc.candidates)
        await respond(message, texts.choose_movie(query), movies_keyboard(candidates[:MAX_MOVIE_BUTTONS]))
        return
    except MovieNotFoundError:
        fuzzy = await gateway.match(query)
        if fuzzy:
            await respond(message, texts.did_you_mean(query), movies_keyboard(fuzzy))
        else:
            closest = [m.name for m in (await gateway.movies())[:5]]
            await respond(message, texts.movie_not_found(query, closest))
        return
    await db.set_movie(message.chat.id, movie.slug, movie.name)
    await respond(message, texts.movie_set(movie))


async def on_movie_chosen(callback: CallbackQuery, callback_data: MovieChoice, bot: Bot, gateway: EngineGateway,
                          db: Storage) -> None:
    movie = await gateway.by_key(callback_data.key)
    if movie is None or callback.message is None:
        await callback.answer(texts.movie_choice_gone(), show_alert=True)
        return
    await db.set_movie(callback.message.chat.id, movie.slug, movie.name)
    await callback.answer(texts.movie_chosen(movie.name))
    try:
        await bot.edit_message_text(
            text=texts.movie_set(movie), chat_id=callback.message.chat.id, message_id=callback.message.message_id,
        )
    except TelegramBadRequest:
        # Already showing it (a double tap), or too old to edit: say it afresh.
        await bot.send_message(callback.message.chat.id, texts.movie_set(movie))


def create_router() -> Router:
    router = Router(name="movies")
    router.message.register(on_movies, Command("movies"))
    router.message.register(on_movie, Command("movie"))
    router.callback_query.register(on_movie_chosen, MovieChoice.filter())
    return router
