"""The bot as several processes: two real `castfinder bot --webhook` processes behind one webhook
endpoint (a round-robin proxy), sharing a Redis started here and one SQLite database, talking to
the fake Bot API. 200 updates from 50 users, albums split across the processes, rate-limited
bursts, "More" pressed on the process that did not answer: every query answered exactly once.

The bot processes use the tests' stand-in engine (CASTFINDER_BOT_ENGINE=tests.bot_support:
stub_engine: canned results, the real image decoder): loading models twice would cost a minute
on a small box and prove nothing about the processes. Skips when redis-server is not installed.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from tests.bot_support import jpeg
from tests.fake_telegram import Call, FakeTelegramServer, callback_update, message_update, private_chat, user
from tests.webhook_support import SECRET, BotProcess, RedisServer, RoundRobinProxy, start_bot, wait_exit

requires_redis = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="needs redis-server (Debian package redis-server; .ci/run installs it)")

QUERY_RATE = 3  # CASTFINDER_USER_RATE of the processes: queries per minute per user


@pytest.fixture
def redis(tmp_path: Path) -> Any:
    server = RedisServer(tmp_path)
    yield server
    server.stop()


@dataclass
class Cluster:
    srv: FakeTelegramServer
    proxy: RoundRobinProxy
    bots: list[BotProcess]

    def user(self, n: int) -> tuple[dict[str, Any], dict[str, Any]]:
        uid = 7000 + n
        return user(uid, f"U{n}"), private_chat(uid, f"U{n}")

    def photo(self, n: int, **kwargs: Any) -> dict[str, Any]:
        who, chat = self.user(n)
        return self.srv.webhook_update(message_update(self.srv, chat=chat, from_user=who, photo_bytes=jpeg(),
                                                      caption="/movie Heat", **kwargs))

    def text(self, n: int, text: str) -> dict[str, Any]:
        who, chat = self.user(n)
        return self.srv.webhook_update(message_update(self.srv, chat=chat, from_user=who, text=text))

    def logs(self) -> str:
        return "\n".join(f"--- {i}:\n{b.output()[-3000:]}" for i, b in enumerate(self.bots))


def replies_to(srv: FakeTelegramServer, message: dict[str, Any], needle: str) -> list[Call]:
    chat, mid = message["chat"]["id"], message["message_id"]
    return [c for c in srv.calls_of("sendMessage")
            if not c.failed and c.params["chat_id"] == chat and needle in c.params["text"]
            and (c.params.get("reply_parameters") or {}).get("message_id") == mid]


def more_data(listing: Call) -> str:
    [data] = [b["callback_data"] for row in listing.params["reply_markup"]["inline_keyboard"] for b in row
              if b["callback_data"].startswith("mr:")]
    return data


@pytest.fixture
async def cluster(tmp_path: Path, redis: RedisServer) -> AsyncIterator[Cluster]:
    db = tmp_path / "bot.sqlite3"  # new: both processes' first start migrates it, one at a time
    async with FakeTelegramServer() as srv, RoundRobinProxy() as proxy:
        settings = {
            "BOT_TOKEN": srv.token, "CASTFINDER_TELEGRAM_API_BASE": srv.base_url, "CASTFINDER_DB_PATH": str(db),
            "CASTFINDER_REDIS_URL": redis.url, "CASTFINDER_WEBHOOK_SECRET": SECRET,
            "CASTFINDER_BOT_ENGINE": "tests.bot_support:stub_engine", "CASTFINDER_INDEX_DIR": str(tmp_path / "thumbs"),
            "CASTFINDER_ALBUM_WAIT_S": "0.5", "CASTFINDER_USER_RATE": str(QUERY_RATE),
            "CASTFINDER_USER_MAX_ACTIVE": "5", "CASTFINDER_QUEUE_SIZE": "500", "CASTFINDER_STATUS_INTERVAL_S": "0",
            "CASTFINDER_SHUTDOWN_GRACE_S": "30",
        }
        bots = [start_bot(tmp_path, f"bot{i}", proxy.url, settings) for i in range(2)]
        proxy.backends = [b.url for b in bots]
        cluster = Cluster(srv, proxy, bots)
        try:
            # Ready = listening (setWebhook comes after the server is up).
            await srv.wait_for("setWebhook", 2, timeout=150)
            yield cluster
        except BaseException:
            print(cluster.logs())
            raise
        finally:
            for bot in bots:
                if bot.proc.poll() is None:
                    bot.proc.kill()
                    bot.proc.wait()


async def refuse_bad_requests(cluster: Cluster) -> None:
    """Posted straight to one process: no secret or a wrong one (403), bodies that are not an
    update (400); then a good update, answered. The refused ones are never handled."""
    bot = cluster.bots[0]
    intruder = cluster.text(60, "/help")
    async with ClientSession() as http:
        for headers in ({}, {"X-Telegram-Bot-Api-Secret-Token": "wrong"}):
            async with http.post(bot.url, json=intruder, headers=headers) as response:
                assert response.status == 403
        good = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
        for body in (b"{not json", b"[1, 2]", b'{"update_id": "x", "message": 5}'):
            async with http.post(bot.url, data=body, headers={**good, "Content-Type": "application/json"}) as response:
                assert response.status == 400, body
        async with http.post(bot.url, json=cluster.text(61, "/help"), headers=good) as response:
            assert response.status == 200
    await cluster.srv.wait_until(lambda calls: any(c.params.get("chat_id") == 7061 for c in calls))


@requires_redis
async def test_two_webhook_processes_answer_every_query_once(cluster: Cluster) -> None:
    srv, proxy = cluster.srv, cluster.proxy
    for call in srv.calls_of("setWebhook"):
        assert call.params["url"] == proxy.url and call.params["secret_token"] == SECRET
        assert "callback_query" in call.params["allowed_updates"]
    await refuse_bad_requests(cluster)

    sent = 0
    singles: list[dict[str, Any]] = []  # users 0-19: one screenshot each
    for n in range(20):
        singles.append(cluster.photo(n))
        await proxy.post(singles[-1])
    await proxy.post(singles[-1])  # Telegram delivering it again, to the other process
    albums: list[list[dict[str, Any]]] = []  # users 20-29: an album of three, parts on alternate processes
    for n in range(20, 30):
        parts = [cluster.photo(n, media_group_id=f"album-{n}") for _ in range(3)]
        albums.append(parts)
        assert len({await proxy.post(p) for p in parts}) == 2
    bursts: dict[int, list[dict[str, Any]]] = {}  # users 30-39: five queries at once, three allowed a minute
    for n in range(30, 40):
        bursts[n] = [cluster.photo(n) for _ in range(5)]
        for update in bursts[n]:
            await proxy.post(update)
    sent += 21 + 30 + 50

    answers = 20 + 10 + 10 * QUERY_RATE

    def listings(calls: list[Call]) -> int:
        return sum(c.method == "sendMessage" and "best shots 1–5" in c.params.get("text", "") for c in calls)

    await srv.wait_until(lambda calls: listings(calls) >= answers, timeout=90)

    # "More" under each single answer, delivered to the process that did not answer it.
    fillers = iter(range(40, 50))
    helps: list[dict[str, Any]] = []
    for n, update in enumerate(singles):
        [listing] = replies_to(srv, update["message"], "best shots 1–5")
        answered_by = proxy.routed[n]  # the first delivery's (a second one is not handled)
        if proxy.next_backend == answered_by:
            helps.append(cluster.text(next(fillers, 40), "/help"))
            await proxy.post(helps[-1])
        who, chat = cluster.user(n)
        tap = srv.webhook_update(callback_update(srv, chat=chat, from_user=who, message=listing.result,
                                                 data=more_data(listing)))
        assert await proxy.post(tap) != answered_by
    sent += 20 + len(helps)
    while sent < 200:  # the rest: /help from the last ten users
        helps.append(cluster.text(40 + sent % 10, "/help"))
        await proxy.post(helps[-1])
        sent += 1
    await srv.wait_until(lambda calls: sum(c.method == "sendMessage" and "best shots 6–10" in c.params.get("text", "")
                                           for c in calls) >= 20, timeout=60)

    # Stopping each process lets what it is still handling finish: after that nothing more is sent.
    assert [await wait_exit(bot) for bot in cluster.bots] == [0, 0], cluster.logs()
    assert len(proxy.routed) == 200 and set(Counter(proxy.routed).values()) == {100}

    for update in singles:  # one answer each, and its second page on the other process
        assert len(replies_to(srv, update["message"], "best shots 1–5")) == 1
        assert len(replies_to(srv, update["message"], "best shots 6–10")) == 1
    fetched = {c.params["file_id"] for c in srv.calls_of("getFile")}
    for parts in albums:  # one answer per album, made of all its parts
        answered = [len(replies_to(srv, p["message"], "best shots 1–5")) for p in parts]
        assert sorted(answered) == [0, 0, 1], answered
        assert {p["message"]["photo"][-1]["file_id"] for p in parts} <= fetched
    for n, updates in bursts.items():  # the limit held across both processes, told once
        answered = sum(len(replies_to(srv, u["message"], "best shots 1–5")) for u in updates)
        told = sum(len(replies_to(srv, u["message"], "at most 3 queries per minute")) for u in updates)
        assert (answered, told) == (QUERY_RATE, 1), (n, answered, told)
    help_chats = Counter(u["message"]["chat"]["id"] for u in helps)
    sent_help = Counter(c.params["chat_id"] for c in srv.calls_of("sendMessage")
                        if "finds the shots" in c.params["text"])
    assert sent_help == help_chats + Counter({7061: 1})
    assert not [c for c in srv.calls if c.params.get("chat_id") == 7060], "a refused update was handled"
    assert all(srv.callback_answers.values()), "every More tap was answered"
    assert not srv.server_errors and not srv.limit_violations
    logs = "".join(b.output() for b in cluster.bots)
    assert "refused (403)" in logs and "refused (400)" in logs and "Traceback" not in logs
    assert SECRET not in logs and srv.token not in logs


# -- one process, in this one: the webhook server's own refusals and Redis at its edges ----------
async def test_webhook_mode_in_process_sets_the_webhook_and_deletes_it_when_told(tmp_path: Path) -> None:
    from tests.bot_support import StubEngine, bot_harness
    from tests.webhook_support import free_port

    port = free_port()
    async with bot_harness(StubEngine(tmp_path), tmp_path, webhook_url="http://127.0.0.1/hook",
                           webhook_listen=f"127.0.0.1:{port}", webhook_delete_on_stop=True) as h:
        serving = asyncio.create_task(h.app.serve(handle_signals=False))
        try:
            [call] = await h.srv.wait_for("setWebhook")
            derived = call.params["secret_token"]  # none configured: derived from the token, not the token
            assert derived == h.app.settings.webhook_secret_token() and h.srv.token not in derived
            url, update = f"http://127.0.0.1:{port}/hook", h.srv.webhook_update(h.text("/help"))
            async with ClientSession() as http:
                async with http.post(url, json=update) as response:
                    assert response.status == 403
                for _ in range(2):  # delivered again: answered 200, handled once
                    async with http.post(url, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": derived}) as ok:
                        assert ok.status == 200
            await h.srv.wait_for("sendMessage")
        finally:
            await h.app.stop()
            await serving
        assert len(h.srv.calls_of("sendMessage")) == 1 and h.srv.webhook_url == ""  # deleteWebhook at stop


async def test_a_listen_address_in_use_is_one_line(tmp_path: Path) -> None:
    from bot.services.shared_state import SeenUpdates
    from bot.webhook import ListenError, start_server
    from tests.bot_support import StubEngine, bot_harness

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with bot_harness(StubEngine(tmp_path), tmp_path) as h:
            with pytest.raises(ListenError, match=f"cannot listen on 127.0.0.1:{port} .*--listen"):
                await start_server(h.app.dispatcher, h.app.bot, host="127.0.0.1", port=port, path="/",
                                   secret_token="s", seen=SeenUpdates())


async def test_redis_down_at_start_names_the_setting_and_hides_the_password(tmp_path: Path) -> None:
    from bot.app import create_app
    from bot.services.shared_state import SharedStateError
    from tests.bot_support import StubEngine, bot_settings
    from tests.webhook_support import free_port

    async with FakeTelegramServer() as srv:
        url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
        settings = bot_settings(srv, tmp_path, redis_url=url)
        with pytest.raises(SharedStateError) as caught:
            await create_app(settings, StubEngine(tmp_path))
    message = str(caught.value)
    assert "CASTFINDER_REDIS_URL=redis://:***@127.0.0.1" in message and "hunter2" not in message
    assert "\n" not in message


@requires_redis
async def test_limits_places_and_albums_are_shared_and_survive_redis_going_away(
        tmp_path: Path, redis: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    from aiogram.types import Message

    from bot.middlewares.albums import AlbumCollector
    from bot.services.limits import UserBusy
    from bot.services.shared_state import RedisAlbumCollector, RedisRateLimiter, RedisUserPlaces, connect

    one, two = await connect(redis.url), await connect(redis.url)  # two processes' clients
    limits = [RedisRateLimiter(c, "t:q:", 2) for c in (one, two)]
    assert [await limits[0].take(5), await limits[1].take(5)] == [0.0, 0.0]
    assert 59 < await limits[1].take(5) <= 60
    assert await limits[0].warn_once(5, 60) and not await limits[1].warn_once(5, 60)

    places = [RedisUserPlaces(c, "t:", 1) for c in (one, two)]
    async with places[0].hold(5):
        with pytest.raises(UserBusy) as first:
            async with places[1].hold(5):
                pass
        with pytest.raises(UserBusy) as again:
            async with places[1].hold(5):
                pass
        assert (first.value.repeated, again.value.repeated) == (False, True)
    async with places[1].hold(5):  # released: the other process may now
        pass

    def part(message_id: int) -> Message:
        return Message.model_validate({"message_id": message_id, "date": 0, "media_group_id": "g",
                                       "chat": {"id": 5, "type": "private"}, "photo": [
                                           {"file_id": f"f{message_id}", "file_unique_id": f"u{message_id}",
                                            "width": 9, "height": 9}]})

    albums = [RedisAlbumCollector(c, "t:", 1.5, local=AlbumCollector(0.05)) for c in (one, two)]
    # Parts at both processes: one of them answers, with every part; the others stop there.
    results = await asyncio.gather(albums[0].collect(part(11)), albums[1].collect(part(12)),
                                   albums[0].collect(part(13)))
    [collected] = [r for r in results if r is not None]
    assert [m.message_id for m in collected[0]] == [11, 12, 13]

    redis.stop()  # Redis gone while running: each process counts on its own, with a warning
    with caplog.at_level(logging.WARNING):
        assert await limits[0].take(6) == 0.0
        async with places[0].hold(6):
            pass
        alone = await albums[0].collect(part(14))  # collected by this process alone
        assert alone is not None and [m.message_id for m in alone[0]] == [14]
    assert "Redis failed" in caplog.text
    await one.aclose()
    await two.aclose()


@pytest.mark.parametrize(("given", "refusal"), [
    ({"webhook_url": "http://bot.example.org/tg"}, "must start with https://"),
    ({"webhook_url": "bot.example.org/tg"}, "expected a full URL"),
    ({"webhook_url": "https://bot.example.org/tg", "webhook_listen": "8080"}, "expected host:port"),
    ({"webhook_url": "https://bot.example.org/tg", "webhook_listen": "127.0.0.1:99999"}, "expected host:port"),
    ({"webhook_url": "https://bot.example.org/tg", "webhook_secret": "has spaces"}, "A-Z, a-z, 0-9"),
])
def test_webhook_settings_that_telegram_would_refuse_are_named(given: dict[str, str], refusal: str) -> None:
    from bot.settings import BotSettings
    from core.errors import SettingsError
    from core.settings import load_settings

    with pytest.raises(SettingsError, match=refusal):
        load_settings(BotSettings, _env_file=None, bot_token="1:x", **given)
    # A local Bot API server posts to http:// too.
    local = load_settings(BotSettings, _env_file=None, bot_token="1:x", webhook_url="http://10.0.0.2:8443/tg",
                          telegram_api_base="http://127.0.0.1:8081")
    assert local.webhook_path == "/tg"
