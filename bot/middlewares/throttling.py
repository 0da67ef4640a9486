"""Per-user rate limits: on everything the bot answers, and on what starts engine work.

Two limits, one notice. `messages` counts every message and button tap a handler would answer
(an album counts once: its parts are merged before this runs), so a flood of /help or of text is
not answered a hundred times (CASTFINDER_USER_MESSAGE_RATE). `queries` counts what starts engine
work, the handlers flagged `engine_query` (CASTFINDER_USER_RATE). A user over either limit is told
once per blocked span, whichever limit refused; later refusals in that span are silent (a button
tap is still answered, or it would spin, but as a small notice rather than an alert).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from aiogram import BaseMiddleware
from aiogram.dispatcher.flags import get_flag
from aiogram.types import CallbackQuery, Message, ReplyParameters, TelegramObject

from .. import texts
from ..services.limits import UserRate
from ..services.storage import QueryLogEntry, Storage
from . import Handler

log = logging.getLogger(__name__)

ENGINE_QUERY = "engine_query"


class ThrottlingMiddleware(BaseMiddleware):
    def __init__(self, limiter: UserRate, messages: UserRate | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limiter = limiter
        self.messages = messages
        self.clock = clock

    async def __call__(
        self,
        handler: Handler,
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        user = data.get("event_from_user")
        if user is None:
            return await handler(event, data)
        retry_in = await self.messages.take(user.id) if self.messages is not None else 0.0
        if retry_in:
            log.info("user %s is flooding: ignored for %.0f s", user.id, retry_in)
            await self._refuse(event, user.id, texts.flooding(retry_in), retry_in)
            return None
        if not get_flag(data, ENGINE_QUERY):
            return await handler(event, data)
        retry_in = await self.limiter.take(user.id)
        if not retry_in:
            return await handler(event, data)
        log.info("user %s rate-limited for %.0f s", user.id, retry_in)
        storage: Storage | None = data.get("db")
        chat = data.get("event_chat")
        if storage is not None and chat is not None:
            started = data.get("received_at", self.clock())
            await storage.log_query(QueryLogEntry(
                chat.id, chat.type, user.id, None, 0, 0, "rate_limited", (self.clock() - started) * 1000,
            ))
        await self._refuse(event, user.id, texts.rate_limited(self.limiter.per_minute, retry_in), retry_in)
        return None

    async def _refuse(self, event: TelegramObject, user_id: int, text: str, retry_in: float) -> None:
        # One record of who was told, whichever limit refused: the query limiter's.
        first = await self.limiter.warn_once(user_id, retry_in)
        if isinstance(event, CallbackQuery):
            await event.answer(text, show_alert=first)
        elif isinstance(event, Message) and event.bot is not None and first:
            await event.bot.send_message(
                event.chat.id, text, message_thread_id=event.message_thread_id if event.is_topic_message else None,
                reply_parameters=ReplyParameters(message_id=event.message_id, allow_sending_without_reply=True),
            )
