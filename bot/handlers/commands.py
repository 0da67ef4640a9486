"""/start, /help, /topk, and what private chats get for anything else."""

from __future__ import annotations

from aiogram import Bot, F, Router
from aiogram.filters import Command, CommandObject, CommandStart
from aiogram.types import Message

from .. import texts
from ..addressing import parse_caption
from ..filters import IsPrivate
from ..services.storage import Storage
from ..settings import MAX_TOPK
from .replies import respond


async def on_help(message: Message, bot: Bot) -> None:
    me = await bot.me()
    await respond(message, texts.help_text(me.username))


async def on_topk(message: Message, command: CommandObject, db: Storage) -> None:
    arg = (command.args or "").strip()
    if not arg:
        chat = await db.chat(message.chat.id)
        await respond(message, texts.topk_current(chat.topk))
        return
    try:
        n = int(arg)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_TOPK:
        await respond(message, texts.topk_invalid(arg))
        return
    await db.set_topk(message.chat.id, n)
    await respond(message, texts.topk_set(n))


async def on_other_text(message: Message, bot: Bot) -> None:
    if parse_caption(message.text, (await bot.me()).username).for_other_bot:
        return
    await respond(message, texts.text_hint())


async def on_unsupported(message: Message, bot: Bot) -> None:
    if parse_caption(message.caption, (await bot.me()).username).for_other_bot:
        return
    await respond(message, texts.unsupported_message())


def create_router() -> Router:
    router = Router(name="commands")
    router.message.register(on_help, CommandStart())
    router.message.register(on_help, Command("help"))
    router.message.register(on_topk, Command("topk"))
    router.message.register(on_other_text, IsPrivate(), F.text)
    router.message.register(on_unsupported, IsPrivate())
    return router
