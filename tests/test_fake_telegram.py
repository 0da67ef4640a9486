"""The fake Bot API server, exercised by a real aiogram Bot over real HTTP.

These tests pin down the behaviour other end-to-end tests rely on: responses
that aiogram parses, the error classes aiogram raises, the recorded calls and
event-driven waiting (no sleeps anywhere).
"""

from __future__ import annotations

import asyncio
import struct
import zlib
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiogram import Bot, Dispatcher, F, Router
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramRetryAfter,
    TelegramUnauthorizedError,
)
from aiogram.filters import Command, CommandStart
from aiogram.types import (
    BotCommand,
    BufferedInputFile,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputMediaPhoto,
    Message,
    ReplyParameters,
)

from tests.fake_telegram import (
    FakeTelegramServer,
    callback_update,
    group_chat,
    message_update,
    private_chat,
    user,
)

USER_ID = 4242


def png(width: int, height: int) -> bytes:
    """A tiny but valid PNG so dimension sniffing has something real to read."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + payload))
        return struct.pack(">I", len(payload)) + kind + payload + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"".join(b"\x00" + b"\x80" * width for _ in range(height)))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegramServer]:
    async with FakeTelegramServer() as server:
        yield server


@pytest.fixture
async def bot(tg: FakeTelegramServer) -> AsyncIterator[Bot]:
    bot = tg.make_bot()
    try:
        yield bot
    finally:
        await bot.session.close()


async def test_get_me_is_recorded_outside_calls(tg: FakeTelegramServer, bot: Bot) -> None:
    me = await bot.get_me()

    assert (me.id, me.username, me.is_bot) == (tg.bot_id, "castfinder_test_bot", True)
    assert tg.calls == []
    assert [call.method for call in tg.all_calls] == ["getMe"]


async def test_send_then_edit_updates_stored_message(tg: FakeTelegramServer, bot: Bot) -> None:
    keyboard = InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text="More", callback_data="more:1")]]
    )
    first = await bot.send_message(USER_ID, "Searching…", reply_markup=keyboard)
    second = await bot.send_message(USER_ID, "second")

    assert (first.message_id, second.message_id) == (1, 2)
    assert first.from_user is not None and first.from_user.id == tg.bot_id
    assert first.chat.type == "private"
    assert first.reply_markup is not None
    assert first.reply_markup.model_dump(exclude_none=True) == keyboard.model_dump(exclude_none=True)
    [call] = tg.calls_of("sendMessage")[:1]
    assert call.params["chat_id"] == USER_ID  # JSON-decoded, not "4242"
    assert call.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "more:1"

    edited = await bot.edit_message_text(
        "Found <b>3</b> shots", chat_id=USER_ID, message_id=first.message_id,
        parse_mode="HTML", reply_markup=keyboard,
    )
    assert isinstance(edited, Message)
    stored = tg.messages[(USER_ID, first.message_id)]
    assert stored["text"] == "Found 3 shots"
    assert stored["entities"] == [{"type": "bold", "offset": 6, "length": 1}]
    assert stored["reply_markup"]["inline_keyboard"][0][0]["text"] == "More"
    assert "edit_date" in stored

    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_text(
            "Found <b>3</b> shots", chat_id=USER_ID, message_id=first.message_id,
            parse_mode="HTML", reply_markup=keyboard,
        )
    # Editing without reply_markup drops the keyboard, exactly like Telegram.
    await bot.edit_message_text("Found 3 shots", chat_id=USER_ID, message_id=first.message_id)
    assert "reply_markup" not in tg.messages[(USER_ID, first.message_id)]

    with pytest.raises(TelegramBadRequest, match="message to edit not found"):
        await bot.edit_message_text("x", chat_id=USER_ID, message_id=999)
    assert tg.calls[-1].failed and tg.calls[-1].status == 400


async def test_send_photo_upload_and_download_back(tg: FakeTelegramServer, bot: Bot) -> None:
    poster = png(1000, 1500)

    sent = await bot.send_photo(USER_ID, BufferedInputFile(poster, "poster.png"), caption="Poster")

    assert sent.photo is not None and sent.caption == "Poster"
    largest = sent.photo[-1]
    assert (largest.width, largest.height, largest.file_size) == (1000, 1500, len(poster))
    assert [size.width for size in sent.photo] == sorted(size.width for size in sent.photo)
    [call] = tg.calls_of("sendPhoto")
    assert list(call.files.values()) == [poster]
    assert call.params["photo"] == f"attach://{next(iter(call.files))}"

    downloaded = await bot.download(largest)
    assert downloaded is not None and downloaded.read() == poster

    # Re-sending by file_id reuses the known photo instead of uploading again.
    again = await bot.send_photo(USER_ID, largest.file_id)
    assert again.photo is not None and again.photo[-1].file_unique_id == largest.file_unique_id
    assert tg.calls_of("sendPhoto")[1].files == {}


async def test_send_media_group_records_every_file(tg: FakeTelegramServer, bot: Bot) -> None:
    frames = [png(64, 36), png(64, 37), png(64, 38)]
    media = [
        InputMediaPhoto(media=BufferedInputFile(data, f"frame{i}.png"), caption=f"#{i}")
        for i, data in enumerate(frames)
    ]

    messages = await bot.send_media_group(USER_ID, media)

    assert len(messages) == 3
    assert len({m.media_group_id for m in messages}) == 1
    assert [m.caption for m in messages] == ["#0", "#1", "#2"]
    file_ids = {m.photo[-1].file_id for m in messages if m.photo}
    assert len(file_ids) == 3
    [call] = tg.calls_of("sendMediaGroup")
    assert sorted(call.files.values()) == sorted(frames)
    assert all(item["media"].startswith("attach://") for item in call.params["media"])
    for message in messages:
        assert message.photo is not None
        downloaded = await bot.download(message.photo[-1])
        assert downloaded is not None and downloaded.read() in frames

    with pytest.raises(TelegramBadRequest, match="2-10 items"):
        await bot.send_media_group(USER_ID, media[:1])


async def test_fail_next_raises_retry_after_then_recovers(tg: FakeTelegramServer, bot: Bot) -> None:
    media = [InputMediaPhoto(media=BufferedInputFile(png(8, 8), f"{i}.png")) for i in range(2)]
    tg.fail_next("sendMediaGroup", retry_after=1)

    with pytest.raises(TelegramRetryAfter) as caught:
        await bot.send_media_group(USER_ID, media)
    assert caught.value.retry_after == 1

    [failed] = tg.calls_of("sendMediaGroup")
    assert failed.failed and failed.status == 429
    assert failed.response == {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 1",
        "parameters": {"retry_after": 1},
    }
    assert not tg.bot_messages(USER_ID)  # nothing was "sent" by the failed call

    assert len(await bot.send_media_group(USER_ID, media)) == 2


async def test_blocked_chat_is_forbidden(tg: FakeTelegramServer, bot: Bot) -> None:
    tg.block_chat(USER_ID)

    with pytest.raises(TelegramForbiddenError, match="bot was blocked by the user"):
        await bot.send_message(USER_ID, "hello?")
    with pytest.raises(TelegramForbiddenError):
        await bot.send_chat_action(USER_ID, "typing")

    assert (await bot.send_message(USER_ID + 1, "other user is fine")).message_id == 1


async def test_get_file_and_download_user_file(tg: FakeTelegramServer, bot: Bot) -> None:
    payload = b"\x00\x01 a screenshot \xff" * 100
    file_id = tg.add_file(payload)

    file = await bot.get_file(file_id)
    assert file.file_id == file_id and file.file_size == len(payload) and file.file_path

    downloaded = await bot.download(file_id)
    assert downloaded is not None and downloaded.read() == payload
    assert tg.downloads == [file.file_path]

    huge = tg.add_file(b"tiny", file_size=25 * 1024 * 1024)
    with pytest.raises(TelegramBadRequest, match="file is too big"):
        await bot.get_file(huge)
    with pytest.raises(TelegramBadRequest, match="invalid file_id"):
        await bot.get_file("no-such-file")


async def test_long_poll_wakes_on_push_and_offset_confirms(tg: FakeTelegramServer, bot: Bot) -> None:
    chat, ann = private_chat(USER_ID), user(USER_ID)
    poll = asyncio.create_task(bot.get_updates(timeout=30))
    await tg.wait_for_poll()

    update_id = tg.push_update(message_update(tg, chat=chat, from_user=ann, text="hi"))

    # A broken long poll would hold for the full 30 s timeout.
    updates = await asyncio.wait_for(poll, 5)
    assert [u.update_id for u in updates] == [update_id]
    assert updates[0].message is not None and updates[0].message.text == "hi"

    # Not confirmed yet: delivered again.
    assert [u.update_id for u in await bot.get_updates()] == [update_id]
    # offset confirms it.
    assert await bot.get_updates(offset=update_id + 1) == []
    assert tg.pending_updates == []


async def test_message_update_builder(tg: FakeTelegramServer, bot: Bot) -> None:
    group = group_chat(-1001234567890)
    ann = user(USER_ID, username="ann")
    screenshot = png(320, 180)

    first = message_update(tg, chat=group, from_user=ann, text="/find@castfinder_test_bot now")
    second = message_update(
        tg, chat=group, from_user=ann, caption="/find", photo_bytes=screenshot,
        reply_to=first["message"],
    )

    assert first["message"]["entities"] == [{"type": "bot_command", "offset": 0, "length": 25}]
    message = second["message"]
    assert message["message_id"] == first["message"]["message_id"] + 1
    assert message["caption_entities"] == [{"type": "bot_command", "offset": 0, "length": 5}]
    assert message["reply_to_message"]["text"].startswith("/find@")
    assert (message["photo"][-1]["width"], message["photo"][-1]["height"]) == (320, 180)
    assert tg.messages[(group["id"], message["message_id"])]["caption"] == "/find"

    # The bot's reply continues the chat's message id sequence and quotes the user message.
    reply = await bot.send_message(
        group["id"], "on it", reply_parameters=ReplyParameters(message_id=message["message_id"])
    )
    assert reply.message_id == message["message_id"] + 1
    assert reply.chat.type == "supergroup" and reply.chat.title == "Film club"
    assert reply.reply_to_message is not None and reply.reply_to_message.caption == "/find"

    downloaded = await bot.download(message["photo"][-1]["file_id"])
    assert downloaded is not None and downloaded.read() == screenshot


async def test_dispatcher_polling_answers_pushed_message(tg: FakeTelegramServer) -> None:
    router = Router()
    handled = asyncio.Event()

    @router.message(CommandStart())
    async def start(message: Message) -> None:
        assert message.from_user is not None
        await message.answer(f"Hello, {message.from_user.first_name}!")
        handled.set()

    dp = Dispatcher()
    dp.include_router(router)
    bot = tg.make_bot()
    polling = asyncio.create_task(dp.start_polling(bot, handle_signals=False))
    try:
        tg.push_update(message_update(tg, chat=private_chat(USER_ID), from_user=user(USER_ID), text="/start"))

        [call] = await tg.wait_for("sendMessage")
        assert call.params == {"chat_id": USER_ID, "text": "Hello, Ann!"}
        # The reply lands after the user's /start (message 1) in the shared id sequence.
        assert call.result["message_id"] == 2
        # Let the handler see its response before the session is closed under it.
        await asyncio.wait_for(handled.wait(), 5)
    finally:
        await dp.stop_polling()
        await polling
    assert bot.session._session is None or bot.session._session.closed  # type: ignore[attr-defined]
    # aiogram asked only for the update types it has handlers for.
    assert tg.calls_of("getUpdates")[-1].params["allowed_updates"] == ["message"]


async def test_run_polling_helper_with_callback_query(tg: FakeTelegramServer) -> None:
    router = Router()

    @router.message(Command("find"))
    async def find(message: Message) -> None:
        keyboard = InlineKeyboardMarkup(
            inline_keyboard=[[InlineKeyboardButton(text="Next", callback_data="page:2")]]
        )
        await message.answer("Page 1", reply_markup=keyboard)

    @router.callback_query(F.data.startswith("page:"))
    async def page(callback: CallbackQuery) -> None:
        assert isinstance(callback.message, Message) and callback.data is not None
        await callback.message.edit_text(f"Page {callback.data.split(':')[1]}")
        await callback.answer("Turning the page")

    dp = Dispatcher()
    dp.include_router(router)
    bot = tg.make_bot()
    chat, ann = private_chat(USER_ID), user(USER_ID)

    async with tg.run_polling(dp, bot):
        tg.push_update(message_update(tg, chat=chat, from_user=ann, text="/find"))
        [sent] = await tg.wait_for("sendMessage")
        bot_message = tg.messages[(USER_ID, sent.result["message_id"])]
        tg.push_update(callback_update(tg, chat=chat, from_user=ann, message=bot_message, data="page:2"))
        [answer] = await tg.wait_for("answerCallbackQuery")

    assert tg.messages[(USER_ID, bot_message["message_id"])]["text"] == "Page 2"
    assert "reply_markup" not in tg.messages[(USER_ID, bot_message["message_id"])]
    assert tg.callback_answers[answer.params["callback_query_id"]]["text"] == "Turning the page"
    assert [c.method for c in tg.calls] == ["sendMessage", "editMessageText", "answerCallbackQuery"]


async def test_parse_mode_errors_match_telegram(tg: FakeTelegramServer, bot: Bot) -> None:
    with pytest.raises(TelegramBadRequest, match='Unsupported start tag "3" at byte offset 6'):
        await bot.send_message(USER_ID, "Scene <3 with Rose", parse_mode="HTML")
    with pytest.raises(TelegramBadRequest, match="Unclosed start tag at byte offset 10"):
        await bot.send_message(USER_ID, "Truncated <b", parse_mode="HTML")
    with pytest.raises(TelegramBadRequest, match=r"Character '\(' is reserved"):
        await bot.send_message(USER_ID, "*Titanic* (1997).", parse_mode="MarkdownV2")

    ok = await bot.send_message(USER_ID, r"*Titanic* \(1997\)\.", parse_mode="MarkdownV2")
    assert ok.text == "Titanic (1997)."
    assert ok.entities is not None and ok.entities[0].type == "bold"

    with pytest.raises(TelegramBadRequest, match="BUTTON_DATA_INVALID"):
        await bot.send_message(
            USER_ID, "x",
            reply_markup=InlineKeyboardMarkup(
                inline_keyboard=[[InlineKeyboardButton(text="b", callback_data="x" * 65)]]
            ),
        )


async def test_commands_round_trip(tg: FakeTelegramServer, bot: Bot) -> None:
    commands = [BotCommand(command="find", description="Find shots of a character")]

    assert await bot.set_my_commands(commands)
    assert [c.model_dump() for c in await bot.get_my_commands()] == [c.model_dump() for c in commands]
    assert await bot.delete_my_commands()
    assert await bot.get_my_commands() == []
    with pytest.raises(TelegramBadRequest, match="BOT_COMMAND_INVALID"):
        await bot.set_my_commands([BotCommand(command="Find", description="bad case")])


async def test_wrong_token_unknown_method_and_wait_timeout(tg: FakeTelegramServer) -> None:
    stranger = Bot("999:wrong-token", session=tg.make_session())
    try:
        with pytest.raises(TelegramUnauthorizedError):
            await stranger.get_me()
    finally:
        await stranger.session.close()

    async with aiohttp.ClientSession() as http:
        async with http.post(f"{tg.base_url}/bot{tg.token}/sendTelepathy", data={"chat_id": "1"}) as resp:
            assert resp.status == 404
            assert await resp.json() == {
                "ok": False, "error_code": 404, "description": "Not Found: method not found",
            }

    with pytest.raises(AssertionError, match="waiting for 1 x sendMessage") as caught:
        await tg.wait_for("sendMessage", timeout=0.05)
    assert "sendTelepathy" in str(caught.value)  # the dump shows what did happen
