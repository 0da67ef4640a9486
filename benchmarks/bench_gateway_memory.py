"""Bot memory under load: 50 concurrent queries through the bot's engine gateway, peak RSS.

What is measured, each in a fresh process (peak RSS is a per-process high-water mark):

- `gateway`: the 50 queries go straight to `EngineGateway` (detect, then search), all at once,
  with no admission in front: what any caller that bypassed the bot's queue would get.
- `bot`: the 50 queries are 50 users' screenshots fed at once through the real bot (dispatcher,
  middlewares, `QueryService`, `QueryQueue`, the same gateway), answering over the fake Bot API
  server from the tests; with the product's queue (`--queue`, default 20: the rest are refused
  "busy") and with a queue long enough for all 50 to wait.

For each: RSS before the queries (engine loaded and warmed up), the peak RSS sampled every 5 ms
while they ran, VmHWM as the kernel saw it, the most decoded screenshots alive at once (each
`Engine.load_image` result counted until it is freed), and what the queue did (ran at once,
waited, refused). The engine is real: the real person detector from ../shared when present (else a
random YOLOv8n), a tiny random DINOv2 (tests/tiny_models.py, as bench_bot.py), over an index of a
small synthetic video built here; the screenshots are 1920x1080 JPEGs with people in them.

    .venv/bin/python benchmarks/bench_gateway_memory.py [--queries 50] [--workers 2] [--queue 20]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any

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
PEOPLE = [SHARED / "data" / "titanic" / name for name in ("body_rose.jpg", "body_jack.jpg", "portrait_rose.jpg")]
MiB = 1024 * 1024



def rss_bytes() -> int:
    """Resident set size now: /proc/self/status, else psutil, else the peak (all we can know)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        return peak_bytes()


def peak_bytes() -> int:
    """The process's peak RSS (VmHWM): /proc/self/status, else getrusage (KiB on Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Sampler:
    """The highest RSS seen while running, sampled every `interval` s on its own thread."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            self._stop.wait(self.interval)

    def __enter__(self) -> Sampler:
        self.peak = rss_bytes()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


class ImageCounter:
    """Counts the decoded screenshots alive: every `load_image` result until it is freed."""

    def __init__(self, engine: Any) -> None:
        self.alive = 0
        self.peak = 0
        self._lock = threading.Lock()
        original = engine.load_image

        def counted(image: Any) -> Any:
            decoded = original(image)
            with self._lock:
                self.alive += 1
                self.peak = max(self.peak, self.alive)
            weakref.finalize(decoded, self._freed)
            return decoded

        engine.load_image = counted

    def _freed(self) -> None:
        with self._lock:
            self.alive -= 1

    def reset(self) -> None:
        with self._lock:
            self.peak = self.alive


