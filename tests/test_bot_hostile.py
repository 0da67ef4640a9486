"""The bot under fire: hostile updates through `Dispatcher.feed_update` over the fake Bot API.

Each test asserts what the user sees (the texts sent, to which chat), that nothing reached another
user's chat, and that the log holds no traceback where none belongs. Every harness also checks,
on the way out, that the bot never made a request Telegram refuses for its size (a text over 4096
characters, a caption over 1024, a callback answer over 200; tests/bot_support.py).

The engine is a stand-in with the real image decoder and the real movie look-up but canned
search results (`StubEngine`), so these tests need no models and no ../shared.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any

import pytest
from aiogram.exceptions import TelegramBadRequest

from bot.keyboards import MoreResults, PersonChoice, ascii_number
from bot.middlewares.retry import RetryMiddleware
from bot.services import telegram_io
from bot.services.limits import QueryQueue, QueueFull, UserBusy
from core import Person
from tests.bot_support import (
    ALICE,
    ALICE_CHAT,
    BOB,
    GROUP,
    HEAT,
    USER_ID,
    CatalogEngine,
    Harness,
    StubEngine,
    bot_harness,
    jpeg,
    movie_info,
)
from tests.fake_telegram import callback_update, edited_message_update, message_update, private_chat

BOB_CHAT = private_chat(BOB["id"], "Bob", "bob")
INTERNAL = "Something went wrong on my side"
DOWNLOAD_FAILED = "I couldn't download your screenshot from Telegram; please send it again."
EXPIRED = ("These results have expired", "That choice has expired", "This button no longer works")
TWO_PEOPLE = [Person(1, (10.0, 10.0, 100.0, 190.0), 0.9, 0.25), Person(2, (160.0, 10.0, 300.0, 190.0), 0.8, 0.3)]


@pytest.fixture
def engine(tmp_path: Path) -> StubEngine:
    return StubEngine(tmp_path)


@pytest.fixture
async def h(tmp_path: Path, engine: StubEngine):
    async with bot_harness(engine, tmp_path) as harness:
        for chat in (USER_ID, BOB["id"], GROUP["id"]):
            await harness.app.storage.set_movie(chat, "heat", "Heat")
        yield harness


@pytest.fixture
def log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO)
    return caplog


def no_traceback(caplog: pytest.LogCaptureFixture) -> bool:
    return not any(r.exc_info for r in caplog.records) and "Traceback" not in caplog.text


def is_listing(text: str) -> bool:
    return "best shots" in text or "closest shots" in text


def listings(h: Harness, chat_id: int = USER_ID) -> list[str]:
    return [t for t in h.sent_texts(chat_id) if is_listing(t)]


STATUS = ("⬇️", "⏳", "🧍", "🔎")  # a query's status message, deleted when the answer is out


def rendered(h: Harness, chat_id: int = USER_ID) -> list[str]:
    """The messages the chat got, as Telegram shows them (HTML parsed), status messages aside."""
    return [c.result["text"] for c in h.srv.calls_of("sendMessage")
            if not c.failed and c.params["chat_id"] == chat_id and not c.params["text"].startswith(STATUS)]


def sent_to(h: Harness, chat_id: int) -> list[str]:
    """Every message-creating request the bot made to `chat_id`."""
    methods = ("sendMessage", "sendPhoto", "sendMediaGroup", "sendDocument")
    return [c.method for m in methods for c in h.srv.calls_of(m) if c.params.get("chat_id") == chat_id]


def callback_text(h: Harness, query_id: str) -> str:
    answer = h.srv.callback_answers[query_id]
    assert answer is not None, "the button was never answered: it would spin"
    return str(answer.get("text", ""))


def instant_retries(h: Harness) -> None:
    """The Bot API request retries back off 0.5 … 4 s; the tests need the decision, not the wait."""

    async def no_wait(_: float) -> None:
        return None

    for middleware in h.app.bot.session.middleware[:]:
        if isinstance(middleware, RetryMiddleware):
            middleware._sleep = no_wait


# -- the fake itself checks Telegram's limits --------------------------------------------------
async def test_the_fake_refuses_and_records_a_text_over_telegrams_limit(tmp_path: Path) -> None:
    from tests.fake_telegram import FakeTelegramServer

    async with FakeTelegramServer() as srv:
        bot = srv.make_bot()
        try:
            with pytest.raises(TelegramBadRequest, match="message is too long"):
                await bot.send_message(USER_ID, "x" * 4097)
            with pytest.raises(TelegramBadRequest, match="caption is too long"):
                await bot.send_photo(USER_ID, srv.add_photo(jpeg())[-1]["file_id"], caption="y" * 1025)
            await bot.send_message(USER_ID, "z" * 4096)  # exactly at the limit is fine
        finally:
            await bot.session.close()
        assert srv.limit_violations == ["text of 4097 characters (limit 4096)",
                                        "caption of 1025 characters (limit 1024)"]


# -- huge captions and command arguments -------------------------------------------------------
@pytest.mark.parametrize("length", [4_000, 60_000])
async def test_a_photo_with_a_huge_free_text_caption_is_answered_with_the_caption_shortened(
        h: Harness, engine: StubEngine, log: pytest.LogCaptureFixture, length: int) -> None:
    caption = ("who is this guy " * (length // 16 + 1))[:length]
    await h.feed(h.photo(jpeg(), caption=caption))
    [listing] = listings(h)
    note = next(line for line in listing.splitlines() if "is not an indexed movie" in line)
    assert note.startswith("(“who is this guy who is this guy") and "…” is not an indexed movie" in note
    assert len(note) < 250
    assert h.srv.calls_of("sendMediaGroup")  # the thumbnails went out
    assert not any(INTERNAL in t for t in h.sent_texts())
    assert all(len(q) <= 256 for q in engine.looked_up)  # the huge text never reached the fuzzy matcher
    assert no_traceback(log)


@pytest.mark.parametrize("length", [4_000, 60_000])
async def test_a_photo_captioned_with_a_huge_movie_command_is_told_no_such_movie(
        h: Harness, engine: StubEngine, log: pytest.LogCaptureFixture, length: int) -> None:
    await h.feed(h.photo(jpeg(), caption="/movie " + "Z" * length))
    [told] = rendered(h)
    assert told.startswith("No indexed movie matches “ZZZZ") and "Z…”. Closest: Heat. See /movies." in told
    assert len(told) < 300
    assert h.srv.calls_of("getFile") == []  # refused before downloading anything
    assert all(len(q) <= 256 for q in engine.looked_up)
    assert no_traceback(log)


async def test_movie_and_topk_with_5000_characters_answer_without_echoing_them_whole(
        h: Harness, engine: StubEngine, log: pytest.LogCaptureFixture) -> None:
    junk = "ab<c>& " * 715  # 5005 characters, with HTML to escape
    await h.feed(h.text("/movie " + junk))
    await h.feed(h.text("/topk " + junk))
    movie, topk = rendered(h)
    assert movie.startswith("No indexed movie matches “ab<c>& ab<c>&") and "…”" in movie and len(movie) < 300
    assert topk.startswith("“ab<c>& ab<c>&") and "…” is not a number from 1 to 20" in topk and len(topk) < 250
    assert all(len(q) <= 256 for q in engine.looked_up)
    assert no_traceback(log)


async def test_a_very_long_movie_name_fits_every_message_and_button(tmp_path: Path) -> None:
    name = "The Extraordinarily Long Director's Cut " * 8  # 320 characters
    long = movie_info(name, "long-cut")
    async with bot_harness(CatalogEngine([long, HEAT], tmp_path), tmp_path) as h:
        await h.feed(h.text("/movies"))
        [listing] = h.srv.calls_of("sendMessage")
        data = listing.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
        upd = callback_update(h.srv, chat=ALICE_CHAT, from_user=ALICE, message=listing.result, data=data)
        await h.feed(upd)
        assert callback_text(h, upd["callback_query"]["id"]).endswith("… selected")
        assert (await h.app.storage.chat(USER_ID)).movie_name == name  # chosen all the same
    # and the harness found no request over Telegram's limits


# -- downloads that fail ----------------------------------------------------------------------
@pytest.mark.parametrize(("status", "times"), [(404, 1), (500, 3)], ids=["404", "500-three-times"])
async def test_a_download_that_fails_is_explained_and_logged_as_a_warning(
        h: Harness, engine: StubEngine, log: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
        status: int, times: int) -> None:
    monkeypatch.setattr(telegram_io, "DOWNLOAD_BACKOFF_S", 0.0)
    h.srv.fail_next_download(status, times=times)
    await h.feed(h.photo(jpeg()))
    assert h.sent_texts()[-1] == DOWNLOAD_FAILED
    assert engine.searches == 0
    warnings = [r for r in log.records if r.levelno == logging.WARNING and "could not download" in r.getMessage()]
    assert len(warnings) == 1 and str(status) in warnings[0].getMessage()
    assert no_traceback(log)
    assert [r["outcome"] for r in await h.app.storage.recent_queries()] == ["download_failed"]
    # The next screenshot goes through at once.
    await h.feed(h.photo(jpeg()))
    assert len(listings(h)) == 1


async def test_a_download_that_fails_once_is_retried_and_answered(
        h: Harness, monkeypatch: pytest.MonkeyPatch, log: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(telegram_io, "DOWNLOAD_BACKOFF_S", 0.0)
    h.srv.fail_next_download(500)
    await h.feed(h.photo(jpeg()))
    assert len(listings(h)) == 1 and DOWNLOAD_FAILED not in h.sent_texts()
    assert no_traceback(log)


async def test_getfile_failing_five_times_is_explained_not_an_internal_error(
        h: Harness, engine: StubEngine, log: pytest.LogCaptureFixture) -> None:
    instant_retries(h)
    h.srv.fail_next("getFile", error_code=500, times=5)
    await h.feed(h.photo(jpeg()))
    assert len(h.srv.calls_of("getFile")) == 5  # the request retries, then the user is told
    assert h.sent_texts()[-1] == DOWNLOAD_FAILED
    assert engine.searches == 0 and no_traceback(log)


async def test_a_file_larger_than_it_claimed_is_cut_off_while_streaming(tmp_path: Path, engine: StubEngine) -> None:
    async with bot_harness(engine, tmp_path, max_download_mb=1) as h:
        await h.app.storage.set_movie(USER_ID, "heat", "Heat")
        big = bytes(1024 * 1024 + 10)
        doc = h.srv.add_document(big, file_name="shot.jpg", mime_type="image/jpeg", file_size=2000)
        upd = message_update(h.srv, chat=ALICE_CHAT, from_user=ALICE, text="x")
        del upd["message"]["text"]
        upd["message"]["document"] = doc
        await h.feed(upd)
        assert h.sent_texts()[-1].startswith("That file is 1.0 MB; bots can download files up to 1 MB.")
        assert engine.searches == 0


# -- files and media that are not screenshots ---------------------------------------------------
def document(h: Harness, data: bytes, name: str, mime: str | None, *, chat: dict = ALICE_CHAT,
             size: int | None = None) -> dict:
    upd = message_update(h.srv, chat=chat, from_user=ALICE, document_bytes=data, document_name=name, mime_type=mime)
    if size is not None:
        upd["message"]["document"]["file_size"] = size
    return upd


@pytest.mark.parametrize(
    ("data", "name", "mime", "told", "downloaded"),
    [
        (b"%PDF-1.7\n" + bytes(200), "script.pdf", "application/pdf", "“script.pdf” is not an image.", False),
        (b"", "empty.jpg", "image/jpeg", "That screenshot can't be used:", True),
        (bytes(range(256)) * 40, "noise.jpg", "image/jpeg", "That screenshot can't be used:", True),
    ],
    ids=["pdf", "zero-bytes", "random-bytes-as-jpeg"],
)
async def test_a_document_that_is_not_an_image_is_refused_politely(
        h: Harness, engine: StubEngine, log: pytest.LogCaptureFixture, data: bytes, name: str, mime: str,
        told: str, downloaded: bool) -> None:
    await h.feed(document(h, data, name, mime))
    [text] = rendered(h)
    assert text.startswith(told)
    assert bool(h.srv.downloads) == downloaded and engine.searches == 0
    assert no_traceback(log)


async def test_a_huge_image_file_is_refused_before_downloading(h: Harness, log: pytest.LogCaptureFixture) -> None:
    await h.feed(document(h, jpeg(), "huge.png", "image/png", size=300 * 1024 * 1024))
    assert rendered(h) == ["That file is 300.0 MB; bots can download files up to 20 MB. "
                           "Send the screenshot as a photo, or a smaller file."]
    assert h.srv.calls_of("getFile") == [] and no_traceback(log)


async def test_an_album_of_ten_huge_images_gets_one_refusal_and_no_download(
        h: Harness, log: pytest.LogCaptureFixture) -> None:
    parts = [h.photo(jpeg(), media_group_id="huge-album") for _ in range(10)]
    for part in parts:
        part["message"]["photo"][-1]["file_size"] = 25 * 1024 * 1024
    # Ten parts fill the album: it is handled without waiting for the window.
    await asyncio.gather(*(h.feed(p) for p in parts))
    assert rendered(h) == ["That file is 25.0 MB; bots can download files up to 20 MB. "
                           "Send the screenshot as a photo, or a smaller file."]
    assert h.srv.calls_of("getFile") == [] and no_traceback(log)


async def test_a_sticker_gets_a_hint_in_private_and_silence_in_a_group(h: Harness) -> None:
    def sticker(chat: dict) -> dict:
        upd = message_update(h.srv, chat=chat, from_user=ALICE)
        upd["message"]["sticker"] = {"file_id": "CAACAgIAAxk", "file_unique_id": "AgAD", "type": "regular",
                                     "width": 512, "height": 512, "is_animated": False, "is_video": False}
        return upd

    await h.feed(sticker(ALICE_CHAT))
    await h.feed(sticker(GROUP))
    assert rendered(h) == ["Send me a screenshot (a photo, or an image as a file). /help explains how."]
    assert sent_to(h, GROUP["id"]) == []


# -- updates the bot leaves alone -----------------------------------------------------------------
async def test_edits_channel_posts_senderless_messages_and_unknown_chats_get_deliberate_silence(
        h: Harness, engine: StubEngine, log: pytest.LogCaptureFixture) -> None:
    old = h.photo(jpeg(), caption="nice")["message"]
    channel = {"id": -1009876543210, "type": "channel", "title": "Trailers"}
    post = message_update(h.srv, chat=channel, from_user=ALICE, photo_bytes=jpeg(), caption="/movie Heat")["message"]
    del post["from"]
    no_sender_group = h.photo(jpeg(), chat=GROUP, caption="/movie Heat")
    del no_sender_group["message"]["from"]
    no_sender_private = h.text("/help")
    del no_sender_private["message"]["from"]
    strange_chat = h.photo(jpeg(), chat={"id": 777, "type": "future_chat_kind"}, caption="/movie Heat")
    channel_as_message = h.text("/help", chat=channel)
    updates = [
        edited_message_update(h.srv, old, caption="/movie Heat"),  # an edit of an old screenshot
        {"channel_post": post},
        {"edited_channel_post": post},
        no_sender_group, no_sender_private, strange_chat, channel_as_message,
    ]
    for upd in updates:
        await h.feed(upd)
    assert [c.method for c in h.srv.calls] == []  # not a single request
    assert engine.searches == 0 and no_traceback(log)


# -- callback data: malformed, forged, expired ------------------------------------------------------
async def list_with_more(h: Harness, *, chat: dict = ALICE_CHAT, caption: str | None = None) -> tuple[dict, str]:
    """Alice's answer in `chat`: the list message (with its More button) and the button's data."""
    await h.feed(h.photo(jpeg(), chat=chat, caption=caption))
    call = next(c for c in reversed(h.srv.calls_of("sendMessage"))
                if c.params["chat_id"] == chat["id"] and is_listing(c.params["text"]))
    [data] = [b["callback_data"] for row in call.params["reply_markup"]["inline_keyboard"] for b in row
              if b["callback_data"].startswith("mr:")]  # the rows above it are ▶ clip buttons
    assert MoreResults.unpack(data).offset == 5
    return call.result, data


@pytest.mark.parametrize(
    "data",
    ["", "x" * 65, "zz:1:2", "mr", "mr:", "mr:{page}", "mr:{page}:5:7", "mr:{page}:-5", "mr:{page}:+5",
     "mr:{page}: 5", "mr:{page}:٥", "mr:{page}:⁵", "mr:{page}:5_0", "mr:{page}:" + "9" * 30,
     "mr:{page}:" + "9" * 5000, "mr:no-such-page:5", "mr:{page}!:5", "mr:{page}:501", "mv:zzz", "mv:" + "a" * 64,
     "pk:{page}:1", "cl:{page}", "cl:{page}:0", "cl:{page}:-1", "cl:{page}:٥", "cl:{page}:1_0", "cl:{page}:51",
     "cl:{page}:501", "cl:no-such-page:1", "cl:{page}:1:1", "cl:../../etc/passwd:1"],
)
async def test_malformed_or_unknown_callback_data_is_answered_as_an_expired_button(
        h: Harness, log: pytest.LogCaptureFixture, data: str) -> None:
    message, good = await list_with_more(h)
    page = MoreResults.unpack(good).page
    before = len(h.srv.calls)
    upd = callback_update(h.srv, chat=ALICE_CHAT, from_user=ALICE, message=message, data=data.format(page=page))
    await h.feed(upd)
    assert callback_text(h, upd["callback_query"]["id"]).startswith(EXPIRED)
    assert [c.method for c in h.srv.calls[before:]] == ["answerCallbackQuery"]  # nothing else happened
    assert h.srv.messages[(USER_ID, message["message_id"])].get("reply_markup")  # More still there
    assert no_traceback(log)


async def test_a_forged_page_id_from_another_users_chat_shows_nothing(
        h: Harness, log: pytest.LogCaptureFixture) -> None:
    _, alices = await list_with_more(h)
    await h.feed(h.text("/help", chat=BOB_CHAT, from_user=BOB))
    bobs_message = h.srv.calls_of("sendMessage")[-1].result
    before = len(h.srv.calls)
    for data in (alices, MoreResults(page=MoreResults.unpack(alices).page, offset=0).pack()):
        upd = callback_update(h.srv, chat=BOB_CHAT, from_user=BOB, message=bobs_message, data=data)
        await h.feed(upd)
        assert callback_text(h, upd["callback_query"]["id"]).startswith("These results have expired")
    assert [c.method for c in h.srv.calls[before:]] == ["answerCallbackQuery", "answerCallbackQuery"]
    assert no_traceback(log)
    # Alice's own button still works, in her chat.
    listing = next(c.result for c in h.srv.calls_of("sendMessage") if c.params["chat_id"] == USER_ID
                   and is_listing(c.params["text"]))
    await h.feed(callback_update(h.srv, chat=ALICE_CHAT, from_user=ALICE, message=listing, data=alices))
    assert len(listings(h)) == 2 and sent_to(h, BOB["id"]) == ["sendMessage"]  # Bob: his /help only


async def test_in_a_group_anyone_may_page_but_the_page_never_leaves_the_group(h: Harness) -> None:
    listing, data = await list_with_more(h, chat=GROUP, caption="/movie Heat")
    asked = h.srv.calls_of("sendMediaGroup")[0].params["reply_parameters"]["message_id"]
    # Bob, another member, presses More under Alice's answer: the group sees results 6-10.
    upd = callback_update(h.srv, chat=GROUP, from_user=BOB, message=listing, data=data)
    await h.feed(upd)
    page2 = [c for c in h.srv.calls_of("sendMessage") if c.params["chat_id"] == GROUP["id"]
             and is_listing(c.params["text"])][-1]
    assert "best shots 6–10 of 12" in page2.result["text"]
    assert page2.params["reply_parameters"]["message_id"] == asked  # still threaded to Alice's query
    # The same page id pressed in Bob's private chat finds nothing.
    await h.feed(h.text("/help", chat=BOB_CHAT, from_user=BOB))
    upd = callback_update(h.srv, chat=BOB_CHAT, from_user=BOB, message=h.srv.calls_of("sendMessage")[-1].result,
                          data=MoreResults(page=MoreResults.unpack(data).page, offset=10).pack())
    await h.feed(upd)
    assert callback_text(h, upd["callback_query"]["id"]).startswith("These results have expired")
    assert sent_to(h, BOB["id"]) == ["sendMessage"]


# -- the person picker ---------------------------------------------------------------------------
@pytest.fixture
async def picker(tmp_path: Path):
    engine = StubEngine(tmp_path, people=TWO_PEOPLE)
    async with bot_harness(engine, tmp_path) as h:
        for chat in (USER_ID, BOB["id"]):
            await h.app.storage.set_movie(chat, "heat", "Heat")
        await h.feed(h.photo(jpeg(size=(320, 200))))
        [call] = h.srv.calls_of("sendPhoto")
        assert call.params["caption"].startswith("I see 2 people")
        pick = PersonChoice.unpack(call.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"]).pick
        yield h, engine, call.result, pick


@pytest.mark.parametrize("who", ["²", "١", "۲", "+1", " 1", "1 ", "1_0", "-1", "0", "3", "11", "9" * 40, "9" * 400,
                                 "ALL", "", "１"])
async def test_a_picker_tap_with_a_bad_person_number_is_expired_not_an_error(
        picker, log: pytest.LogCaptureFixture, who: str) -> None:
    h, engine, message, pick = picker
    upd = callback_update(h.srv, chat=ALICE_CHAT, from_user=ALICE, message=message, data=f"pk:{pick}:{who}")
    await h.feed(upd)
    assert callback_text(h, upd["callback_query"]["id"]).startswith(EXPIRED)
    assert engine.searches == 0 and not any(INTERNAL in t for t in h.sent_texts())
    assert no_traceback(log)


async def test_a_forged_pick_id_from_another_chat_is_expired_and_a_real_tap_works(
        picker, log: pytest.LogCaptureFixture) -> None:
    h, engine, message, pick = picker
    # Bob forges Alice's pick in his own chat, as himself and claiming to be her.
    await h.feed(h.text("/help", chat=BOB_CHAT, from_user=BOB))
    bobs = h.srv.calls_of("sendMessage")[-1].result
    for who in (BOB, ALICE):
        upd = callback_update(h.srv, chat=BOB_CHAT, from_user=who, message=bobs, data=f"pk:{pick}:1")
        await h.feed(upd)
        assert callback_text(h, upd["callback_query"]["id"]).startswith("That choice has expired")
    assert engine.searches == 0 and sent_to(h, BOB["id"]) == ["sendMessage"]
    await h.feed(callback_update(h.srv, chat=ALICE_CHAT, from_user=ALICE, message=message, data=f"pk:{pick}:2"))
    assert engine.searches == 1 and len(listings(h)) == 1
    assert no_traceback(log)


def test_callback_numbers_are_ascii_digits_within_bounds() -> None:
    assert ascii_number("7", 0, 500) == 7 and ascii_number(12, 0, 500) == 12
    for bad in ("²", "١", "+1", " 1", "1_0", "-1", "501", "0500", "", True, 1.0, None):
        with pytest.raises(ValueError):
            ascii_number(bad, 0, 500)


# -- floods ------------------------------------------------------------------------------------------
async def wait_all_but(tasks: list[asyncio.Task[Any]], left: int) -> None:
    """Until all but `left` of `tasks` are done (event driven: woken by each completion)."""
    pending = {t for t in tasks if not t.done()}
    while len(pending) > left:
        _, pending = await asyncio.wait(pending, timeout=30, return_when=asyncio.FIRST_COMPLETED)


async def test_a_flood_of_100_screenshots_is_answered_once_and_throttled_once(
        tmp_path: Path, log: pytest.LogCaptureFixture) -> None:
    engine = StubEngine(tmp_path)
    engine.gate = threading.Event()
    # The product's limits: 6 queries and 30 messages a minute per user.
    async with bot_harness(engine, tmp_path, user_rate=6, user_message_rate=30) as h:
        await h.app.storage.set_movie(USER_ID, "heat", "Heat")
        await h.feed(h.text("/help"))  # getMe cached, as in a bot that has been running
        h.srv.clear_calls()
        tasks = [asyncio.create_task(h.feed(h.photo(jpeg()))) for _ in range(100)]
        await wait_all_but(tasks, 1)  # the one query that runs waits at the gate
        engine.gate.set()
        await asyncio.gather(*tasks)
        texts = h.sent_texts()
        assert engine.searches == 1 and len(listings(h)) == 1 and len(h.srv.calls_of("sendMediaGroup")) == 1
        assert sum(t.startswith("You already have a query running") for t in texts) == 1
        throttled = [t for t in texts if t.startswith(("Easy there", "You're sending messages faster"))]
        assert len(throttled) == 1
        assert len(texts) == 4  # the status message, the busy notice, the throttle notice, the answer
        assert h.app.queries.queue.running == 0 and h.app.queries.queue.waiting == 0
        assert no_traceback(log)


async def test_a_flood_of_100_commands_is_answered_up_to_the_limit_and_then_once(
        tmp_path: Path, log: pytest.LogCaptureFixture) -> None:
    async with bot_harness(StubEngine(tmp_path), tmp_path, user_message_rate=30) as h:
        await asyncio.gather(*(h.feed(h.text("/help")) for _ in range(100)))
        texts = h.sent_texts()
        assert sum("castfinder" in t for t in texts) == 30
        assert [t for t in texts if "castfinder" not in t] == [next(t for t in texts if t.startswith("You're sending"))]
        # Another user is not affected.
        await h.feed(h.text("/help", chat=BOB_CHAT, from_user=BOB))
        assert len(h.sent_texts(BOB["id"])) == 1
        assert no_traceback(log)


async def test_an_album_counts_once_against_the_message_limit(tmp_path: Path) -> None:
    async with bot_harness(StubEngine(tmp_path), tmp_path, user_message_rate=1) as h:
        await h.app.storage.set_movie(USER_ID, "heat", "Heat")
        parts = [h.photo(jpeg(), media_group_id="three") for _ in range(3)]

        async def release() -> None:
            await h.timer.wait_scheduled(3)
            h.timer.fire()

        await asyncio.gather(*(h.feed(p) for p in parts), release())
        assert len(listings(h)) == 1 and not any(t.startswith("You're sending") for t in h.sent_texts())


# -- the engine fails ------------------------------------------------------------------------------
async def test_an_engine_failure_is_told_once_logged_with_its_traceback_and_the_user_can_ask_again(
        h: Harness, engine: StubEngine, log: pytest.LogCaptureFixture) -> None:
    engine.fail_next = RuntimeError("faiss exploded: <secret internals>")
    await h.feed(h.photo(jpeg()))
    [told] = [t for t in h.sent_texts() if not t.startswith("⬇️")]
    assert told == "Something went wrong on my side (it has been logged). Please try again."
    failures = [r for r in log.records if r.exc_info]
    assert len(failures) == 1 and "faiss exploded" in log.text  # the traceback is in the log only
    assert not any("faiss" in t or "Traceback" in t for t in h.sent_texts())
    assert h.app.queries.queue.running == 0 and h.app.queries.queue.waiting == 0  # no slot left taken
    # At once, no "you already have a query running".
    await h.feed(h.photo(jpeg()))
    assert len(listings(h)) == 1 and not any("already have a query" in t for t in h.sent_texts())
    assert [r["outcome"] for r in await h.app.storage.recent_queries()] == ["error", "ok"]


# -- the queue ---------------------------------------------------------------------------------------
def test_the_queue_counts_what_it_did_and_tells_a_busy_user_once_per_query() -> None:
    queue = QueryQueue(workers=1, max_waiting=1)
    first = queue.enter(1)
    queue.enter(2)  # waits
    with pytest.raises(QueueFull):
        queue.enter(3)
    busy = []
    for _ in range(3):
        with pytest.raises(UserBusy) as caught:
            queue.enter(1)
        busy.append(caught.value.repeated)
    assert busy == [False, True, True]
    first.release()
    again = queue.enter(1)  # a new query: a new notice if refused
    with pytest.raises(UserBusy) as caught:
        queue.enter(1)
    assert caught.value.repeated is False
    again.release()
    s = queue.stats
    assert (s.admitted, s.waited, s.refused_full, s.refused_busy, s.peak_running, s.peak_waiting) == (3, 2, 1, 4, 1, 1)

