"""Who may run a query now: a per-user rate limit and a queue in front of the engine workers."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Protocol


class UserRate(Protocol):
    """A per-user rate limit as the middleware sees it: this process's `RateLimiter`, or
    `shared_state.RedisRateLimiter` for all processes of the bot."""

    per_minute: int

    async def take(self, user_id: int) -> float: ...

    async def warn_once(self, user_id: int, retry_in: float) -> bool: ...


class RateLimiter:
    """At most `per_minute` hits per user in any sliding 60-second window (0 = no limit)."""

    def __init__(self, per_minute: int, *, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.window_s = window_s
        self._clock = clock
        self._hits: dict[int, deque[float]] = {}
        self._warned_until: dict[int, float] = {}

    def hit(self, user_id: int) -> float:
        """Record a hit; returns 0 when allowed, else the seconds until the next one would be."""
        if self.per_minute <= 0:
            return 0.0
        now = self._clock()
        hits = self._hits.setdefault(user_id, deque())
        while hits and hits[0] <= now - self.window_s:
            hits.popleft()
        if len(hits) >= self.per_minute:
            return max(0.01, hits[0] + self.window_s - now)
        hits.append(now)
        if len(self._hits) > 10_000:
            self._forget_idle(now)
        return 0.0

    def should_warn(self, user_id: int, retry_in: float) -> bool:
        """Whether to tell the user about a refusal: once per blocked span, so that someone
        flooding the bot does not make it flood the chat back."""
        now = self._clock()
        if self._warned_until.get(user_id, 0.0) > now:
            return False
        self._warned_until[user_id] = now + retry_in
        return True

    async def take(self, user_id: int) -> float:
        return self.hit(user_id)

    async def warn_once(self, user_id: int, retry_in: float) -> bool:
        return self.should_warn(user_id, retry_in)

    def _forget_idle(self, now: float) -> None:
        for uid in [u for u, h in self._hits.items() if not h or h[-1] <= now - self.window_s]:
            del self._hits[uid]
        for uid in [u for u, t in self._warned_until.items() if t <= now]:
            del self._warned_until[uid]


class QueueFull(Exception):
    def __init__(self, waiting: int) -> None:
        self.waiting = waiting
        super().__init__(f"{waiting} queries are already waiting")


class UserBusy(Exception):
    """The user already has as many queries running or waiting as allowed. `repeated`: they were
    already refused for it while the same query holds their place (a flood is told once)."""

    def __init__(self, repeated: bool = False) -> None:
        super().__init__("the user's places are taken" + (" (again)" if repeated else ""))
        self.repeated = repeated


@dataclass
class QueueStats:
    """What the queue did since start: how many queries ran at once, waited, were refused."""

    admitted: int = 0  # tickets given (ran at once or waited)
    waited: int = 0  # of those, how many had to wait for a worker
    refused_full: int = 0  # "my queue is full"
    refused_busy: int = 0  # "you already have a query running"
    peak_running: int = 0
    peak_waiting: int = 0


class QueryQueue:
    """`workers` queries run at once, up to `max_waiting` wait in FIFO order, and one user holds
    at most `per_user` places. Tickets know their place in line so users can be told.

    This is also what bounds the bot's memory: a query downloads and decodes its screenshots only
    once its ticket runs, so at most `workers` queries hold images, however many users send at
    once (benchmarks/bench_gateway_memory.py measures it); waiting tickets hold only file ids."""

    def __init__(self, workers: int, max_waiting: int, *, per_user: int = 1) -> None:
        self.workers = workers
        self.max_waiting = max_waiting
        self.per_user = per_user
        self._running: set[Ticket] = set()
        self._waiting: list[Ticket] = []
        self.closed = False
        self.stats = QueueStats()

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def enter(self, user_id: int) -> Ticket:
        held = [t for t in (*self._running, *self._waiting) if t.user_id == user_id]
        if len(held) >= self.per_user:
            self.stats.refused_busy += 1
            # Told once per query that holds the place: a flood of screenshots while one runs
            # gets one "you already have a query running", then silence.
            repeated = any(t.refused_busy for t in held)
            for t in held:
                t.refused_busy = True
            raise UserBusy(repeated)
        ticket = Ticket(self, user_id)
        if len(self._running) < self.workers and not self._waiting:
            self._running.add(ticket)
            ticket._granted = True
        elif len(self._waiting) >= self.max_waiting:
            self.stats.refused_full += 1
            raise QueueFull(len(self._waiting))
        else:
            self._waiting.append(ticket)
            self.stats.waited += 1
        self.stats.admitted += 1
        self.stats.peak_running = max(self.stats.peak_running, len(self._running))
        self.stats.peak_waiting = max(self.stats.peak_waiting, len(self._waiting))
        return ticket

    def _position(self, ticket: Ticket) -> int:
        if ticket in self._running:
            return 0
        return self._waiting.index(ticket) + 1 if ticket in self._waiting else 0

    def _release(self, ticket: Ticket) -> None:
        if ticket in self._running:
            self._running.discard(ticket)
        elif ticket in self._waiting:
            self._waiting.remove(ticket)
        else:
            return
        while self._waiting and len(self._running) < self.workers:
            nxt = self._waiting.pop(0)
            nxt._granted = True
            self._running.add(nxt)
            self.stats.peak_running = max(self.stats.peak_running, len(self._running))
        for waiting in (*self._running, *self._waiting):
            waiting._changed.set()


class Ticket:
    def __init__(self, queue: QueryQueue, user_id: int) -> None:
        self._queue = queue
        self.user_id = user_id
        self._granted = False
        self._changed = asyncio.Event()
        self.refused_busy = False  # the user was told this ticket holds their place

    @property
    def position(self) -> int:
        """0 once running, else the place in line (1 = next)."""
        return self._queue._position(self)

    async def wait(self, on_position: Callable[[int], None] | None = None) -> None:
        """Until this query may run; `on_position` hears every change of place in line."""
        try:
            last = None
            while not self._granted:
                position = self.position
                if on_position is not None and position != last:
                    on_position(position)
                last = position
                self._changed.clear()
                await self._changed.wait()
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        self._queue._release(self)

    async def __aenter__(self) -> Ticket:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()
