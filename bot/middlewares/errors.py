"""Nothing a user sends may crash the bot: the last line of defence around every update."""

from __future__ import annotations

import logging
from contextlib import suppress
from typing import Any

from aiogram import BaseMiddleware
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest
from aiogram.types import ReplyParameters, TelegramObject, Update

from ..errors import explain
from . import Handler

log = logging.getLogger(__name__)


class ErrorsMiddleware(BaseMiddleware):
    async def __call__(
        self,
        handler: Handler,
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        try:
            return await handler(event, data)
        except TelegramBadRequest as exc:
            # Telegram refused the answer itself (a callback too old to answer, a message gone):
            # another message about it would be refused the same way, or be noise.
            log.warning("Telegram refused a request while handling update %s: %s",
                        getattr(event, "update_id", "?"), exc.message)
        except Exception as exc:
            why = explain(exc)
            if why.unexpected:
                log.exception("unexpected error handling update %s", getattr(event, "update_id", "?"))
            if why.html is None:
                if why.outcome == "blocked":
                    chat = data.get("event_chat")
                    log.info("chat %s is closed to the bot (%s); update skipped", getattr(chat, "id", "?"), exc)
            else:
                await self._tell(event, data, why.html)
        return None

    @staticmethod
    async def _tell(event: TelegramObject, data: dict[str, Any], text: str) -> None:
        chat = data.get("event_chat")
        bot = data.get("bot")
        if chat is None or bot is None:
            return
        thread_id = data.get("event_thread_id")
        reply = None
        if isinstance(event, Update) and event.message is not None:
            reply = ReplyParameters(message_id=event.message.message_id, allow_sending_without_reply=True)
        with suppress(TelegramAPIError):
            if isinstance(event, Update) and event.callback_query is not None:
                with suppress(TelegramAPIError):
                    await event.callback_query.answer()
            await bot.send_message(chat.id, text, message_thread_id=thread_id, reply_parameters=reply)
