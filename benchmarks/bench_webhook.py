"""Updates per second through one webhook endpoint with 1 vs 2 bot processes behind it.

The set-up of tests/test_bot_scale.py: real `castfinder bot --webhook` processes behind a
round-robin proxy, sharing a redis-server started here (CASTFINDER_REDIS_URL) and one SQLite
file, answering the fake Bot API of the tests. The engine is the tests' stand-in
(CASTFINDER_BOT_ENGINE=tests.bot_support:stub_engine: canned results, the real image decoder), so
this measures the bot's own path (webhook, dispatcher, middlewares, Redis, SQLite, Telegram I/O),
not the models: with models, searches dominate and scale with the engine workers instead.

Two kinds of updates, each measured from the first post to the last answer seen by the fake API:
- `help`: /help from many users (webhook + dispatch + one sendMessage);
- `query`: a screenshot captioned with the movie (download, decode, search, album + list, SQLite).
The proxy, the fake API and the load generator run in this process, on the same cores as the bots.
Status messages keep the default CASTFINDER_STATUS_INTERVAL_S (2 s): with 0, every waiting
query's "you are #N in line" is edited on every release, which is what a long queue then costs.

    .venv/bin/python benchmarks/bench_webhook.py [--updates 300] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tests.bot_support import jpeg  # noqa: E402
from tests.fake_telegram import FakeTelegramServer, message_update, private_chat, user  # noqa: E402
from tests.webhook_support import SECRET, RedisServer, RoundRobinProxy, start_bot, wait_exit  # noqa: E402


def machine() -> str:
    model = ""
    try:
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "")
    except OSError:
        pass
    return f"{platform.node()}: {os.cpu_count()} cores {model}, Python {platform.python_version()}"


async def measure(processes: int, kind: str, updates: int, concurrency: int, work: Path) -> float:
    redis = RedisServer(work)
    db = work / f"bot-{processes}-{kind}.sqlite3"
    try:
        async with FakeTelegramServer() as srv, RoundRobinProxy() as proxy:
            settings = {
                "BOT_TOKEN": srv.token, "CASTFINDER_TELEGRAM_API_BASE": srv.base_url, "CASTFINDER_DB_PATH": str(db),
                "CASTFINDER_REDIS_URL": redis.url, "CASTFINDER_WEBHOOK_SECRET": SECRET,
                "CASTFINDER_BOT_ENGINE": "tests.bot_support:stub_engine",
                "CASTFINDER_INDEX_DIR": str(work / "thumbs"), "CASTFINDER_USER_RATE": "600",
                "CASTFINDER_USER_MESSAGE_RATE": "600", "CASTFINDER_USER_MAX_ACTIVE": "100",
                "CASTFINDER_QUEUE_SIZE": "1000", "CASTFINDER_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
            }
            bots = [start_bot(work, f"bench-{processes}-{kind}-{i}", proxy.url, settings) for i in range(processes)]
            proxy.backends = [b.url for b in bots]
            try:
                await srv.wait_for("setWebhook", processes, timeout=300)
                photo = jpeg()

                def update(n: int) -> dict[str, Any]:
                    uid = 10_000 + n
                    who, chat = user(uid, f"U{n}"), private_chat(uid, f"U{n}")
                    if kind == "help":
                        return srv.webhook_update(message_update(srv, chat=chat, from_user=who, text="/help"))
                    return srv.webhook_update(message_update(srv, chat=chat, from_user=who, photo_bytes=photo,
                                                             caption="/movie Heat"))

                batch = [update(n) for n in range(updates)]
                needle = "finds the shots" if kind == "help" else "best shots 1–"
                before = sum(needle in c.params.get("text", "") for c in srv.calls_of("sendMessage"))
                started = time.perf_counter()
                pending = iter(batch)

                async def sender() -> None:
                    for item in pending:
                        await proxy.post(item)

                await asyncio.gather(*(sender() for _ in range(concurrency)))
                await srv.wait_until(lambda calls: sum(
                    c.method == "sendMessage" and needle in c.params.get("text", "") for c in calls
                ) >= before + updates, timeout=600)
                elapsed = time.perf_counter() - started
            finally:
                for bot in bots:
                    await wait_exit(bot)
        return updates / elapsed
    finally:
        redis.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--updates", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    print(machine())
    print(f"{args.updates} updates per run, {args.concurrency} in flight, stand-in engine, Redis + one SQLite file")
    with tempfile.TemporaryDirectory(prefix="bench-webhook-") as tmp:
        rows = []
        for kind in ("help", "query"):
            one = await measure(1, kind, args.updates, args.concurrency, Path(tmp))
            two = await measure(2, kind, args.updates, args.concurrency, Path(tmp))
            rows.append((kind, one, two))
    print(f"{'updates':<8} {'1 process':>12} {'2 processes':>12}")
    for kind, one, two in rows:
        print(f"{kind:<8} {one:>10.1f}/s {two:>10.1f}/s  (x{two / one:.2f})")


if __name__ == "__main__":
    asyncio.run(main())
