"""Screenshots in: one photo, an album (one query), or an image sent as a file."""

from __future__ import annotations

from aiogram import Bot, F, Router
from aiogram.types import Message

from .. import texts
from ..addressing import CaptionIntent
from ..filters import ForThisBot
from ..middlewares.throttling import ENGINE_QUERY
from ..services.identify import IdentifyService
from ..services.queries import QueryRequest, QueryService
from ..services.telegram_io import ImageRef, ReplyTarget, image_ref, looks_like_image


async def on_screenshots(
    message: Message,
    bot: Bot,
    intent: CaptionIntent,
    queries: QueryService,
    received_at: float | None = None,
    album: list[Message] | None = None,
) -> None:
    parts = album or [message]
    refs: list[ImageRef] = []
    others: list[ImageRef] = []
    for part in parts:
        ref = image_ref(part)
        if ref is None:
            continue
        (refs if looks_like_image(ref) else others).append(ref)
    skipped = len(parts) - len(refs)
    if not refs and others:
        refs = others[:1]  # so the user hears why this file is not usable
    notes = (texts.album_skipped(skipped),) if album and refs and skipped else ()
    user = message.from_user
    req = QueryRequest(
        target=ReplyTarget.of(message),
        chat_type=message.chat.type,
        user_id=user.id if user else message.chat.id,
        images=tuple(refs),
        movie_hint=intent.movie,
        explicit_movie=intent.explicit,
        received_at=received_at,
        notes=notes,
    )
    if not intent.movie and (await queries.storage.chat(message.chat.id)).movie_slug is None:
        # No movie named or set: which movie is this? (bot/services/identify.py)
        await IdentifyService(queries).run(bot, req)
        return
    await queries.run_query(bot, req)


def create_router() -> Router:
    router = Router(name="queries")
    router.message.register(
        on_screenshots, F.photo | F.document | F.media_group_id, ForThisBot(), flags={ENGINE_QUERY: True}
    )
    return router
