"""Cross-cutting concerns of the bot, as aiogram middlewares."""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from aiogram.types import TelegramObject

# The next step of aiogram's middleware chain.
Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]
