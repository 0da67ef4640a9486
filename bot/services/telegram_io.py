"""Getting screenshots from Telegram and putting answers back, threaded as replies."""

from __future__ import annotations

import asyncio
import io
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import aiohttp
from aiogram import Bot
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest, TelegramNetworkError
from aiogram.types import (
    BufferedInputFile,
    FSInputFile,
    InlineKeyboardMarkup,
    InputMediaPhoto,
    Message,
    ReplyParameters,
)

from .. import texts
from ..errors import QueryRefused
from ..keyboards import results_keyboard
from ..settings import ALBUM_MAX
from .storage import ResultPage, StoredResult

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".heic", ".heif")


@dataclass(frozen=True)
class ImageRef:
    """A screenshot the user sent, before it is downloaded."""

    file_id: str
    file_size: int | None
    kind: Literal["photo", "document"]
    name: str | None = None
    mime_type: str | None = None


def image_ref(message: Message) -> ImageRef | None:
    """The screenshot in `message` (the largest photo size, or an image document)."""
    if message.photo:
        best = message.photo[-1]
        return ImageRef(best.file_id, best.file_size, "photo")
    if message.document:
        d = message.document
        return ImageRef(d.file_id, d.file_size, "document", d.file_name, d.mime_type)
    return None


def looks_like_image(ref: ImageRef) -> bool:
    """Cheap check before downloading: photos always; documents by MIME type or extension.
    Whatever passes is still decoded (and refused if it is not an image) by the engine."""
    if ref.kind == "photo":
        return True
    if ref.mime_type:
        return ref.mime_type.lower().startswith("image/")
    return ref.name is not None and ref.name.lower().endswith(IMAGE_SUFFIXES)


