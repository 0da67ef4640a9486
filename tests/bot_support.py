"""Helpers for the bot's tests: a harness around the app and the fake Bot API server, a timer
the tests fire themselves (album collection), and engine stand-ins for bot-only behaviour."""

from __future__ import annotations

import asyncio
import io
import itertools
import threading
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Sequence

from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.types import Update
from PIL import Image

from bot.app import App, api_server, create_app, create_bot
from bot.settings import BotSettings
from core import Engine, MovieInfo, Person, Progress, SearchResponse, Settings, ShotResult
from core.store import Listing
from tests.fake_telegram import FakeTelegramServer, group_chat, message_update, private_chat, user

USER_ID = 1001
ALICE = user(USER_ID, "Alice", "alice")
ALICE_CHAT = private_chat(USER_ID, "Alice", "alice")
BOB = user(1002, "Bob", "bob")
GROUP = group_chat(-1001234567890, "Film club")

_update_ids = itertools.count(1)


def jpeg(colour: str = "navy", size: tuple[int, int] = (320, 200)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "JPEG")
    return out.getvalue()


class ManualTimer:
    """Stands in for `loop.call_later` in the album collector: nothing fires until the test says
    so, and the test can wait (on an event, not a clock) until the parts have been scheduled."""

    @dataclass
    class Handle:
        callback: Callable[[], None]
        cancelled: bool = False

        def cancel(self) -> None:
            self.cancelled = True

    def __init__(self) -> None:
        self.handles: list[ManualTimer.Handle] = []
        self._changed = asyncio.Event()

    def __call__(self, delay: float, callback: Callable[[], None]) -> ManualTimer.Handle:
        handle = ManualTimer.Handle(callback)
        self.handles.append(handle)
        self._changed.set()
        return handle

    async def wait_scheduled(self, count: int, timeout: float = 10.0) -> None:
        async def until() -> None:
            while len(self.handles) < count:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(until(), timeout)

    def fire(self) -> int:
        live = [h for h in self.handles if not h.cancelled]
        for handle in live:
            handle.cancelled = True
            handle.callback()
        return len(live)


class LoopbackSession(AiohttpSession):
    """aiogram waits 250 ms on close for TLS connections to wind down; over plain HTTP to
    127.0.0.1 there are none, and fifty tests would wait twelve seconds for nothing."""

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()


def bot_settings(srv: FakeTelegramServer, tmp_path: Path, **overrides: Any) -> BotSettings:
    values: dict[str, Any] = dict(
        bot_token=srv.token, telegram_api_base=srv.base_url, db_path=tmp_path / "bot.sqlite3",
        status_interval_s=0.0, query_workers=2, queue_size=5, user_rate=100, user_message_rate=600,
        shutdown_grace_s=10.0,
    )
    values.update(overrides)
    return BotSettings(_env_file=None, **values)


@dataclass
class Harness:
    srv: FakeTelegramServer
    app: App
    timer: ManualTimer
    users: dict[int, dict] = field(default_factory=dict)

    async def feed(self, update: dict) -> Any:
        """Handle one update through `Dispatcher.feed_update` (no polling)."""
        update = {"update_id": next(_update_ids), **update}
        bot = self.app.bot
        return await self.app.dispatcher.feed_update(bot, Update.model_validate(update, context={"bot": bot}))

    def photo(self, data: bytes, *, chat: dict = ALICE_CHAT, from_user: dict = ALICE, **kwargs: Any) -> dict:
        return message_update(self.srv, chat=chat, from_user=from_user, photo_bytes=data, **kwargs)

    def text(self, text: str, *, chat: dict = ALICE_CHAT, from_user: dict = ALICE, **kwargs: Any) -> dict:
        return message_update(self.srv, chat=chat, from_user=from_user, text=text, **kwargs)

    def sent_texts(self, chat_id: int | None = None) -> list[str]:
        return [c.params["text"] for c in self.srv.calls_of("sendMessage")
                if not c.failed and (chat_id is None or c.params["chat_id"] == chat_id)]

    @asynccontextmanager
    async def polling(self) -> AsyncIterator[None]:
        dp = self.app.dispatcher
        async with self.srv.run_polling(dp, self.app.bot, allowed_updates=dp.resolve_used_update_types()):
            yield


@asynccontextmanager
async def bot_harness(engine: Any, tmp_path: Path, **overrides: Any) -> AsyncIterator[Harness]:
    async with FakeTelegramServer() as srv:
        timer = ManualTimer()
        settings = bot_settings(srv, tmp_path, **overrides)
        bot = create_bot(settings, LoopbackSession(api=api_server(settings)))
        app = await create_app(settings, engine, bot=bot, album_timer=timer)
        try:
            yield Harness(srv, app, timer)
        finally:
            await app.close()
            await app.bot.session.close()
        # Every bot test checks this: the bot never made a request Telegram refuses for its size.
        assert not srv.limit_violations, f"requests over Telegram's limits: {srv.limit_violations}"


