"""▶ under a results list: the result's shot as a short muted video (core/clips.py cuts it).

The button carries the page id and the result's rank (keyboards.ClipRequest); the result is
looked up with the chat the button was pressed in, so a forged or expired button is answered as
expired. What cutting would refuse (a frames-folder movie, a video moved since indexing, a shot
gone from a re-indexed movie) is checked first and answered on the button; only then does the
button say "Cutting the clip…" while the engine threads cut it. Anyone in the chat may press ▶,
as anyone may press More; one clip at a time per user.
"""

from __future__ import annotations

import logging

from aiogram import Bot, Router
from aiogram.types import CallbackQuery, FSInputFile, Message

from core import CastfinderError
from core.errors import NoVideoError, ShotNotFoundError, SourceMovedError

from .. import texts
from ..keyboards import ClipRequest
from ..services.engine_gateway import EngineGateway
from ..services.storage import Storage
from ..services.telegram_io import ReplyTarget, ThumbnailCache

log = logging.getLogger(__name__)

# Telegram's Bot API takes uploads of up to 50 MB; a 10 s clip at 480 px is a few hundred kB, so
# a clip over this is a bug (or a setting gone wrong), refused rather than sent.
TELEGRAM_UPLOAD_BYTES = 50 * 1000 * 1000


def refusal(exc: CastfinderError) -> str:
    """What the user is told when a clip cannot be cut. The engine's message names files on the
    server: it goes to the log, the user gets words of the bot's own."""
    if isinstance(exc, NoVideoError):
        return texts.clip_no_video()
    log.warning("clip refused: %s", exc)
    if isinstance(exc, SourceMovedError):
        return texts.clip_source_moved()
    if isinstance(exc, ShotNotFoundError):
        return texts.clip_no_shot()
    return texts.clip_failed()


def create_router() -> Router:
    router = Router(name="clips")
    cutting: set[int] = set()  # users with a clip being cut
    uploaded = ThumbnailCache()  # Telegram file ids of clips sent before, by path and modification time

    async def on_clip(callback: CallbackQuery, callback_data: ClipRequest, bot: Bot, db: Storage,
                      gateway: EngineGateway) -> None:
        chat_id = callback.message.chat.id if callback.message is not None else None
        page = await db.results(callback_data.page, chat_id=chat_id) if chat_id is not None else None
        result = next((r for r in page.results if r.rank == callback_data.rank), None) if page else None
        if page is None or result is None:
            await callback.answer(texts.results_expired(), show_alert=True)
            return
        user = callback.from_user.id
        if user in cutting:
            await callback.answer(texts.clip_busy())
            return
        movie = page.slug or page.movie  # pages stored before clips existed have the name only
        shot = result.shot_id if result.shot_id > 0 else result.shot  # 0: a page stored before shot ids were kept
        cutting.add(user)
        try:
            try:
                await gateway.check_clip(movie, shot)
            except CastfinderError as exc:
                await callback.answer(refusal(exc), show_alert=True)
                return
            await callback.answer(texts.clip_cutting())
            target = ReplyTarget(page.chat_id, page.reply_to, page.thread_id)
            try:
                clip = await gateway.clip(movie, shot, result.frame_s)
            except CastfinderError as exc:  # the video could not be decoded or the clip written
                await target.text(bot, refusal(exc))
                return
            if clip.size_bytes > TELEGRAM_UPLOAD_BYTES:
                log.error("clip %s is %d bytes, over Telegram's upload limit; not sent", clip.path, clip.size_bytes)
                await target.text(bot, texts.clip_failed())
                return
            key = uploaded.key(str(clip.path))
            media = (uploaded.get(key) if key is not None else None) or FSInputFile(clip.path, f"shot_{clip.shot}.mp4")
            sent: Message = await bot.send_video(
                target.chat_id, media, duration=max(1, round(clip.duration_s)), width=clip.width,
                height=clip.height, supports_streaming=True,
                caption=texts.clip_caption(result.shot, result.scene, clip.start_s, clip.end_s),
                message_thread_id=target.thread_id, reply_parameters=target.reply,
            )
            if key is not None and sent.video is not None:
                uploaded.put(key, sent.video.file_id)
        finally:
            cutting.discard(user)

    router.callback_query.register(on_clip, ClipRequest.filter())
    return router
