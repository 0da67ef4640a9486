"""How command answers are addressed: threaded to the asker in groups, plain in private chats."""

from __future__ import annotations

from aiogram.enums import ChatType
from aiogram.types import InlineKeyboardMarkup, Message


async def respond(message: Message, text: str, markup: InlineKeyboardMarkup | None = None) -> Message:
    if message.chat.type == ChatType.PRIVATE:
        return await message.answer(text, reply_markup=markup)
    return await message.reply(text, reply_markup=markup, allow_sending_without_reply=True)
