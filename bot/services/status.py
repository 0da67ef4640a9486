"""One status message per query, edited as the stages advance.

Telegram allows about one edit per second per chat (fewer in groups) before answering 429, and
a search reports progress much faster than that. Updates only record the wanted text; a single
task edits the message at most once per `interval` seconds and skips texts already superseded.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager, suppress
from typing import AsyncIterator, Awaitable, Callable

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest
from aiogram.types import ReplyParameters

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


class StatusMessage:
    def __init__(
        self,
        bot: Bot,
        chat_id: int,
        *,
        reply_to: int | None,
        thread_id: int | None = None,
        interval: float = 2.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.bot = bot
        self.chat_id = chat_id
        self.reply_to = reply_to
        self.thread_id = thread_id
        self.interval = interval
        self._sleep = sleep
        self.message_id: int | None = None
        self.shown: str | None = None
        self._wanted: str | None = None
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False

    async def start(self, text: str) -> None:
        """Send the message now. Unlike later updates this raises: a chat that refuses the
        first message (the user blocked the bot) should not cost a search."""
        if self.message_id is None and not self._closed:
            self._idle.clear()
            try:
                await self._show(text)
            finally:
                self._idle.set()

    def update(self, text: str) -> None:
        """Ask for `text` to be shown; safe to call as often as progress arrives."""
        if self._closed:
            return
        self._wanted = text
        self._changed.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="castfinder-status")

    async def _run(self) -> None:
        while not self._closed:
            await self._changed.wait()
            self._changed.clear()
            text = self._wanted
            if text is None or text == self.shown:
                continue
            self._idle.clear()
            try:
                await self._show(text)
            except TelegramBadRequest as exc:
                # "message is not modified" or the message was deleted: nothing to repair.
                log.debug("status edit skipped in chat %s: %s", self.chat_id, exc)
            except TelegramAPIError as exc:
                log.info("status update failed in chat %s: %s", self.chat_id, exc)
            finally:
                self._idle.set()
            await self._sleep(self.interval)

    async def _show(self, text: str) -> None:
        if self.message_id is None:
            message = await self.bot.send_message(
                self.chat_id,
                text,
                message_thread_id=self.thread_id,
                reply_parameters=_reply(self.reply_to),
            )
            self.message_id = message.message_id
        else:
            await self.bot.edit_message_text(text=text, chat_id=self.chat_id, message_id=self.message_id)
        self.shown = text

    async def close(self, *, final_text: str | None = None) -> None:
        """Stop updating; delete the message, or leave it showing `final_text`. Only the first
        call acts: a query that was cancelled keeps its "stopped" text."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            # Never cut a send short: its message would be left behind with no id to delete.
            await self._idle.wait()
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        if self.message_id is None:
            if final_text is not None:
                with suppress(TelegramAPIError):
                    await self._show(final_text)
            return
        with suppress(TelegramAPIError):
            if final_text is None:
                await self.bot.delete_message(self.chat_id, self.message_id)
            elif final_text != self.shown:
                await self.bot.edit_message_text(text=final_text, chat_id=self.chat_id, message_id=self.message_id)


def _reply(message_id: int | None) -> ReplyParameters | None:
    if message_id is None:
        return None
    return ReplyParameters(message_id=message_id, allow_sending_without_reply=True)


@asynccontextmanager
async def chat_action(
    bot: Bot, chat_id: int, *, thread_id: int | None = None, action: str = "upload_photo", interval: float = 4.5
) -> AsyncIterator[None]:
    """Keep "sending a photo…" showing while the block runs (Telegram clears it after 5 s).
    Failures are ignored: the action is decoration, the answer is what matters."""

    async def repeat() -> None:
        while True:
            try:
                await bot.send_chat_action(chat_id, action, message_thread_id=thread_id)
            except TelegramAPIError as exc:
                log.debug("chat action in %s failed: %s", chat_id, exc)
            await asyncio.sleep(interval)

    task = asyncio.get_running_loop().create_task(repeat(), name="castfinder-chat-action")
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