# -- engine stand-ins ---------------------------------------------------------------------
def movie_info(name: str, slug: str, *, duration_s: float = 6000.0, shots: int = 900) -> MovieInfo:
    return MovieInfo(slug=slug, name=name, path=Path("/nonexistent") / slug, duration_s=duration_s, shots=shots,
                     frames=shots * 5, vectors=shots * 8, embedder="dinov2", embedder_model="tiny", dim=32,
                     source="", built_at="", build_id=slug)


class CatalogEngine(Engine):
    """The real engine's movie look-up (resolve, fuzzy match) over a fixed catalogue, without
    models: for bot behaviour that depends only on which movies exist."""

    def __init__(self, movies: list[MovieInfo], tmp_path: Path) -> None:
        super().__init__(Settings(_env_file=None, index_dir=tmp_path / "no-indexes", device="cpu"), load_models=False)
        self._movies = movies

    def listing(self) -> Listing:
        return Listing(list(self._movies), [])


class GatedEngine:
    """A real engine whose searches wait until the test opens the gate, so that "busy" states
    can be observed without racing the search. Build it inside the test's event loop."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._loop = asyncio.get_running_loop()
        self.gate = threading.Event()
        self.searches_started = 0
        self._started = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def search(self, *args: Any, **kwargs: Any) -> Any:
        self._loop.call_soon_threadsafe(self._one_started)
        if not self.gate.wait(timeout=30):
            raise TimeoutError("the test never opened the gate")
        return self._engine.search(*args, **kwargs)

    def _one_started(self) -> None:
        self.searches_started += 1
        self._started.set()

    async def wait_started(self, count: int = 1, timeout: float = 10.0) -> None:
        async def until() -> None:
            while self.searches_started < count:
                self._started.clear()
                await self._started.wait()

        await asyncio.wait_for(until(), timeout)


HEAT = movie_info("Heat", "heat")


class StubEngine(CatalogEngine):
    """One movie, "Heat", with `shots` results for every search; the real decoder
    (`Engine.load_image`), the real look-up of movie names and the real picker drawing.
    `fail_next` is raised by the next search; `gate`, when set, holds searches until opened."""

    def __init__(self, tmp_path: Path, *, shots: int = 12, people: Sequence[Person] = ()) -> None:
        super().__init__([HEAT], tmp_path)
        self.people = list(people)
        self.fail_next: BaseException | None = None
        self.gate: threading.Event | None = None
        self.searches = 0
        self.looked_up: list[str] = []  # every movie name the engine was asked about
        self._started = threading.Event()
        folder = tmp_path / "thumbs"
        folder.mkdir(exist_ok=True)
        self.results = []
        for i in range(1, shots + 1):
            thumb = folder / f"shot_{i:05d}.jpg"
            Image.new("RGB", (64, 36), (i * 20 % 255, 40, 90)).save(thumb, "JPEG")
            self.results.append(ShotResult(
                rank=i, shot=i, shot_id=i, scene=None, start_s=10.0 * i, end_s=10.0 * i + 4, score=1 - i / 100,
                thumbnail=str(thumb), frame_s=10.0 * i + 1, bbox=(1.0, 2.0, 3.0, 4.0), similarity=0.9,
                confidence=0.9 - i / 100, low_confidence=False,
            ))

    def resolve_movie(self, query: str) -> MovieInfo:
        self.looked_up.append(query)
        return super().resolve_movie(query)

    def match_movies(self, query: str, limit: int = 5) -> list[MovieInfo]:
        self.looked_up.append(query)
        return super().match_movies(query, limit)

    def find_people(self, image: Any) -> list[Person]:
        self.load_image(image)
        return list(self.people)

    def search(self, movie: Any, queries: Any, *, top: int = 5, aggregation: str | None = None,
               channels: Sequence[str] | None = None, progress: Any = None) -> SearchResponse:
        self.searches += 1
        self._started.set()
        if self.gate is not None and not self.gate.wait(timeout=30):
            raise TimeoutError("the test never opened the gate")
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        if progress is not None:
            progress(Progress("search", 1, 1))
        return SearchResponse(movie="Heat", slug="heat", results=self.results[:top], query_crops=1,
                              whole_image_queries=0, aggregation="max", elapsed_s=0.01)


def stub_engine() -> StubEngine:
    """The engine of a bot started as its own process (CASTFINDER_BOT_ENGINE=
    tests.bot_support:stub_engine): StubEngine with its thumbnails in CASTFINDER_INDEX_DIR."""
    import os

    folder = Path(os.environ["CASTFINDER_INDEX_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    return StubEngine(folder)
