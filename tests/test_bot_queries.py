"""Screenshot queries through `Dispatcher.feed_update`, against the real engine and a real index
of the Titanic clip (`titanic_engine`: skipped without ../shared)."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

import pytest

from bot.keyboards import PersonChoice
from core import format_ts
from tests.bot_support import ALICE, ALICE_CHAT, BOB, GROUP, USER_ID, GatedEngine, bot_harness, jpeg
from tests.conftest import DATA
from tests.fake_telegram import callback_update, message_update, private_chat, user

ROSE = DATA / "titanic" / "body_rose.jpg"  # one person
JACK = DATA / "titanic" / "body_jack.jpg"  # two people
CAPTION = re.compile(r"^#(\d+) · shot (\d+) · (\d\d:\d\d:\d\d\.\d)–(\d\d:\d\d:\d\d\.\d) · (\d+)%( · ⚠️ weak match)?$")


@pytest.fixture
async def h(tmp_path: Path, titanic_engine):
    async with bot_harness(titanic_engine, tmp_path) as harness:
        await harness.app.storage.set_movie(USER_ID, "titanic", "Titanic")
        yield harness


async def log_rows(h) -> list[dict]:
    return await h.app.storage.recent_queries()


def expected_captions(engine, path: Path, top: int) -> list[str]:
    response = engine.search("Titanic", [path], top=top)
    return [
        f"#{r.rank} · shot {r.shot} · {format_ts(r.start_s, decimals=1)}–{format_ts(r.end_s, decimals=1)} · "
        f"{max(0, min(100, round(r.confidence * 100)))}%" + (" · ⚠️ weak match" if r.low_confidence else "")
        for r in response.results
    ]


async def test_one_photo_gets_the_engines_ranking_as_an_album_and_a_list(h, titanic_engine) -> None:
    upd = h.photo(ROSE.read_bytes())
    asked = upd["message"]["message_id"]
    await h.feed(upd)
    expected = expected_captions(titanic_engine, ROSE, 5)
    assert expected  # the Titanic index has 3 shots
    [album] = h.srv.calls_of("sendMediaGroup")
    assert [m["caption"] for m in album.params["media"]] == expected
    assert all(CAPTION.match(c) for c in expected)
    assert album.params["reply_parameters"]["message_id"] == asked
    assert len(album.files) == len(expected)  # thumbnails uploaded
    listing = h.srv.calls_of("sendMessage")[-1]
    text = listing.result["text"]  # as Telegram renders it (HTML parsed)
    for line in expected:
        assert line in text
    # Weak results (the tiny random embedder gives some) are marked, never presented as sure.
    weak = ["weak match" in c for c in expected]
    assert text.startswith("No confident match in Titanic" if all(weak) else "Titanic: best shots 1–3 of 3:")
    assert ("Weak matches are under the confidence threshold" in text) == any(weak)
    # Three results, five per page: no "More"; a ▶ clip button for each, then ✓ and ✗ per result.
    keyboard = [b["text"] for row in listing.params["reply_markup"]["inline_keyboard"] for b in row]
    assert keyboard == ["▶ 1", "▶ 2", "▶ 3", "✓1", "✓2", "✓3", "✗1", "✗2", "✗3"]
    assert listing.params["reply_parameters"]["message_id"] == asked
    # The status message came and went; the chat showed "sending a photo".
    [status] = [c for c in h.srv.calls_of("sendMessage") if c.params["text"].startswith("⬇️")]
    assert (USER_ID, status.result["message_id"]) in h.srv.deleted_messages
    assert any(c.params["action"] == "upload_photo" for c in h.srv.calls_of("sendChatAction"))
    [row] = await log_rows(h)
    assert row["outcome"] == "ok" and row["results"] == len(expected) and row["movie_slug"] == "titanic"
    assert row["latency_ms"] > 0 and 0 < row["engine_ms"] <= row["latency_ms"]


async def test_a_screenshot_without_people_is_searched_whole_and_the_user_is_told(h) -> None:
    await h.feed(h.photo(jpeg("navy")))
    text = h.srv.calls_of("sendMessage")[-1].result["text"]
    assert "found no person in the screenshot, so I searched with the whole image" in text
    assert h.srv.calls_of("sendMediaGroup")


async def test_an_undecodable_image_file_is_explained(h) -> None:
    upd = message_update(h.srv, chat=ALICE_CHAT, from_user=ALICE, document_bytes=b"\x89PNG\r\n\x1a\n broken",
                         document_name="shot.png", mime_type="image/png")
    await h.feed(upd)
    assert h.srv.downloads  # it was fetched, then refused by the decoder
    text = h.sent_texts()[-1]
    assert text.startswith("That screenshot can't be used:")
    assert h.srv.calls_of("sendMediaGroup") == []
    assert (await log_rows(h))[0]["outcome"] == "bad_image"


async def test_no_movie_selected_asks_which_movie_this_is(h) -> None:
    # With no movie named or set the screenshot is matched against every movie (tests/test_identify.py).
    await h.feed(h.photo(ROSE.read_bytes(), chat=private_chat(BOB["id"]), from_user=BOB))
    answers = [c.params.get("caption") or c.params.get("text") for c in h.srv.calls
               if c.method in ("sendPhoto", "sendMessage")]
    assert any("Looks like Titanic" in a or "not from any movie I have indexed" in a for a in answers if a)
    assert h.srv.calls_of("sendMediaGroup") == []


async def test_a_caption_names_the_movie_for_that_query(h) -> None:
    bob_chat = private_chat(BOB["id"])
    await h.feed(h.photo(ROSE.read_bytes(), chat=bob_chat, from_user=BOB, caption="titanic"))
    assert "Titanic" in h.srv.calls_of("sendMessage")[-1].result["text"]
    assert (await h.app.storage.chat(BOB["id"])).movie_slug is None  # only for that query
    await h.feed(h.photo(ROSE.read_bytes(), chat=bob_chat, from_user=BOB, caption="/movie Heat"))
    assert h.sent_texts()[-1] == "No indexed movie matches “Heat”. Closest: Titanic. See /movies."


async def test_free_text_that_is_no_movie_falls_back_to_the_chat_movie(h) -> None:
    await h.feed(h.photo(ROSE.read_bytes(), caption="who is she?"))
    text = h.srv.calls_of("sendMessage")[-1].result["text"]
    assert "(“who is she?” is not an indexed movie; searched Titanic, this chat's movie.)" in text


async def test_several_people_get_a_numbered_picker_and_the_choice_is_searched(h, titanic_engine) -> None:
    upd = h.photo(JACK.read_bytes())
    asked = upd["message"]["message_id"]
    await h.feed(upd)
    [picker] = h.srv.calls_of("sendPhoto")
    assert picker.params["caption"].startswith("I see 2 people")
    assert picker.params["reply_parameters"]["message_id"] == asked
    labels = [b["text"] for row in picker.params["reply_markup"]["inline_keyboard"] for b in row]
    assert labels == ["1", "2", "All"]
    assert h.srv.calls_of("sendMediaGroup") == []  # nothing searched yet
    data = picker.params["reply_markup"]["inline_keyboard"][0][1]["callback_data"]
    assert PersonChoice.unpack(data).who == "2"

    # Someone else's tap does nothing but say so.
    await h.feed(callback_update(h.srv, chat=ALICE_CHAT, from_user=BOB, message=picker.result, data=data))
    assert "Only the person who sent" in [a for a in h.srv.callback_answers.values() if a][-1]["text"]
    assert h.srv.calls_of("sendMediaGroup") == []

    await h.feed(callback_update(h.srv, chat=ALICE_CHAT, from_user=ALICE, message=picker.result, data=data))
    [album] = h.srv.calls_of("sendMediaGroup")
    assert album.params["reply_parameters"]["message_id"] == asked
    people = titanic_engine.find_people(JACK)
    from core import QueryImage

    expected = titanic_engine.search("Titanic", [QueryImage(JACK, select=(2,), people=people)], top=5)
    assert [m["caption"].split(" · ")[1] for m in album.params["media"]] == [f"shot {r.shot}" for r in expected.results]
    assert [r["outcome"] for r in await log_rows(h)] == ["picker", "ok"]


async def test_an_album_is_one_query_and_one_answer(h) -> None:
    parts = [h.photo(p.read_bytes(), media_group_id="album-1") for p in (ROSE, ROSE, JACK)]
    parts[0]["message"]["caption"] = "titanic"

    async def release_when_collected() -> None:
        await h.timer.wait_scheduled(3)  # the third part has arrived and re-armed the window
        h.timer.fire()

    await asyncio.gather(*(h.feed(p) for p in parts), release_when_collected())
    assert len(h.srv.calls_of("sendMediaGroup")) == 1
    listings = [c for c in h.srv.calls_of("sendMessage") if "best shots" in c.result["text"]
                or "closest shots" in c.result["text"]]
    assert len(listings) == 1
    # No picker for albums (each image's main person): the one photo is the answer's timeline.
    assert [name for c in h.srv.calls_of("sendPhoto") for name in c.filenames.values()] == ["timeline.png"]
    assert len(h.srv.calls_of("getFile")) == 3
    [row] = await log_rows(h)
    assert row["images"] == 3 and row["outcome"] == "ok"


async def test_busy_queue_tells_users_their_place_and_refuses_when_full(tmp_path: Path, titanic_engine) -> None:
    gated = GatedEngine(titanic_engine)
    async with bot_harness(gated, tmp_path, query_workers=1, queue_size=1) as h:
        carol = user(1003, "Carol")
        for who in (ALICE, BOB, carol):
            await h.app.storage.set_movie(who["id"], "titanic", "Titanic")
        first = asyncio.create_task(h.feed(h.photo(ROSE.read_bytes())))
        await gated.wait_started(1)
        second = asyncio.create_task(
            h.feed(h.photo(ROSE.read_bytes(), chat=private_chat(BOB["id"]), from_user=BOB)))
        await h.srv.wait_until(lambda calls: any(
            c.method == "sendMessage" and c.params["chat_id"] == BOB["id"] and "#1 in line" in c.params["text"]
            for c in calls))
        await h.feed(h.photo(ROSE.read_bytes(), chat=private_chat(carol["id"]), from_user=carol))
        assert "my queue is full" in h.sent_texts(carol["id"])[-1]
        await h.feed(h.photo(ROSE.read_bytes()))  # Alice again, while her first query runs
        assert h.sent_texts(USER_ID)[-1].startswith("You already have a query running")
        # While the engine works, the status message says so.
        assert any("Searching Titanic" in t for t in h.sent_texts(USER_ID) + [
            c.params["text"] for c in h.srv.calls_of("editMessageText") if c.params["chat_id"] == USER_ID])
        gated.gate.set()
        await asyncio.gather(first, second)
        for chat_id in (USER_ID, BOB["id"]):
            assert [c for c in h.srv.calls_of("sendMediaGroup") if c.params["chat_id"] == chat_id]
        outcomes = sorted(r["outcome"] for r in await log_rows(h))
        assert outcomes == ["ok", "ok", "queue_full", "user_busy"]


async def test_rate_limit_refuses_extra_queries_and_warns_once(tmp_path: Path, titanic_engine) -> None:
    async with bot_harness(titanic_engine, tmp_path, user_rate=1) as h:
        await h.app.storage.set_movie(USER_ID, "titanic", "Titanic")
        for _ in range(3):
            await h.feed(h.photo(jpeg("navy")))
        warnings = [t for t in h.sent_texts() if t.startswith("Easy there")]
        assert len(warnings) == 1 and "at most 1 queries per minute" in warnings[0]
        assert len(h.srv.calls_of("sendMediaGroup")) == 1
        assert [r["outcome"] for r in await log_rows(h)] == ["ok", "rate_limited", "rate_limited"]
        # Other users are not affected.
        await h.app.storage.set_movie(BOB["id"], "titanic", "Titanic")
        await h.feed(h.photo(jpeg("navy"), chat=private_chat(BOB["id"]), from_user=BOB))
        assert len(h.srv.calls_of("sendMediaGroup")) == 2


async def test_a_user_who_blocked_the_bot_is_logged_and_skipped(h, caplog: pytest.LogCaptureFixture) -> None:
    h.srv.block_chat(USER_ID)
    with caplog.at_level(logging.INFO):
        await h.feed(h.photo(ROSE.read_bytes()))
        await h.feed(h.text("/help"))
    assert h.srv.calls and all(c.failed and c.status == 403 for c in h.srv.calls)
    assert h.srv.calls_of("getFile") == []  # refused at the first message: no download, no search
    assert "closed to the bot" in caplog.text
    assert [r["outcome"] for r in await log_rows(h)] == ["blocked"]
    # The bot still serves everyone else.
    await h.feed(h.text("/help", chat=GROUP))
    assert h.srv.calls_of("sendMessage")[-1].result is not None
