"""Per-user rate limit on everything that starts engine work (handlers flagged `engine_query`)."""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from aiogram import BaseMiddleware
from aiogram.dispatcher.flags import get_flag
from aiogram.types import CallbackQuery, Message, ReplyParameters, TelegramObject

from .. import texts
from ..services.limits import RateLimiter
from ..services.storage import QueryLogEntry, Storage
from . import Handler

log = logging.getLogger(__name__)

ENGINE_QUERY = "engine_query"


class ThrottlingMiddleware(BaseMiddleware):
    def __init__(self, limiter: RateLimiter, clock: Callable[[], float] = time.monotonic) -> None:
        self.limiter = limiter
        self.clock = clock

    async def __call__(
        self,
        handler: Handler,
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        user = data.get("event_from_user")
        if not get_flag(data, ENGINE_QUERY) or user is None:
            return await handler(event, data)
        retry_in = self.limiter.hit(user.id)
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
        text = texts.rate_limited(self.limiter.per_minute, retry_in)
        if isinstance(event, CallbackQuery):
            await event.answer(text, show_alert=True)
        elif isinstance(event, Message) and event.bot is not None and self.limiter.should_warn(user.id, retry_in):
            await event.bot.send_message(
                event.chat.id, text, message_thread_id=event.message_thread_id if event.is_topic_message else None,
                reply_parameters=ReplyParameters(message_id=event.message_id, allow_sending_without_reply=True),
            )
        return None