def check_ref(ref: ImageRef, limit_bytes: int) -> None:
    if not looks_like_image(ref):
        raise QueryRefused(texts.not_an_image(ref.name), "not_image")
    if ref.file_size is not None and ref.file_size > limit_bytes:
        raise QueryRefused(texts.file_too_big(ref.file_size, limit_bytes // (1024 * 1024)), "too_big")


# Seconds before the second and third try of a file transfer (doubled each time).
DOWNLOAD_BACKOFF_S = 0.5


class _TooBig(Exception):
    pass


class _CappedBuffer(io.BytesIO):
    """Refuses to grow past `limit` bytes: a file larger than it said is cut off as it streams
    in, not held whole in memory first."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def write(self, data: Any) -> int:
        if self.tell() + len(data) > self.limit:
            raise _TooBig()
        return super().write(data)


def _transient(exc: BaseException) -> bool:
    """Worth another try: the network, a timeout, or a 5xx (or 408, 429) from the file server;
    not a 404 (the file is gone) nor a local file that is missing."""
    if isinstance(exc, aiohttp.ClientResponseError):
        return exc.status >= 500 or exc.status in (408, 429)
    return isinstance(exc, (TelegramNetworkError, aiohttp.ClientError, asyncio.TimeoutError))


async def download(bot: Bot, ref: ImageRef, *, limit_bytes: int, attempts: int = 3) -> bytes:
    """The screenshot's bytes, or QueryRefused with a message for the user. Whatever Telegram or
    the network does (getFile refused or failing after the request retries, the file answering
    404 or 500, a dropped connection), the user is told to send it again and the log gets one
    warning line: an outage of Telegram's, not a bug of ours, so no traceback."""
    check_ref(ref, limit_bytes)
    too_big = QueryRefused(texts.file_too_big(max(ref.file_size or 0, limit_bytes + 1),
                                              limit_bytes // (1024 * 1024)), "too_big")
    try:
        # Retried by the session's RetryMiddleware (429, 5xx, network) like every request.
        file = await bot.get_file(ref.file_id)
    except TelegramBadRequest as exc:
        if "too big" in exc.message.lower():
            raise too_big from exc
        raise _download_failed(ref, exc) from exc
    except TelegramAPIError as exc:
        raise _download_failed(ref, exc) from exc
    if file.file_size is not None and file.file_size > limit_bytes:
        raise too_big
    if not file.file_path:
        raise _download_failed(ref, "Telegram gave no file path")
    # The transfer itself bypasses the request middlewares, so it retries here.
    for attempt in range(attempts):
        buffer = _CappedBuffer(limit_bytes)
        try:
            await bot.download_file(file.file_path, destination=buffer)
            return buffer.getvalue()
        except _TooBig:
            raise too_big from None
        except (aiohttp.ClientError, asyncio.TimeoutError, TelegramNetworkError, OSError) as exc:
            # OSError: a local Bot API server (CASTFINDER_TELEGRAM_API_LOCAL) whose file is gone.
            if not _transient(exc) or attempt + 1 >= attempts:
                raise _download_failed(ref, exc) from exc
            await asyncio.sleep(DOWNLOAD_BACKOFF_S * 2**attempt)
    raise AssertionError("unreachable: the last attempt returns or raises")


def _download_failed(ref: ImageRef, why: object) -> QueryRefused:
    log.warning("could not download %s %s from Telegram: %s", ref.kind, ref.file_id, why)
    return QueryRefused(texts.download_failed(), "download_failed")


@dataclass(frozen=True)
class ReplyTarget:
    """Where an answer goes: the asker's chat, as a reply to their message (in groups the reply
    is what tells several askers' answers apart), in their forum topic if any."""

    chat_id: int
    reply_to: int | None
    thread_id: int | None = None

    @classmethod
    def of(cls, message: Message) -> ReplyTarget:
        thread = message.message_thread_id if message.is_topic_message else None
        return cls(message.chat.id, message.message_id, thread)

    @property
    def reply(self) -> ReplyParameters | None:
        if self.reply_to is None:
            return None
        return ReplyParameters(message_id=self.reply_to, allow_sending_without_reply=True)

    async def text(self, bot: Bot, text: str, markup: InlineKeyboardMarkup | None = None) -> Message:
        return await bot.send_message(
            self.chat_id, text, message_thread_id=self.thread_id, reply_parameters=self.reply, reply_markup=markup,
        )

    async def photo(self, bot: Bot, data: bytes, caption: str, markup: InlineKeyboardMarkup | None = None) -> Message:
        return await bot.send_photo(
            self.chat_id, BufferedInputFile(data, "people.jpg"), caption=caption, message_thread_id=self.thread_id,
            reply_parameters=self.reply, reply_markup=markup,
        )


class ThumbnailCache:
    """Telegram file ids of thumbnails already uploaded, so paging and repeated answers resend
    by id instead of uploading again. Keyed by path and modification time: re-indexing a movie
    rewrites its thumbnails."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._ids: OrderedDict[tuple[str, int], str] = OrderedDict()

    @staticmethod
    def key(path: str) -> tuple[str, int] | None:
        try:
            return path, os.stat(path).st_mtime_ns
        except OSError:
            return None

    def get(self, key: tuple[str, int]) -> str | None:
        file_id = self._ids.get(key)
        if file_id is not None:
            self._ids.move_to_end(key)
        return file_id

    def put(self, key: tuple[str, int], file_id: str) -> None:
        self._ids[key] = file_id
        self._ids.move_to_end(key)
        while len(self._ids) > self.size:
            self._ids.popitem(last=False)


class ResultSender:
    def __init__(self, bot: Bot, cache: ThumbnailCache) -> None:
        self.bot = bot
        self.cache = cache

    async def send_page(self, page: ResultPage, offset: int) -> Message:
        """Thumbnails of results [offset, offset + page_size) as albums, then their list with a
        "More" button while results remain. Returns the list message."""
        target = ReplyTarget(page.chat_id, page.reply_to, page.thread_id)
        shown = page.results[offset : offset + page.page_size]
        await self.send_thumbnails(target, shown)
        next_offset = offset + len(shown)
        remaining = len(page.results) - next_offset
        markup = results_keyboard(page.id, [r.rank for r in shown], next_offset, remaining)
        text = texts.results_text(page.movie, shown, total=len(page.results), notes=page.notes if offset == 0 else [])
        return await target.text(self.bot, text, markup)

    async def send_thumbnails(self, target: ReplyTarget, results: Sequence[StoredResult]) -> None:
        items: list[tuple[StoredResult, tuple[str, int]]] = []
        for r in results:
            key = self.cache.key(r.thumbnail)
            if key is None:
                log.warning("thumbnail %s is missing; listing shot %s without it", r.thumbnail, r.shot)
                continue
            items.append((r, key))
        for start in range(0, len(items), ALBUM_MAX):
            chunk = items[start : start + ALBUM_MAX]
            if len(chunk) == 1:  # an album needs two items at least
                r, key = chunk[0]
                sent = await self.bot.send_photo(
                    target.chat_id, self._media(key), caption=texts.result_caption(r),
                    message_thread_id=target.thread_id, reply_parameters=target.reply,
                )
                self._remember(key, sent)
                continue
            messages = await self.bot.send_media_group(
                target.chat_id,
                media=[InputMediaPhoto(media=self._media(key), caption=texts.result_caption(r)) for r, key in chunk],
                message_thread_id=target.thread_id, reply_parameters=target.reply,
            )
            for (_, key), sent in zip(chunk, messages):
                self._remember(key, sent)

    def _media(self, key: tuple[str, int]) -> str | FSInputFile:
        return self.cache.get(key) or FSInputFile(key[0])

    def _remember(self, key: tuple[str, int], message: Message) -> None:
        if message.photo:
            self.cache.put(key, message.photo[-1].file_id)
