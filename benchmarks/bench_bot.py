"""Bot latency: time from an update arriving to its answer being sent, p50/p95.

Runs the real bot (long polling over HTTP) against the fake Bot API server from the tests, with
the real engine: the real person detector from ../shared and a tiny random DINOv2 (the figures
measure the bot and the detector, not a full-size embedder), over a real index of the Titanic
clip built here. Scenarios: 1 and 3 images per query (3 = an album, which includes the album
collection window), 1 and 10 users sending concurrently; each user waits for an answer before
sending the next query.

    .venv/bin/python benchmarks/bench_bot.py [--rounds 10] [--workers 2] [--album-wait 1.0]

The "answer sent" moment is when the fake server receives the bot's final message (the result
list, sent after the thumbnails). Server, bot and engine threads share this process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
for key, value in {"HF_HUB_OFFLINE": "1", "YOLO_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                   "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                   "YOLO_CONFIG_DIR": tempfile.mkdtemp()}.items():
    os.environ.setdefault(key, value)
sys.path.insert(0, str(REPO / "benchmarks"))
from bench_core import machine  # noqa: E402  (one description of the machine for every benchmark)

SHARED = Path(os.environ.get("CASTFINDER_SHARED", REPO.parent / "shared"))
DETECTOR = SHARED / "weights" / "person_yolov8s_falldet.pt"
CLIP = SHARED / "data" / "titanic" / "titanic_20s.mp4"
QUERIES = [SHARED / "data" / "titanic" / name for name in ("body_rose.jpg", "portrait_jack.jpg", "face_rose.jpg")]



def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


async def scenario(srv, images: int, users: int, rounds: int, photos: list[bytes]) -> list[float]:
    from tests.fake_telegram import message_update, private_chat, user

    latencies: list[float] = []

    async def one_user(uid: int) -> None:
        chat, who = private_chat(uid), user(uid, f"U{uid}")
        for r in range(rounds):
            group = f"{uid}-{r}" if images > 1 else None
            updates = [message_update(srv, chat=chat, from_user=who, photo_bytes=photos[i % len(photos)],
                                      media_group_id=group) for i in range(images)]
            asked = {u["message"]["message_id"] for u in updates}
            start = time.perf_counter()
            for u in updates:
                srv.push_update(u)

            # `asked` bound now: this round's messages, not whatever the loop holds later.
            def answered(calls, asked: set[int] = asked) -> bool:
                return any(c.method == "sendMessage" and c.params.get("chat_id") == uid
                           and (c.params.get("reply_parameters") or {}).get("message_id") in asked
                           and any(words in c.params.get("text", "") for words in ("best shots", "closest shots"))
                           for c in calls)

            await srv.wait_until(answered, timeout=300)
            latencies.append(time.perf_counter() - start)

    await asyncio.gather(*(one_user(5000 + images * 100 + users * 1000 + u) for u in range(users)))
    return latencies


async def main(args: argparse.Namespace) -> None:
    from bot.app import create_app
    from bot.settings import BotSettings
    from core import Engine, Settings
    from tests.fake_telegram import FakeTelegramServer
    from tests.tiny_models import save_dinov2

    work = Path(tempfile.mkdtemp(prefix="castfinder-bench-"))
    print(f"machine: {machine()}")
    started = time.perf_counter()
    settings = Settings(_env_file=None, index_dir=work / "indexes", detector=str(DETECTOR), person_classes=[0, 1],
                        dinov2_model=str(save_dinov2(work / "tiny-dinov2")), device="cpu", sample_fps=2.0)
    engine = Engine(settings)
    report = engine.index(CLIP, "Titanic")
    print(f"engine + index of {report.shots} shots built in {time.perf_counter() - started:.1f} s")
    photos = [p.read_bytes() for p in QUERIES]

    async with FakeTelegramServer() as srv:
        bot_settings = BotSettings(
            _env_file=None, bot_token=srv.token, telegram_api_base=srv.base_url, db_path=work / "bot.sqlite3",
            query_workers=args.workers, queue_size=100, user_rate=0, album_wait_s=args.album_wait,
        )
        app = await create_app(bot_settings, engine)
        dp = app.dispatcher
        async with srv.run_polling(dp, app.bot, allowed_updates=dp.resolve_used_update_types()):
            # Every benchmark user has picked the movie already.
            for images in (1, 3):
                for users in (1, 10):
                    for u in range(users):
                        await app.storage.set_movie(5000 + images * 100 + users * 1000 + u, "titanic", "Titanic")
            await scenario(srv, 1, 1, 2, photos)  # warm-up (first detector and embedder calls)
            print(f"\nworkers={args.workers}, album window={args.album_wait:.2f} s, rounds per user={args.rounds}")
            print(f"{'images':>6} {'users':>5} {'queries':>7} {'p50 s':>7} {'p95 s':>7} {'mean s':>7} {'max s':>7}")
            for images in (1, 3):
                for users in (1, 10):
                    lat = await scenario(srv, images, users, args.rounds if users == 1 else max(2, args.rounds // 3),
                                         photos)
                    print(f"{images:>6} {users:>5} {len(lat):>7} {percentile(lat, 0.5):>7.2f} "
                          f"{percentile(lat, 0.95):>7.2f} {statistics.fmean(lat):>7.2f} {max(lat):>7.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="queries per user with 1 user (10 users: a third)")
    parser.add_argument("--workers", type=int, default=2, help="CASTFINDER_QUERY_WORKERS")
    parser.add_argument("--album-wait", type=float, default=1.0, help="CASTFINDER_ALBUM_WAIT_S")
    if not (DETECTOR.is_file() and CLIP.is_file()):
        sys.exit(f"needs {DETECTOR} and {CLIP} (../shared)")
    asyncio.run(main(parser.parse_args()))
