"""An album (media group) arrives as one update per photo; it is one query with one answer.

The first part's handler waits until no new part has come for `window_s` seconds (or the album
is full), then goes on with all parts in `data["album"]`; the other parts' updates stop here.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from aiogram import BaseMiddleware
from aiogram.types import Message, TelegramObject

from ..settings import ALBUM_MAX
from . import Handler


class Cancellable(Protocol):
    def cancel(self) -> None: ...


# Same shape as `loop.call_later`; tests pass a timer they fire themselves.
Timer = Callable[[float, Callable[[], None]], Cancellable]


@dataclass
class _Group:
    parts: dict[int, Message] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    handle: Cancellable | None = None
    first_seen: float = 0.0


class AlbumCollector:
    def __init__(self, window_s: float, *, timer: Timer | None = None, max_parts: int = ALBUM_MAX,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self.max_parts = max_parts
        self._timer = timer
        self._clock = clock
        self._groups: dict[tuple[int, str], _Group] = {}

    def pending(self) -> int:
        return len(self._groups)

    async def collect(self, message: Message, arrived: float | None = None) -> tuple[list[Message], float] | None:
        """All parts and the first part's arrival time for the first part's caller; None for the rest."""
        assert message.media_group_id is not None
        key = (message.chat.id, message.media_group_id)
        group = self._groups.get(key)
        if group is not None:
            group.parts.setdefault(message.message_id, message)  # Telegram may redeliver a part
            self._schedule(key, group)
            return None
        group = _Group(first_seen=self._clock() if arrived is None else arrived)
        group.parts[message.message_id] = message
        self._groups[key] = group
        self._schedule(key, group)
        try:
            await group.done.wait()
        finally:
            if group.handle is not None:
                group.handle.cancel()
            self._groups.pop(key, None)
        return [group.parts[i] for i in sorted(group.parts)], group.first_seen

    def _schedule(self, key: tuple[int, str], group: _Group) -> None:
        if group.handle is not None:
            group.handle.cancel()
            group.handle = None
        if len(group.parts) >= self.max_parts:
            group.done.set()
            return
        timer = self._timer or asyncio.get_running_loop().call_later
        group.handle = timer(self.window_s, group.done.set)

    def flush_all(self) -> None:
        """Release every album being collected now (at shutdown)."""
        for group in self._groups.values():
            group.done.set()


class Albums(Protocol):
    """What the middleware needs of a collector: `AlbumCollector` (this process) or
    `services.shared_state.RedisAlbumCollector` (parts spread over several processes)."""

    def pending(self) -> int: ...

    def flush_all(self) -> None: ...

    async def collect(self, message: Message, arrived: float | None = None) -> tuple[list[Message], float] | None: ...


class AlbumMiddleware(BaseMiddleware):
    def __init__(self, collector: Albums) -> None:
        self.collector = collector

    async def __call__(
        self,
        handler: Handler,
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        if not isinstance(event, Message) or event.media_group_id is None:
            return await handler(event, data)
        collected = await self.collector.collect(event, data.get("received_at"))
        if collected is None:
            return None
        data["album"], data["received_at"] = collected
        return await handler(event, data)