# -- the parent: build once, measure each mode in its own process -----------------------------------
def prepare(work: Path, side: tuple[int, int]) -> dict[str, Any]:
    from PIL import Image

    from core import Engine
    from tests.media import make_video
    from tests.tiny_models import save_dinov2

    settings = engine_settings(work, str(save_dinov2(work / "tiny-dinov2")))
    engine = Engine(settings)
    video = make_video(work / "clip.mp4", [((40, 40, 200), 48), ((200, 60, 40), 48), ((60, 200, 60), 48)],
                       size=(320, 180))
    engine.index(video, "Clip")
    shots = []
    for i in range(3):
        canvas = Image.new("RGB", side, (30 + 40 * i, 50, 70))
        if DETECTOR.is_file():
            person = Image.open(PEOPLE[i % len(PEOPLE)]).convert("RGB")
            person.thumbnail((side[0] // 2, side[1] * 9 // 10))
            canvas.paste(person, (side[0] // 4 + 100 * i, side[1] // 20))
        path = work / f"screenshot_{i}.jpg"
        canvas.save(path, "JPEG", quality=90)
        shots.append(str(path))
    return {"dinov2": settings.dinov2_model, "shots": shots}


def engine_settings(work: Path, dinov2: str) -> Any:
    from core import Settings

    detector = dict(detector=str(DETECTOR), person_classes=[0, 1]) if DETECTOR.is_file() else dict(
        detector="yolov8n.yaml", det_imgsz=320)
    return Settings(_env_file=None, index_dir=work / "indexes", dinov2_model=dinov2, device="cpu",
                    channels=["dinov2"], sample_fps=2.0, **detector)


def measure(args: argparse.Namespace, work: Path, mode: str, queue: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", mode, "--work", str(work), "--queries", str(args.queries),
           "--workers", str(args.workers), "--queue", str(queue)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        sys.exit(f"{mode} run failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="castfinder-bench-memory-"))
    print(f"machine: {machine()}")
    started = time.perf_counter()
    info = prepare(work, (1920, 1080))
    (work / "info.json").write_text(json.dumps(info))
    detector = DETECTOR.name if DETECTOR.is_file() else "random YOLOv8n (no ../shared)"
    print(f"engine: detector {detector}, tiny random DINOv2; index and 1920x1080 screenshots built in "
          f"{time.perf_counter() - started:.1f} s")
    print(f"{args.queries} queries at once, {args.workers} engine workers; each row is a fresh process\n")
    rows = [("gateway alone, no queue", measure(args, work, "gateway", 0)),
            (f"bot, queue of {args.queue}", measure(args, work, "bot", args.queue)),
            (f"bot, queue of {args.queries}", measure(args, work, "bot", args.queries))]
    head = (f"{'path':<26} {'RSS before':>10} {'peak RSS':>9} {'growth':>8} {'VmHWM':>8} {'images':>6} "
            f"{'answered':>8} {'ran now':>7} {'waited':>6} {'refused':>7} {'wall s':>6}")
    print(head)
    for label, r in rows:
        print(f"{label:<26} {r['rss_before'] / MiB:>7.0f} MiB {r['peak'] / MiB:>5.0f} MiB "
              f"{(r['peak'] - r['rss_before']) / MiB:>4.0f} MiB {r['hwm'] / MiB:>4.0f} MiB {r['images']:>6} "
              f"{r['answered']:>8} {r['ran_now']:>7} {r['waited']:>6} {r['refused']:>7} {r['wall']:>6.1f}")
    print("\ngrowth: peak RSS while the queries ran minus RSS before them. images: most decoded screenshots "
          "alive at once.\nanswered: results or a person picker (the others were told the queue is full). "
          "ran now / waited / refused: what the queue did\n(the gateway alone has no queue: all 50 go to the "
          "thread pool's own unbounded backlog at once).")


# -- a child: one mode, one process ------------------------------------------------------------------
def child(args: argparse.Namespace) -> None:
    from core import Engine

    work = Path(args.work)
    info = json.loads((work / "info.json").read_text())
    engine = Engine(engine_settings(work, info["dinov2"]))
    counter = ImageCounter(engine)
    shots = [Path(p).read_bytes() for p in info["shots"]]
    runner = run_gateway if args.child == "gateway" else run_bot
    result = asyncio.run(runner(engine, shots, args, counter))
    print(json.dumps(result))


async def run_gateway(engine: Any, shots: list[bytes], args: argparse.Namespace, counter: ImageCounter) -> dict:
    from bot.services.engine_gateway import EngineGateway
    from core import QueryImage

    gateway = EngineGateway(engine, workers=args.workers)
    movie = (await gateway.movies())[0]

    async def one(data: bytes) -> None:
        image, people = await gateway.detect(data)
        await gateway.search(movie, [QueryImage(image, people=people)], top=50)

    await one(shots[0])  # warm-up: first detector and embedder calls
    counter.reset()
    rss_before, started = rss_bytes(), time.perf_counter()
    with Sampler() as sampler:
        await asyncio.gather(*(one(shots[i % len(shots)]) for i in range(args.queries)))
    wall = time.perf_counter() - started
    gateway.close()
    return dict(rss_before=rss_before, peak=sampler.peak, hwm=peak_bytes(), images=counter.peak,
                answered=args.queries, ran_now=args.queries, waited=0, refused=0, wall=wall)


async def run_bot(engine: Any, shots: list[bytes], args: argparse.Namespace, counter: ImageCounter) -> dict:
    from aiogram.types import Update

    from bot.app import create_app
    from bot.settings import BotSettings
    from tests.fake_telegram import FakeTelegramServer, message_update, private_chat, user

    work = Path(args.work)
    async with FakeTelegramServer() as srv:
        settings = BotSettings(
            _env_file=None, bot_token=srv.token, telegram_api_base=srv.base_url,
            db_path=work / f"bot-{os.getpid()}.sqlite3", query_workers=args.workers, queue_size=args.queue,
            user_rate=0, user_message_rate=0, status_interval_s=0.5,
        )
        app = await create_app(settings, engine)
        bot, dp = app.bot, app.dispatcher
        slug = engine.movies()[0].slug
        ids = itertools.count(1)

        def photo(uid: int, data: bytes) -> Update:
            raw = message_update(srv, chat=private_chat(uid), from_user=user(uid, f"U{uid}"), photo_bytes=data)
            return Update.model_validate({"update_id": next(ids), **raw}, context={"bot": bot})

        try:
            for uid in range(1, args.queries + 2):
                await app.storage.set_movie(uid, slug, "Clip")
            await dp.feed_update(bot, photo(args.queries + 1, shots[0]))  # warm-up
            updates = [photo(uid, shots[uid % len(shots)]) for uid in range(1, args.queries + 1)]
            queue = app.queries.queue
            before = queue.stats.admitted, queue.stats.waited, queue.stats.refused_full
            counter.reset()
            rss_before, started = rss_bytes(), time.perf_counter()
            with Sampler() as sampler:
                await asyncio.gather(*(dp.feed_update(bot, u) for u in updates))
            wall = time.perf_counter() - started
            rows = (await app.storage.recent_queries(limit=args.queries + 1))[1:]
            # An answer is the results, or the person picker for a screenshot showing several people.
            answered = sum(r["outcome"] in ("ok", "picker") for r in rows)
            admitted, waited, refused = (queue.stats.admitted - before[0], queue.stats.waited - before[1],
                                         queue.stats.refused_full - before[2])
        finally:
            await app.close()
            await bot.session.close()
    return dict(rss_before=rss_before, peak=sampler.peak, hwm=peak_bytes(), images=counter.peak,
                answered=answered, ran_now=admitted - waited, waited=waited, refused=refused, wall=wall)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=50, help="queries sent at once")
    parser.add_argument("--workers", type=int, default=2, help="CASTFINDER_QUERY_WORKERS")
    parser.add_argument("--queue", type=int, default=20, help="CASTFINDER_QUEUE_SIZE for the product row")
    parser.add_argument("--child", choices=["gateway", "bot"], help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    if parsed.child:
        child(parsed)
    else:
        main(parsed)
