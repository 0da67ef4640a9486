"""Stamps each update with the time it reached the bot, for the latency in the query log."""

from __future__ import annotations

import time
from typing import Any, Callable

from aiogram import BaseMiddleware
from aiogram.types import TelegramObject

from . import Handler


class ReceivedAtMiddleware(BaseMiddleware):
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock

    async def __call__(
        self,
        handler: Handler,
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        data.setdefault("received_at", self.clock())
        return await handler(event, data)
