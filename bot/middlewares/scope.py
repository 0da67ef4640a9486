"""Which messages the bot serves at all: a person's, in a private chat or a group.

Channel posts and edits of old messages come as update types the bot has no handler for, so they
are left alone already. What remains is a message with no sender (Telegram leaves `from` out
for messages sent on behalf of a channel) or from a kind of chat the bot does not know (a
channel, or a type added to Telegram later): deliberate silence, before album collection, the
rate limits or any handler sees it. A message without a sender has nobody to answer to, nobody
to rate-limit, and nobody whose results it could be bound to.
"""

from __future__ import annotations

import logging
from typing import Any

from aiogram import BaseMiddleware
from aiogram.types import Message, TelegramObject

from . import Handler

log = logging.getLogger(__name__)

SERVED_CHATS = frozenset({"private", "group", "supergroup"})


class ScopeMiddleware(BaseMiddleware):
    async def __call__(
        self,
        handler: Handler,
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        if isinstance(event, Message) and (event.from_user is None or _kind(event.chat.type) not in SERVED_CHATS):
            log.debug("message %s in chat %s (%s) has no sender or is in a chat the bot does not serve; ignored",
                      event.message_id, event.chat.id, event.chat.type)
            return None
        return await handler(event, data)


def _kind(chat_type: object) -> str:
    # A plain string from Telegram's JSON, or aiogram's ChatType (a str enum) when built in code.
    return str(getattr(chat_type, "value", chat_type))
