"""Webhook mode: Telegram (or a load balancer in front of several bot processes) posts updates to
an aiohttp server this process runs (aiogram's aiohttp integration), instead of the process
polling for them.

A request without the secret header (X-Telegram-Bot-Api-Secret-Token) is refused with 403 and
nothing is processed; a body that is not a JSON update is refused with 400 (Telegram would resend
a 5xx forever). A good update is answered 200 at once and handled in the background, like aiogram's
`SimpleRequestHandler`, so a slow search never holds Telegram's connection; one delivered again
(Telegram resends what it got no 200 for in time) is answered 200 and not handled twice, whichever
process it reaches when Redis is shared.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from typing import Any, Protocol

from aiogram import Bot, Dispatcher
from aiogram.types import Update
from aiogram.webhook.aiohttp_server import SimpleRequestHandler
from aiohttp import web
from pydantic import ValidationError

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
# Telegram's updates are small JSON; a photo is a file id, never the bytes.
MAX_BODY = 1024 * 1024


class ListenError(Exception):
    """The webhook server cannot listen where it was told; the message is the user's one line."""


class Seen(Protocol):
    """Whether an update id is new (services.shared_state.SeenUpdates, or RedisSeenUpdates)."""

    async def first(self, update_id: int) -> bool: ...


class WebhookHandler(SimpleRequestHandler):
    def __init__(self, dispatcher: Dispatcher, bot: Bot, *, secret_token: str, seen: Seen, **data: Any) -> None:
        super().__init__(dispatcher, bot, handle_in_background=True, secret_token=secret_token, **data)
        self.refused = 0
        self.seen = seen

    async def handle(self, request: web.Request) -> web.Response:
        given = request.headers.get(SECRET_HEADER, "")
        if not secrets.compare_digest(given.encode(), (self.secret_token or "").encode()):
            self.refused += 1
            log.warning("webhook request from %s without the right secret header: refused (403)", request.remote)
            return web.Response(status=403, text="Forbidden")
        try:
            body = await request.json(loads=json.loads)
            if not isinstance(body, dict):
                raise ValueError("not a JSON object")
            update = Update.model_validate(body, context={"bot": self.bot})
        except (ValueError, ValidationError) as exc:
            self.refused += 1
            log.warning("webhook request from %s is not a Telegram update: refused (400): %s",
                        request.remote, str(exc).splitlines()[0][:200])
            return web.Response(status=400, text="Bad Request: not a Telegram update")
        if not await self.seen.first(update.update_id):
            log.info("update %d delivered again: already taken, not handled twice", update.update_id)
            return web.json_response({})
        task = asyncio.create_task(self._background_feed_update(bot=self.bot, update=body))
        self._background_feed_update_tasks.add(task)
        task.add_done_callback(self._background_feed_update_tasks.discard)
        return web.json_response({})

    async def close(self) -> None:
        """The App owns the bot's HTTP session and closes it after the last query; not here."""

    async def finish(self, timeout: float) -> None:
        """Wait up to `timeout` for the updates being handled."""
        if self._background_feed_update_tasks and timeout > 0:
            await asyncio.wait(set(self._background_feed_update_tasks), timeout=timeout)

    @property
    def in_flight(self) -> int:
        return len(self._background_feed_update_tasks)


async def start_server(dispatcher: Dispatcher, bot: Bot, *, host: str, port: int, path: str,
                       secret_token: str, seen: Seen) -> tuple[web.AppRunner, WebhookHandler]:
    """Listen on host:port for updates posted to `path`; ListenError when that cannot be."""
    app = web.Application(client_max_size=MAX_BODY)
    handler = WebhookHandler(dispatcher, bot, secret_token=secret_token, seen=seen)
    handler.register(app, path=path)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        why = exc.strerror or str(exc)
        raise ListenError(f"cannot listen on {host}:{port} (CASTFINDER_WEBHOOK_LISTEN / --listen): {why}") from None
    return runner, handler
