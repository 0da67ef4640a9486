"""State that several bot processes share through Redis (CASTFINDER_REDIS_URL): per-user rate
limits, the places a user holds in the query queue, and the parts of an album.

Each class has the same methods as its in-process counterpart (`limits.RateLimiter`,
`UserPlaces` below, `middlewares.albums.AlbumCollector`), which stays the default when no Redis
is configured. Every check is one Lua script, so two processes never both take the last place,
and times come from the Redis server's clock (`TIME`), so hosts whose clocks differ agree.

Redis lost while running: each call falls back to this process's own in-process state and logs
a warning (at most once a minute): the bot keeps answering, with limits counted per process
until Redis is back. Only a Redis that is down at start stops the bot (`connect`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Callable

from aiogram.types import Message

from ..settings import ALBUM_MAX
from .limits import RateLimiter, UserBusy
from .storage_backend import mask_url, scrub

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from ..middlewares.albums import AlbumCollector

log = logging.getLogger(__name__)

# A claim on a queue place outlives a crashed process by this much at most.
PLACE_LEASE_S = 900.0


class SharedStateError(Exception):
    """Redis cannot be used at start; the message is the user's one line."""


async def connect(url: str) -> Redis:
    """A client for `url` that answered PING, or SharedStateError naming CASTFINDER_REDIS_URL."""
    try:
        from redis.asyncio import Redis
        from redis.exceptions import RedisError
    except ImportError:
        raise SharedStateError("CASTFINDER_REDIS_URL is set but the redis package is not installed: "
                               "pip install 'castfinder[redis]'") from None
    try:
        client: Redis = Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3, health_check_interval=30)
    except ValueError as exc:
        raise SharedStateError(f"CASTFINDER_REDIS_URL={mask_url(url)!r} is not a Redis URL ({exc}); "
                               "expected e.g. redis://127.0.0.1:6379/0") from None
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        await client.aclose()
        reason = scrub(str(exc), url)
        raise SharedStateError(f"cannot reach Redis at CASTFINDER_REDIS_URL={mask_url(url)}: {reason}") from None
    return client


class _Fallback:
    """Warns (once a minute) that Redis failed and this process counts on its own."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._warned = 0.0

    def __call__(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._warned >= 60:
            self._warned = now
            log.warning("Redis failed (%s): %s counted by this process alone until it is back", exc, self.what)


def _redis_errors() -> tuple[type[BaseException], ...]:
    from redis.exceptions import RedisError

    return RedisError, OSError


class SeenUpdates:
    """Update ids this process has taken (the latest `keep`): Telegram delivers an update again
    when it got no 200 in time, and it must not be answered twice."""

    def __init__(self, keep: int = 10_000) -> None:
        self.keep = keep
        self._seen: dict[int, None] = {}

    async def first(self, update_id: int) -> bool:
        if update_id in self._seen:
            return False
        self._seen[update_id] = None
        if len(self._seen) > self.keep:
            del self._seen[next(iter(self._seen))]
        return True


class RedisSeenUpdates:
    """`SeenUpdates` across processes: a redelivered update may reach another process."""

    def __init__(self, client: Redis, prefix: str, *, keep_s: int = 86_400) -> None:
        self._client = client
        self._prefix = prefix
        self.keep_s = keep_s
        self.local = SeenUpdates()
        self._failed = _Fallback("repeated updates")

    async def first(self, update_id: int) -> bool:
        try:
            return bool(await self._client.set(f"{self._prefix}update:{update_id}", 1, nx=True, ex=self.keep_s))
        except _redis_errors() as exc:
            self._failed(exc)
            return await self.local.first(update_id)


_HIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return math.max(10, tonumber(oldest[2]) + window - now)
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], window)
return 0
"""


class RedisRateLimiter:
    """`limits.RateLimiter`'s sliding window, counted in Redis for all processes of the bot."""

    def __init__(self, client: Redis, prefix: str, per_minute: int, *, window_s: float = 60.0) -> None:
        self.per_minute = per_minute
        self.window_s = window_s
        self._client = client
        self._prefix = prefix
        self._hit = client.register_script(_HIT)
        self.local = RateLimiter(per_minute, window_s=window_s)
        self._failed = _Fallback(f"rate limits ({prefix})")

    async def take(self, user_id: int) -> float:
        if self.per_minute <= 0:
            return 0.0
        try:
            ms = await self._hit(keys=[f"{self._prefix}hits:{user_id}"],
                                 args=[self.per_minute, int(self.window_s * 1000), uuid.uuid4().hex])
        except _redis_errors() as exc:
            self._failed(exc)
            return self.local.hit(user_id)
        return int(ms) / 1000

    async def warn_once(self, user_id: int, retry_in: float) -> bool:
        try:
            first = await self._client.set(f"{self._prefix}warned:{user_id}", 1, nx=True,
                                           px=max(1, int(retry_in * 1000)))
        except _redis_errors() as exc:
            self._failed(exc)
            return self.local.should_warn(user_id, retry_in)
        return bool(first)


