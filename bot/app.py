"""Putting the bot together and running it: `castfinder bot` calls `run()`.

Start-up order: settings → logging → engine (models loaded once, seconds) → database →
dispatcher → long polling. Shutdown (SIGINT/SIGTERM): polling stops, running queries get
`CASTFINDER_SHUTDOWN_GRACE_S` to finish, then are cancelled; then the database, the engine
threads and the HTTP session close.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from aiogram import Bot, Dispatcher
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode
from aiogram.exceptions import TelegramAPIError
from aiogram.types import BotCommand, BotCommandScopeAllGroupChats, BotCommandScopeAllPrivateChats

from . import texts
from .handlers import create_routers
from .logging_setup import configure_logging
from .middlewares.albums import AlbumCollector, AlbumMiddleware, Timer
from .middlewares.errors import ErrorsMiddleware
from .middlewares.retry import RetryMiddleware
from .middlewares.scope import ScopeMiddleware
from .middlewares.throttling import ThrottlingMiddleware
from .middlewares.timing import ReceivedAtMiddleware
from .services.engine_gateway import EngineGateway, EngineLike
from .services.limits import QueryQueue, RateLimiter
from .services.queries import QueryService
from .services.storage import DatabaseUnavailable, DatabaseUrlError, SchemaTooNewError, Storage
from .services.storage_backend import url_password
from .settings import BotSettings

if TYPE_CHECKING:
    from core import Settings

log = logging.getLogger("bot")

COMMANDS_PRIVATE = [BotCommand(command=c, description=d) for c, d in texts.command_menu(group=False)]
COMMANDS_GROUP = [BotCommand(command=c, description=d) for c, d in texts.command_menu(group=True)]


@dataclass
class App:
    """Everything a running bot holds; built by `create_app`, closed by the dispatcher's
    shutdown hook (or `close()` when no polling ran)."""

    settings: BotSettings
    bot: Bot
    dispatcher: Dispatcher
    gateway: EngineGateway
    storage: Storage
    queries: QueryService
    albums: AlbumCollector
    closed: bool = False

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.albums.flush_all()
        await self.queries.shutdown(self.settings.shutdown_grace_s)
        self.gateway.close()
        await self.storage.close()
        log.info("bot services closed")

    async def serve(self, *, handle_signals: bool = True) -> None:
        """Long polling until stopped; closes everything on the way out."""
        try:
            await self.bot.delete_webhook(drop_pending_updates=False)
            await self.dispatcher.start_polling(
                self.bot, handle_signals=handle_signals,
                allowed_updates=self.dispatcher.resolve_used_update_types(),
            )
        finally:
            await self.close()
            await self.bot.session.close()

    async def stop(self) -> None:
        await self.dispatcher.stop_polling()


def api_server(settings: BotSettings) -> TelegramAPIServer | None:
    if not settings.telegram_api_base:
        return None
    return TelegramAPIServer.from_base(settings.telegram_api_base, is_local=settings.telegram_api_local)


def create_bot(settings: BotSettings, session: AiohttpSession | None = None) -> Bot:
    """A bot on `session` (default: aiohttp to CASTFINDER_TELEGRAM_API_BASE or api.telegram.org)
    whose requests are retried on flood control and network errors."""
    if session is None:
        api = api_server(settings)
        session = AiohttpSession(api=api) if api is not None else AiohttpSession()
    session.middleware(RetryMiddleware())
    return Bot(settings.token(), session=session,
               default=DefaultBotProperties(parse_mode=ParseMode.HTML, link_preview_is_disabled=True))


async def create_app(
    settings: BotSettings,
    engine: EngineLike,
    *,
    bot: Bot | None = None,
    album_timer: Timer | None = None,
) -> App:
    """The bot, its services and its dispatcher, ready to poll. `engine` is already loaded."""
    storage = await Storage.open(settings.database(), default_topk=settings.default_topk)
    try:
        purged = await storage.purge(settings.results_ttl_days * 86400)
        if purged:
            log.info("forgot %d stored result pages and person choices older than %g days",
                     purged, settings.results_ttl_days)
        gateway = EngineGateway(engine, workers=settings.query_workers)
        queue = QueryQueue(settings.query_workers, settings.queue_size, per_user=settings.user_max_active)
        queries = QueryService(settings=settings, gateway=gateway, storage=storage, queue=queue)
        albums = AlbumCollector(settings.album_wait_s, timer=album_timer)
        bot = bot or create_bot(settings)
    except BaseException:
        await storage.close()
        raise
    dp = Dispatcher(
        disable_fsm=True, bot_settings=settings, gateway=gateway, db=storage, queue=queue, queries=queries,
        rate_limiter=RateLimiter(settings.user_rate),
    )
    dp.update.outer_middleware(ErrorsMiddleware())
    dp.update.outer_middleware(ReceivedAtMiddleware())
    dp.message.outer_middleware(ScopeMiddleware())
    dp.message.outer_middleware(AlbumMiddleware(albums))
    throttling = ThrottlingMiddleware(dp["rate_limiter"], RateLimiter(settings.user_message_rate))
    dp.message.middleware(throttling)
    dp.callback_query.middleware(throttling)
    dp.include_routers(*create_routers())
    app = App(settings, bot, dp, gateway, storage, queries, albums)

    async def on_startup(bot: Bot) -> None:
        await _set_commands(bot)
        me = await bot.me()
        log.info("bot @%s is up: %d engine workers, queue of %d, %d queries/min per user",
                 me.username, settings.query_workers, settings.queue_size, settings.user_rate)

    async def on_shutdown() -> None:
        await app.close()

    dp.startup.register(on_startup)
    dp.shutdown.register(on_shutdown)
    return app


async def _set_commands(bot: Bot) -> None:
    try:
        await bot.set_my_commands(COMMANDS_PRIVATE, scope=BotCommandScopeAllPrivateChats())
        await bot.set_my_commands(COMMANDS_GROUP, scope=BotCommandScopeAllGroupChats())
    except TelegramAPIError as exc:  # a menu is a convenience; never a reason not to start
        log.warning("could not set the command menu: %s", exc)


def build_engine(engine_settings: "Settings | None" = None) -> EngineLike:
    """Load the engine's models now, with progress in the log (this takes seconds)."""
    from core import Engine

    started = time.perf_counter()
    # Without settings the engine reads its own (environment and .env); models load after the log line.
    engine = Engine(engine_settings, load_models=False)
    settings = engine.settings
    log.info("loading models on %s: detector %s and the embedding channels of the indexes in %s …",
             settings.device, settings.detector, settings.index_dir)
    engine.load_models()
    movies = engine.movies()
    log.info("engine ready in %.1f s; %d movie(s) indexed in %s%s", time.perf_counter() - started, len(movies),
             settings.index_dir, (": " + ", ".join(m.name for m in movies[:10])) if movies else "")
    if not movies:
        log.warning("no movie is indexed yet: users will be told so. Index one with `castfinder index`.")
    return engine


