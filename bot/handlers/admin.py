"""/stats: usage from the query log, for the admins in CASTFINDER_ADMIN_IDS."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message

from .. import texts
from ..filters import IsAdmin
from ..services.engine_gateway import EngineGateway
from ..services.limits import QueryQueue
from ..services.storage import Storage
from .replies import respond


async def on_stats(message: Message, db: Storage, queue: QueryQueue, gateway: EngineGateway) -> None:
    usage = await db.stats()
    movies = len(await gateway.movies())
    text = texts.stats(usage, running=queue.running, waiting=queue.waiting, movies=movies)
    await respond(message, f"{text}\n{texts.feedback_stats(usage)}")


async def on_stats_refused(message: Message) -> None:
    await respond(message, texts.admins_only())


def create_router() -> Router:
    router = Router(name="admin")
    router.message.register(on_stats, Command("stats"), IsAdmin())
    router.message.register(on_stats_refused, Command("stats"))
    return router