_CLAIM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[3]) then return 0 end
  return -1
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""


class RedisUserPlaces:
    """The places (running or queued queries) each user holds, across all processes: at most
    `per_user`. The queue of engine workers itself stays per process (`limits.QueryQueue`):
    each process has its own engine threads. A claim a crashed process never released lapses
    after PLACE_LEASE_S."""

    def __init__(self, client: Redis, prefix: str, per_user: int, *, lease_s: float = PLACE_LEASE_S) -> None:
        self.per_user = per_user
        self.lease_s = lease_s
        self._client = client
        self._prefix = prefix
        self._claim = client.register_script(_CLAIM)
        self._failed = _Fallback("busy users")

    @asynccontextmanager
    async def hold(self, user_id: int) -> AsyncIterator[None]:
        """Hold one of the user's places for the block; UserBusy when all are taken (`repeated`:
        the user was already told while the same queries hold them)."""
        token = uuid.uuid4().hex
        places, told = f"{self._prefix}places:{user_id}", f"{self._prefix}busy-told:{user_id}"
        try:
            got = int(await self._claim(keys=[places, told], args=[self.per_user, token, int(self.lease_s * 1000)]))
        except _redis_errors() as exc:
            self._failed(exc)  # the process's own QueryQueue still holds its per-user limit
            got = 1
        if got <= 0:
            raise UserBusy(repeated=got < 0)
        try:
            yield
        finally:
            try:
                await self._client.zrem(places, token)
                await self._client.delete(told)
            except _redis_errors() as exc:
                self._failed(exc)


_NOTE_PART = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('SET', KEYS[2], now, 'PX', ARGV[3])
if redis.call('SET', KEYS[3], ARGV[4], 'NX', 'PX', ARGV[3]) then return 1 end
return 0
"""

_QUIET_FOR = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local last = tonumber(redis.call('GET', KEYS[2]) or now)
return {now - last, redis.call('HLEN', KEYS[1])}
"""


class RedisAlbumCollector:
    """`AlbumCollector` for parts that reach different processes. Every part is stored in Redis
    as it arrives and stamps the album's "last part" time; the process that saw the first part
    claims the album and, once no part has come to ANY process for `window_s` (or the album is
    full), answers it with all its parts. The other processes' parts stop here. A part arriving
    after the album was answered is dropped (the claim is kept for a minute)."""

    def __init__(self, client: Redis, prefix: str, window_s: float, *, local: AlbumCollector,
                 max_parts: int = ALBUM_MAX, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self.max_parts = max_parts
        self.local = local
        self._client = client
        self._prefix = prefix
        self._clock = clock
        self._note = client.register_script(_NOTE_PART)
        self._quiet = client.register_script(_QUIET_FOR)
        self._ttl_ms = int(max(60.0, window_s * 10) * 1000)
        self._flushed = asyncio.Event()
        self._waiting = 0
        self._failed = _Fallback("albums")

    def pending(self) -> int:
        return self._waiting + self.local.pending()

    def flush_all(self) -> None:
        self._flushed.set()
        self.local.flush_all()

    async def collect(self, message: Message, arrived: float | None = None) -> tuple[list[Message], float] | None:
        assert message.media_group_id is not None
        first_seen = self._clock() if arrived is None else arrived
        base = f"{self._prefix}album:{message.chat.id}:{message.media_group_id}:"
        keys = [base + "parts", base + "last", base + "owner"]
        try:
            owner = await self._note(keys=keys, args=[message.message_id, message.model_dump_json(exclude_none=True),
                                                      self._ttl_ms, uuid.uuid4().hex])
            if not int(owner):
                return None
            raw = await self._gather(keys)
        except _redis_errors() as exc:
            self._failed(exc)
            return await self.local.collect(message, arrived)
        bot = message.bot
        parts = [Message.model_validate(json.loads(v)) for _, v in sorted(raw.items(), key=lambda kv: int(kv[0]))]
        if bot is not None:
            parts = [p.as_(bot) for p in parts]
        return parts, first_seen

    async def _gather(self, keys: list[str]) -> dict[Any, Any]:
        self._waiting += 1
        try:
            while not self._flushed.is_set():
                quiet_ms, count = await self._quiet(keys=keys[:2])
                left = self.window_s - int(quiet_ms) / 1000
                if int(count) >= self.max_parts or left <= 0:
                    break
                try:  # the album window itself, cut short at shutdown
                    await asyncio.wait_for(self._flushed.wait(), left)
                except asyncio.TimeoutError:
                    pass
            raw: dict[Any, Any] = await self._client.hgetall(keys[0])
            await self._client.delete(keys[0], keys[1])
            return raw
        finally:
            self._waiting -= 1