def build_remote_engine(address: str) -> EngineLike:
    """The engine workers of the Ray cluster at `address` (`castfinder engines`): no model loads here."""
    from core.ray_engines import RemoteEngine

    engine = RemoteEngine(address)
    movies = engine.movies()
    log.info("searching with %d engine worker(s) on the Ray cluster %s; %d movie(s) indexed", engine.workers,
             address, len(movies))
    return engine


async def serve(settings: BotSettings, engine: EngineLike, *, handle_signals: bool = True) -> None:
    app = await create_app(settings, engine)
    await app.serve(handle_signals=handle_signals)


def run(argv: Sequence[str] | None = None) -> int:
    """`castfinder bot` / `python -m bot`: long polling until SIGINT/SIGTERM. Returns the exit code."""
    parser = argparse.ArgumentParser(prog="castfinder bot",
                                     description="Run the castfinder Telegram bot (long polling).")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING … (default: CASTFINDER_LOG_LEVEL or INFO)")
    args = parser.parse_args(argv)
    from core.errors import SettingsError
    from core.settings import load_settings

    try:
        settings = load_settings(BotSettings)  # out-of-range values and an unreadable .env, each named
    except SettingsError as exc:
        print(texts.invalid_settings(exc), file=sys.stderr)
        return 2
    secrets = [settings.token()] if settings.bot_token else []
    if settings.database_url is not None:
        secrets.append(url_password(settings.database_url.get_secret_value()) or "")
    configure_logging(args.log_level or settings.log_level, secrets=secrets)
    if settings.bot_token is None:
        print(texts.missing_token_help(), file=sys.stderr)
        return 2
    try:
        settings.database()  # an unknown scheme is refused before the models load
    except DatabaseUrlError as exc:
        print(exc, file=sys.stderr)
        return 2

    from core import CastfinderError

    try:
        engine = build_remote_engine(settings.engine_ray_address) if settings.engine_ray_address else build_engine()
    except CastfinderError as exc:
        log.error("the engine could not start: %s", exc)
        return 1
    try:
        asyncio.run(serve(settings, engine))
    except KeyboardInterrupt:
        pass
    except TelegramAPIError as exc:
        log.error("Telegram refused the bot: %s (is BOT_TOKEN right?)", exc)
        return 1
    except (DatabaseUnavailable, SchemaTooNewError) as exc:
        log.error("%s", exc)  # one line: which setting, what failed (password masked)
        return 1
    log.info("bot stopped")
    return 0
