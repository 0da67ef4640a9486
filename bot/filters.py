"""Filters that decide which updates are for this bot and who may do what."""

from __future__ import annotations

from typing import Any

from aiogram import Bot
from aiogram.enums import ChatType
from aiogram.filters import BaseFilter
from aiogram.types import Message, TelegramObject, User

from .addressing import album_caption, is_reply_to_bot, parse_caption
from .settings import BotSettings


class ForThisBot(BaseFilter):
    """A screenshot meant for this bot. In private chats: anything not addressed to another bot.
    In groups: an own command or a mention in the caption, or a reply to one of the bot's messages.
    Passes the parsed caption to the handler as `intent`."""

    async def __call__(self, message: Message, bot: Bot, album: list[Message] | None = None) -> bool | dict[str, Any]:
        me = await bot.me()
        caption = album_caption(album) if album else message.caption
        intent = parse_caption(caption, me.username)
        if intent.for_other_bot:
            return False
        if message.chat.type == ChatType.PRIVATE:
            return {"intent": intent}
        parts = album or [message]
        if intent.addressed or any(is_reply_to_bot(m, me.id) for m in parts):
            return {"intent": intent}
        return False


class IsAdmin(BaseFilter):
    async def __call__(self, event: TelegramObject, bot_settings: BotSettings,
                       event_from_user: User | None = None) -> bool:
        return event_from_user is not None and event_from_user.id in bot_settings.admin_ids


class IsPrivate(BaseFilter):
    async def __call__(self, message: Message) -> bool:
        return message.chat.type == ChatType.PRIVATE
