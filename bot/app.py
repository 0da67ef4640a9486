"""Putting the bot together and running it: `castfinder bot` calls `run()`.

Start-up order: settings → logging → engine (models loaded once, seconds) → database → Redis
(when CASTFINDER_REDIS_URL is set) → dispatcher → long polling, or in webhook mode the webhook
server, then `setWebhook`. Shutdown (SIGINT/SIGTERM): polling (or the webhook server) stops,
running queries get `CASTFINDER_SHUTDOWN_GRACE_S` to finish, then are cancelled; then the
database, Redis, the engine threads and the HTTP session close.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from dataclasses import dataclass, field
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
from .middlewares.albums import AlbumCollector, AlbumMiddleware, Albums, Timer
from .middlewares.errors import ErrorsMiddleware
from .middlewares.retry import RetryMiddleware
from .middlewares.scope import ScopeMiddleware
from .middlewares.throttling import ThrottlingMiddleware
from .middlewares.timing import ReceivedAtMiddleware
from .services.engine_gateway import EngineGateway, EngineLike
from .services.limits import QueryQueue, RateLimiter, UserRate
from .services.queries import QueryService
from .services.shared_state import (
    RedisAlbumCollector,
    RedisRateLimiter,
    RedisSeenUpdates,
    RedisUserPlaces,
    SeenUpdates,
    SharedStateError,
    connect,
)
from .services.storage import DatabaseUnavailable, DatabaseUrlError, SchemaTooNewError, Storage
from .services.storage_backend import url_password
from .settings import BotSettings, listen_address
from .webhook import ListenError, start_server

if TYPE_CHECKING:
    from redis.asyncio import Redis

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
    albums: Albums
    shared: Redis | None = None
    prefix: str = "castfinder:"  # of this bot's keys in the shared Redis
    closed: bool = False
    _stop_webhook: asyncio.Event = field(default_factory=asyncio.Event)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.albums.flush_all()
        await self.queries.shutdown(self.settings.shutdown_grace_s)
        self.gateway.close()
        await self.storage.close()
        if self.shared is not None:
            await self.shared.aclose()
        log.info("bot services closed")

    async def serve(self, *, handle_signals: bool = True) -> None:
        """Long polling (or the webhook server, when CASTFINDER_WEBHOOK_URL is set) until
        stopped; closes everything on the way out."""
        try:
            if self.settings.webhook_url:
                await self._serve_webhook(handle_signals)
                return
            await self.bot.delete_webhook(drop_pending_updates=False)
            await self.dispatcher.start_polling(
                self.bot, handle_signals=handle_signals,
                allowed_updates=self.dispatcher.resolve_used_update_types(),
            )
        finally:
            await self.close()
            await self.bot.session.close()

    async def _serve_webhook(self, handle_signals: bool) -> None:
        settings, dp, bot = self.settings, self.dispatcher, self.bot
        assert settings.webhook_url is not None
        stop = self._stop_webhook
        host, port = listen_address(settings.webhook_listen)
        seen = SeenUpdates() if self.shared is None else RedisSeenUpdates(self.shared, self.prefix)
        runner, handler = await start_server(dp, bot, host=host, port=port, path=settings.webhook_path,
                                             secret_token=settings.webhook_secret_token(), seen=seen)
        loop = asyncio.get_running_loop()
        if handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
        try:
            await dp.emit_startup(bot=bot, **dp.workflow_data)
            # Listening before setWebhook: Telegram may post the moment it is set.
            await bot.set_webhook(settings.webhook_url, secret_token=settings.webhook_secret_token(),
                                  allowed_updates=dp.resolve_used_update_types(),
                                  drop_pending_updates=settings.webhook_drop_pending)
            log.info("webhook mode: listening on %s:%d%s for %s", host, port, settings.webhook_path,
                     settings.webhook_url)
            await stop.wait()
        finally:
            if handle_signals:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)
            await runner.cleanup()  # no new updates from here on
            if settings.webhook_delete_on_stop:
                try:
                    await bot.delete_webhook()
                except TelegramAPIError as exc:
                    log.warning("could not delete the webhook: %s", exc)
            if handler.in_flight:  # what was accepted is answered (queries: until the grace period)
                log.info("finishing the %d updates still being handled", handler.in_flight)
                await handler.finish(settings.shutdown_grace_s)
            await dp.emit_shutdown(bot=bot, **dp.workflow_data)

    async def stop(self) -> None:
        if self.settings.webhook_url:
            self._stop_webhook.set()
        else:
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
    """The bot, its services and its dispatcher, ready to poll. `engine` is already loaded.
    With CASTFINDER_REDIS_URL, rate limits, busy users and albums are shared with the bot's
    other processes (SharedStateError when Redis cannot be reached now)."""
    storage = await Storage.open(settings.database(), default_topk=settings.default_topk)
    shared: Redis | None = None
    try:
        purged = await storage.purge(settings.results_ttl_days * 86400)
        if purged:
            log.info("forgot %d stored result pages and person choices older than %g days",
                     purged, settings.results_ttl_days)
        if settings.redis_url is not None:
            shared = await connect(settings.redis_url.get_secret_value())
        # One bot's keys apart from another's in a shared Redis: the bot id is the token's public part.
        prefix = f"castfinder:{settings.token().split(':')[0]}:"
        gateway = EngineGateway(engine, workers=settings.query_workers)
        # The queue of engine workers is this process's own (its threads); with Redis, a user's
        # places are also counted across processes.
        queue = QueryQueue(settings.query_workers, settings.queue_size, per_user=settings.user_max_active)
        places = RedisUserPlaces(shared, prefix, settings.user_max_active) if shared is not None else None
        queries = QueryService(settings=settings, gateway=gateway, storage=storage, queue=queue, places=places)
        local_albums = AlbumCollector(settings.album_wait_s, timer=album_timer)
        albums: Albums = local_albums if shared is None else RedisAlbumCollector(
            shared, prefix, settings.album_wait_s, local=local_albums)
        query_rate: UserRate = RateLimiter(settings.user_rate)
        message_rate: UserRate = RateLimiter(settings.user_message_rate)
        if shared is not None:
            query_rate = RedisRateLimiter(shared, prefix + "queries:", settings.user_rate)
            message_rate = RedisRateLimiter(shared, prefix + "messages:", settings.user_message_rate)
        bot = bot or create_bot(settings)
    except BaseException:
        await storage.close()
        if shared is not None:
            await shared.aclose()
        raise
    # No FSM: the bot keeps no per-user conversation state in aiogram (disable_fsm), so there is
    # no FSM storage or event isolation to share between processes.
    dp = Dispatcher(
        disable_fsm=True, bot_settings=settings, gateway=gateway, db=storage, queue=queue, queries=queries,
        rate_limiter=query_rate,
    )
    dp.update.outer_middleware(ErrorsMiddleware())
    dp.update.outer_middleware(ReceivedAtMiddleware())
    dp.message.outer_middleware(ScopeMiddleware())
    dp.message.outer_middleware(AlbumMiddleware(albums))
    throttling = ThrottlingMiddleware(query_rate, message_rate)
    dp.message.middleware(throttling)
    dp.callback_query.middleware(throttling)
    dp.include_routers(*create_routers())
    app = App(settings, bot, dp, gateway, storage, queries, albums, shared, prefix)

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


def load_engine(spec: str) -> EngineLike:
    """The engine `module:function` (CASTFINDER_BOT_ENGINE) returns."""
    import importlib

    module, _, name = spec.partition(":")
    log.info("engine from %s", spec)
    try:
        factory = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        from core import CastfinderError

        raise CastfinderError(f"CASTFINDER_BOT_ENGINE={spec}: {exc}") from None
    engine: EngineLike = factory()
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
    """`castfinder bot` / `python -m bot`: long polling (or webhook mode) until SIGINT/SIGTERM.
    Returns the exit code."""
    parser = argparse.ArgumentParser(prog="castfinder bot",
                                     description="Run the castfinder Telegram bot (long polling, or a webhook).")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING … (default: CASTFINDER_LOG_LEVEL or INFO)")
    parser.add_argument("--webhook", metavar="URL",
                        help="webhook mode: the https URL Telegram posts updates to (CASTFINDER_WEBHOOK_URL)")
    parser.add_argument("--listen", metavar="HOST:PORT",
                        help="where the webhook server listens (CASTFINDER_WEBHOOK_LISTEN, default 127.0.0.1:8080)")
    args = parser.parse_args(argv)
    from core.errors import SettingsError
    from core.settings import load_settings

    given = {k: v for k, v in (("webhook_url", args.webhook), ("webhook_listen", args.listen)) if v is not None}
    try:
        # Out-of-range values, an unreadable .env, a webhook that is not https: each named.
        settings = load_settings(BotSettings, flags={"webhook_url": "--webhook", "webhook_listen": "--listen"},
                                 **given)
    except SettingsError as exc:
        print(texts.invalid_settings(exc), file=sys.stderr)
        return 2
    secrets = [settings.token()] if settings.bot_token else []
    if settings.database_url is not None:
        secrets.append(url_password(settings.database_url.get_secret_value()) or "")
    if settings.bot_token and settings.webhook_url:
        secrets.append(settings.webhook_secret_token())
    if settings.redis_url is not None:
        secrets.append(url_password(settings.redis_url.get_secret_value()) or "")
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
        if settings.bot_engine:
            engine = load_engine(settings.bot_engine)
        elif settings.engine_ray_address:
            engine = build_remote_engine(settings.engine_ray_address)
        else:
            engine = build_engine()
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
    except (DatabaseUnavailable, SchemaTooNewError, SharedStateError, ListenError) as exc:
        log.error("%s", exc)  # one line: which setting, what failed (password masked)
        return 1
    log.info("bot stopped")
    return 0
