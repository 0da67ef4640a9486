"""The bot as several processes: two real `castfinder bot --webhook` processes behind one webhook
endpoint (a round-robin proxy), sharing a Redis started here and one SQLite database, talking to
the fake Bot API. 200 updates from 50 users, albums split across the processes, rate-limited
bursts, "More" pressed on the process that did not answer: every query answered exactly once.

The bot processes use the tests' stand-in engine (CASTFINDER_BOT_ENGINE=tests.bot_support:
stub_engine: canned results, the real image decoder): loading models twice would cost a minute
on a small box and prove nothing about the processes. Skips when redis-server is not installed.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from bot.services.storage import Storage
from tests.bot_support import jpeg
from tests.fake_telegram import Call, FakeTelegramServer, callback_update, message_update, private_chat, user
from tests.webhook_support import SECRET, BotProcess, RedisServer, RoundRobinProxy, start_bot, wait_exit

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
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
    db = tmp_path / "bot.sqlite3"
    # The schema is made once before the processes start (two first starts at once would both migrate).
    await (await Storage.open(db)).close()
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
    sent += 20 + 30 + 50

    answers = 20 + 10 + 10 * QUERY_RATE

    def listings(calls: list[Call]) -> int:
        return sum(c.method == "sendMessage" and "best shots 1–5" in c.params.get("text", "") for c in calls)

    await srv.wait_until(lambda calls: listings(calls) >= answers, timeout=90)

    # "More" under each single answer, delivered to the process that did not answer it.
    fillers = iter(range(40, 50))
    helps: list[dict[str, Any]] = []
    for n, update in enumerate(singles):
        [listing] = replies_to(srv, update["message"], "best shots 1–5")
        answered_by = proxy.routed[n]
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
