"""Bot API requests that Telegram refuses for a while are tried again.

- 429 `TelegramRetryAfter`: wait exactly what Telegram asks, then resend.
- network errors and 5xx: retry with exponential backoff.
Long polls are left to aiogram's own polling backoff.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from aiogram import Bot
from aiogram.client.session.middlewares.base import BaseRequestMiddleware, NextRequestMiddlewareType
from aiogram.exceptions import (
    TelegramEntityTooLarge,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.methods import GetUpdates, Response, TelegramMethod
from aiogram.methods.base import TelegramType

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


class RetryMiddleware(BaseRequestMiddleware):
    def __init__(
        self,
        *,
        attempts: int = 4,
        base_delay: float = 0.5,
        max_delay: float = 10.0,
        max_retry_after: float = 120.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.max_retry_after = max_retry_after
        self._sleep = sleep

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        # Long polls are tried once: aiogram's polling loop has its own back-off.
        attempts = 0 if isinstance(method, GetUpdates) else self.attempts
        name = type(method).__name__
        retries = 0
        while True:
            try:
                return await make_request(bot, method)
            except TelegramRetryAfter as exc:
                if retries >= attempts or exc.retry_after > self.max_retry_after:
                    raise
                log.warning("flood control on %s: waiting %s s as Telegram asks", name, exc.retry_after)
                await self._sleep(exc.retry_after)
            except TelegramEntityTooLarge:
                raise
            except (TelegramNetworkError, TelegramServerError) as exc:
                if retries >= attempts:
                    raise
                delay = min(self.max_delay, self.base_delay * 2**retries)
                log.warning("%s failed (%s); retry %d in %.1f s", name, exc.message, retries + 1, delay)
                await self._sleep(delay)
            retries += 1
