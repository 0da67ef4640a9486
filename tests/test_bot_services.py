"""Unit tests of the bot's services and middlewares, with injected clocks, timers and sleeps."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import aiosqlite
import pytest
from aiogram.exceptions import TelegramNetworkError, TelegramRetryAfter, TelegramServerError
from aiogram.methods import GetUpdates, SendMessage

from bot.addressing import parse_caption
from bot.middlewares.albums import AlbumCollector
from bot.middlewares.retry import RetryMiddleware
from bot.services.limits import QueryQueue, QueueFull, RateLimiter, UserBusy
from bot.services.storage import SCHEMA_VERSION, SchemaTooNewError, Storage, StoredResult, migrate, schema_version
from tests.bot_support import ManualTimer


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- rate limit -----------------------------------------------------------------------------
def test_rate_limiter_allows_n_per_sliding_minute_per_user() -> None:
    clock = Clock()
    limiter = RateLimiter(3, clock=clock)
    assert [limiter.hit(1) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.hit(1) == pytest.approx(60.0)
    assert limiter.hit(2) == 0.0  # per user
    clock.now += 30
    assert limiter.hit(1) == pytest.approx(30.0)
    clock.now += 30.001
    assert limiter.hit(1) == 0.0  # the first hit left the window


def test_rate_limiter_warns_once_per_blocked_span_and_zero_disables() -> None:
    clock = Clock()
    limiter = RateLimiter(1, clock=clock)
    limiter.hit(1)
    wait = limiter.hit(1)
    assert limiter.should_warn(1, wait) and not limiter.should_warn(1, wait)
    clock.now += wait + 1
    assert limiter.should_warn(1, 5.0)
    unlimited = RateLimiter(0, clock=clock)
    assert all(unlimited.hit(1) == 0.0 for _ in range(1000))


# -- queue ----------------------------------------------------------------------------------
async def test_queue_runs_n_then_queues_in_order_and_reports_places() -> None:
    queue = QueryQueue(workers=1, max_waiting=2, per_user=1)
    a = queue.enter(1)
    b, c = queue.enter(2), queue.enter(3)
    assert (a.position, b.position, c.position) == (0, 1, 2)
    with pytest.raises(QueueFull):
        queue.enter(4)
    with pytest.raises(UserBusy):
        queue.enter(2)  # user 2 is already waiting
    places: list[int] = []
    reported = asyncio.Event()

    def on_place(place: int) -> None:
        places.append(place)
        reported.set()

    waiter = asyncio.create_task(c.wait(on_place))
    await reported.wait()
    reported.clear()
    a.release()
    await b.wait()  # b is next: it runs at once
    await reported.wait()
    assert (b.position, c.position) == (0, 1) and queue.running == 1
    b.release()
    await waiter
    assert places == [2, 1] and c.position == 0
    c.release()
    assert (queue.running, queue.waiting) == (0, 0)


async def test_a_cancelled_waiter_leaves_the_line() -> None:
    queue = QueryQueue(workers=1, max_waiting=5)
    running = queue.enter(1)
    waiting = queue.enter(2)
    started = asyncio.Event()
    task = asyncio.create_task(waiting.wait(lambda _: started.set()))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert queue.waiting == 0
    running.release()
    assert queue.running == 0


# -- albums ---------------------------------------------------------------------------------
def part(message_id: int, group: str = "g1", chat_id: int = 7) -> SimpleNamespace:
    return SimpleNamespace(message_id=message_id, media_group_id=group, chat=SimpleNamespace(id=chat_id))


async def test_album_collector_returns_all_parts_once_to_the_first_caller() -> None:
    timer = ManualTimer()
    collector = AlbumCollector(1.0, timer=timer)
    first = asyncio.create_task(collector.collect(part(10), arrived=5.0))
    await timer.wait_scheduled(1)
    assert await collector.collect(part(12)) is None
    assert await collector.collect(part(11)) is None
    assert await collector.collect(part(11)) is None  # a redelivered part is not counted twice
    assert len(timer.handles) == 4 and sum(not h.cancelled for h in timer.handles) == 1  # window re-armed
    assert not first.done()
    timer.fire()
    parts, arrived = await first
    assert [p.message_id for p in parts] == [10, 11, 12] and arrived == 5.0
    assert collector.pending() == 0


async def test_album_collector_keeps_albums_apart_and_stops_at_ten() -> None:
    timer = ManualTimer()
    collector = AlbumCollector(1.0, timer=timer, max_parts=10)
    a = asyncio.create_task(collector.collect(part(1, "a")))
    b = asyncio.create_task(collector.collect(part(1, "a", chat_id=8)))  # same id, other chat
    await timer.wait_scheduled(2)
    for i in range(2, 11):
        assert await collector.collect(part(i, "a")) is None
    parts, _ = await a  # full: released without the timer
    assert len(parts) == 10 and not b.done()
    timer.fire()
    assert len((await b)[0]) == 1


# -- retries --------------------------------------------------------------------------------
class Flaky:
    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self, bot, method):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


async def test_retry_waits_what_telegram_asks_and_backs_off_on_network_errors() -> None:
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    method = SendMessage(chat_id=1, text="hi")
    retry = RetryMiddleware(attempts=4, base_delay=0.5, sleep=sleep)
    flaky = Flaky(TelegramRetryAfter(method, "Too Many Requests", 7), TelegramNetworkError(method, "reset"),
                  TelegramServerError(method, "Bad Gateway"))
    assert await retry(flaky, None, method) == "ok"
    assert slept == [7, 1.0, 2.0] and flaky.calls == 4


async def test_retry_gives_up_after_its_attempts_and_on_absurd_waits() -> None:
    async def sleep(s: float) -> None:
        pass

    method = SendMessage(chat_id=1, text="hi")
    retry = RetryMiddleware(attempts=2, sleep=sleep, max_retry_after=60)
    flaky = Flaky(*[TelegramNetworkError(method, "down")] * 5)
    with pytest.raises(TelegramNetworkError):
        await retry(flaky, None, method)
    assert flaky.calls == 3
    with pytest.raises(TelegramRetryAfter):
        await retry(Flaky(TelegramRetryAfter(method, "Too Many Requests", 3600)), None, method)
    polls = Flaky(TelegramNetworkError(method, "down"))
    with pytest.raises(TelegramNetworkError):  # long polls are aiogram's to retry
        await retry(polls, None, GetUpdates())


# -- storage (each test once per backend: SQLite and PostgreSQL) ------------------------------
async def raw_execute(target: Path | str, sql: str) -> None:
    """`sql` straight on the database, past Storage (as an older castfinder or an admin would)."""
    if isinstance(target, Path):
        async with aiosqlite.connect(target) as raw:
            await raw.execute(sql)
            await raw.commit()
        return
    import asyncpg

    conn = await asyncpg.connect(target)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def migrated_to(target: Path | str, version: int) -> None:
    """The database as castfinder at schema `version` left it."""
    if isinstance(target, Path):
        async with aiosqlite.connect(target) as raw:
            await migrate(raw, target=version)
            assert await schema_version(raw) == version
        return
    import asyncpg

    from bot.services import storage_postgres

    conn = await asyncpg.connect(target)
    try:
        await storage_postgres.migrate(conn, target=version)
        assert await storage_postgres.schema_version(conn) == version
    finally:
        await conn.close()


async def stored_version(target: Path | str) -> list[tuple[int]]:
    if isinstance(target, Path):
        with sqlite3.connect(target) as raw:
            return raw.execute("SELECT version FROM schema_version").fetchall()
    import asyncpg

    conn = await asyncpg.connect(target)
    try:
        return [tuple(r) for r in await conn.fetch("SELECT version FROM schema_version")]
    finally:
        await conn.close()


async def test_storage_creates_the_schema_and_keeps_settings_across_restarts(db_target: Path | str) -> None:
    target = db_target.parent / "sub" / "bot.sqlite3" if isinstance(db_target, Path) else db_target
    db = await Storage.open(target, default_topk=5)
    assert (await db.chat(1)).topk == 5 and (await db.chat(1)).movie_slug is None
    await db.set_movie(1, "heat", "Heat")
    await db.set_topk(1, 12)
    await db.set_topk(2, 3)
    await db.set_movie(-1001234567890, "heat", "Heat")  # a supergroup's id needs 64 bits
    await db.close()
    db = await Storage.open(target, default_topk=5)
    try:
        assert (await db.chat(1)).movie_slug == "heat" and (await db.chat(1)).topk == 12
        assert (await db.chat(2)).movie_slug is None and (await db.chat(2)).topk == 3
        assert (await db.chat(-1001234567890)).movie_name == "Heat"
    finally:
        await db.close()
    assert await stored_version(target) == [(SCHEMA_VERSION,)]


@pytest.mark.parametrize("version", range(SCHEMA_VERSION))
async def test_storage_migrates_an_older_database_and_refuses_a_newer_one(db_target: Path | str, version: int) -> None:
    await migrated_to(db_target, version)
    if version >= 1:
        await raw_execute(db_target, "INSERT INTO chat_settings (chat_id, movie_slug, movie_name, topk, updated_at) "
                                     "VALUES (5, 'heat', 'Heat', 7, 0)")
    db = await Storage.open(db_target)
    try:
        assert (await db.chat(5)).topk == (7 if version >= 1 else 5)  # data kept
        page = await db.save_results(chat_id=5, user_id=5, reply_to=1, thread_id=None, movie="Heat", page_size=5,
                                     results=[StoredResult(1, 3, None, 1.0, 2.0, 0.9, "/t.jpg", False)], notes=[],
                                     query=b"\x00vectors")
        assert (await db.results(page.id, chat_id=5)).results[0].shot == 3  # the new tables work
        assert await db.query_vectors(page.id, chat_id=5) == b"\x00vectors"
    finally:
        await db.close()
    assert await stored_version(db_target) == [(SCHEMA_VERSION,)]
    await raw_execute(db_target, f"UPDATE schema_version SET version = {SCHEMA_VERSION + 1}")
    setting = "CASTFINDER_DB_PATH" if isinstance(db_target, Path) else "CASTFINDER_DATABASE_URL"
    with pytest.raises(SchemaTooNewError, match=f"newer than this castfinder.*{setting}"):
        await Storage.open(db_target)


async def test_result_pages_and_picks_expire(db_target: Path | str) -> None:
    clock = Clock(0.0)
    db = await Storage.open(db_target, clock=clock)
    try:
        old = await db.save_pick(chat_id=1, user_id=1, message_id=3, thread_id=None, file_id="f", movie_slug="heat",
                                 people=[{"index": 1, "bbox": [0, 0, 1, 1], "score": 0.9, "area_fraction": 0.1}])
        assert (await db.pick(old.id, chat_id=1)).people[0]["bbox"] == [0, 0, 1, 1]
        assert await db.pick(old.id, chat_id=2) is None  # bound to its chat
        clock.now = 10 * 86400
        new = await db.save_results(chat_id=1, user_id=1, reply_to=None, thread_id=None, movie="Heat", page_size=5,
                                    results=[], notes=["n"])
        assert await db.results(new.id, chat_id=2) is None
        assert await db.purge(7 * 86400) == 1
        assert await db.pick(old.id, chat_id=1) is None and (await db.results(new.id, chat_id=1)).notes == ["n"]
    finally:
        await db.close()


async def test_stats_summarise_the_query_log(db_target: Path | str) -> None:
    from bot.services.storage import FeedbackTap, QueryLogEntry

    db = await Storage.open(db_target)
    try:
        for i, (outcome, latency) in enumerate([("ok", 100.0), ("ok", 300.0), ("ok", 200.0), ("no_movie", 5.0)]):
            await db.log_query(QueryLogEntry(10 + i % 2, "private", i % 3, "heat", 1, 3, outcome, latency, 50.0))
        page = await db.save_results(chat_id=10, user_id=0, reply_to=None, thread_id=None, movie="Heat", page_size=5,
                                     results=[], notes=[])
        for verdict in ("yes", "no", "no"):
            await db.add_feedback(page, user_id=0, tap=FeedbackTap(verdict, 7, 1))
        assert [t.verdict for t in await db.feedback(page)] == ["yes", "no", "no"]
        s = await db.stats()
        assert (s.total, s.users, s.chats) == (4, 3, 2)
        assert s.outcomes == {"ok": 3, "no_movie": 1}
        assert s.latency_p50_ms == 200.0 and s.latency_p95_ms == pytest.approx(290.0)
        assert s.top_movies == [("heat", 3)]
        assert (s.corrected, s.rejected, s.yes_taps, s.no_taps) == (1, 1, 1, 2)
        recent = await db.recent_queries(2)
        assert [r["latency_ms"] for r in recent] == [200.0, 5.0] and recent[0]["engine_ms"] == 50.0
    finally:
        await db.close()


# -- captions -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("caption", "addressed", "other", "movie", "explicit"),
    [
        (None, False, False, None, False),
        ("Heat", False, False, "Heat", False),
        ("/movie Heat", True, False, "Heat", True),
        ("/movie@CastFinder_Test_Bot  The   Godfather ", True, False, "The Godfather", True),
        ("/movie@other_bot Heat", False, True, None, False),
        ("/movie", True, False, None, False),
        ("/help", True, False, None, False),
        ("@castfinder_test_bot heat", True, False, "heat", True),
        ("who is this @castfinder_test_bot", True, False, "who is this", True),
        ("@castfinder_test_bot", True, False, None, False),
        ("mail me at x@castfinder_test_bot.com", False, False, "mail me at x@castfinder_test_bot.com", False),
    ],
)
def test_captions_say_whether_they_are_for_the_bot_and_which_movie(caption, addressed, other, movie, explicit) -> None:
    intent = parse_caption(caption, "castfinder_test_bot")
    got = (intent.addressed, intent.for_other_bot, intent.movie, intent.explicit)
    assert got == (addressed, other, movie, explicit)


# -- answer texts ---------------------------------------------------------------------------
def test_result_texts_mark_weak_matches_and_escape_movie_names() -> None:
    from bot import texts
    from tests.fake_telegram import parse_formatted_text

    sure = StoredResult(1, 12, None, 201.45, 207.9, 0.834, "/t1.jpg", False)
    weak = StoredResult(2, 40, 2, 3725.0, 3730.25, 0.31, "/t2.jpg", True)
    assert texts.result_caption(sure) == "#1 · shot 12 · 00:03:21.4–00:03:27.9 · 83%"
    # A frames-folder index numbers shots per scene: scene/shot, as the CLI prints it.
    assert texts.result_caption(weak) == "#2 · shot 2/40 · 01:02:05.0–01:02:10.2 · 31% · ⚠️ weak match"
    mixed, _ = parse_formatted_text(texts.results_text("Fast & <Furious>", [sure, weak], total=9, notes=[]), "HTML")
    assert mixed.splitlines()[0] == "Fast & <Furious>: best shots 1–2 of 9:"
    assert "Weak matches are under the confidence threshold" in mixed
    only_weak, _ = parse_formatted_text(texts.results_text("Heat", [weak], total=9, notes=["note"]), "HTML")
    assert only_weak.splitlines()[0] == "No confident match in Heat; the closest shots (2 of 9):"
    assert only_weak.splitlines()[-1] == "note"
    sure_only, _ = parse_formatted_text(texts.results_text("Heat", [sure], total=1, notes=[]), "HTML")
    assert "weak" not in sure_only.lower()
