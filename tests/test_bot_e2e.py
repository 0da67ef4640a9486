"""End to end: the bot's real long-polling loop over real HTTP against the fake Bot API server,
with the real engine (real person detector) and a real index of the Titanic clip."""

from __future__ import annotations

import asyncio
import io
import sqlite3
from pathlib import Path

import pytest

from tests.bot_support import ALICE, ALICE_CHAT, BOB, GROUP, USER_ID, GatedEngine, bot_harness, jpeg
from tests.conftest import DATA
from tests.fake_telegram import Call, callback_update, message_update

ROSE = DATA / "titanic" / "body_rose.jpg"
JACK = DATA / "titanic" / "body_jack.jpg"


def is_listing(call: Call, chat_id: int = USER_ID) -> bool:
    return (call.method == "sendMessage" and not call.failed and call.params["chat_id"] == chat_id
            and ("best shots" in call.result["text"] or "closest shots" in call.result["text"]))


def listings(h, chat_id: int = USER_ID) -> list[Call]:
    return [c for c in h.srv.calls if is_listing(c, chat_id)]


async def wait_listing(h, count: int = 1, chat_id: int = USER_ID) -> list[Call]:
    await h.srv.wait_until(lambda calls: sum(is_listing(c, chat_id) for c in calls) >= count, timeout=30)
    return listings(h, chat_id)


async def wait_text(h, needle: str, chat_id: int = USER_ID) -> Call:
    def found(calls: list[Call]) -> bool:
        return any(c.method == "sendMessage" and c.params["chat_id"] == chat_id and needle in c.params["text"]
                   for c in calls)

    await h.srv.wait_until(found, timeout=30)
    return next(c for c in h.srv.calls if c.method == "sendMessage" and needle in c.params["text"])


@pytest.fixture
async def h(tmp_path: Path, titanic_engine):
    async with bot_harness(titanic_engine, tmp_path) as harness:
        yield harness


async def test_private_chat_single_photo(h) -> None:
    async with h.polling():
        h.srv.push_update(h.text("/movie titanic"))
        await wait_text(h, "Movie for this chat: <b>Titanic</b>")
        upd = h.photo(ROSE.read_bytes())
        h.srv.push_update(upd)
        [listing] = await wait_listing(h)
    [album] = h.srv.calls_of("sendMediaGroup")
    assert len(album.params["media"]) == 3  # the clip has three shots
    assert album.params["reply_parameters"]["message_id"] == upd["message"]["message_id"]
    assert listing.params["reply_parameters"]["message_id"] == upd["message"]["message_id"]
    # The album went out before the list that describes it.
    assert h.srv.calls.index(album) < h.srv.calls.index(listing)


async def test_an_album_of_three_is_one_query_with_one_answer(h) -> None:
    await h.app.storage.set_movie(USER_ID, "titanic", "Titanic")
    async with h.polling():
        for path in (ROSE, ROSE, JACK):
            h.srv.push_update(h.photo(path.read_bytes(), media_group_id="13579"))
        await h.timer.wait_scheduled(3)
        h.timer.fire()
        await wait_listing(h)
    assert len(listings(h)) == 1
    assert len(h.srv.calls_of("sendMediaGroup")) == 1
    assert len(h.srv.downloads) == 3


async def test_group_with_privacy_mode_answers_captioned_commands_only(h) -> None:
    async with h.polling():
        h.srv.push_update(h.photo(ROSE.read_bytes(), chat=GROUP))  # a plain photo: not for the bot
        upd = h.photo(ROSE.read_bytes(), chat=GROUP, from_user=BOB, caption="/movie@castfinder_test_bot Titanic")
        h.srv.push_update(upd)
        [listing] = await wait_listing(h, chat_id=GROUP["id"])
    assert listing.params["reply_parameters"]["message_id"] == upd["message"]["message_id"]
    assert len(h.srv.downloads) == 1  # only the addressed photo was fetched
    assert all(c.params.get("chat_id") == GROUP["id"] for c in h.srv.calls if "chat_id" in c.params)


async def test_group_reply_to_the_bot_and_mention_are_queries(h) -> None:
    await h.app.storage.set_movie(GROUP["id"], "titanic", "Titanic")
    async with h.polling():
        h.srv.push_update(h.text("/movie", chat=GROUP))
        bot_message = (await wait_text(h, "The movie for this chat", GROUP["id"])).result
        h.srv.push_update(h.photo(ROSE.read_bytes(), chat=GROUP, reply_to=bot_message))
        await wait_listing(h, 1, GROUP["id"])
        h.srv.push_update(h.photo(ROSE.read_bytes(), chat=GROUP, caption="@castfinder_test_bot titanic"))
        await wait_listing(h, 2, GROUP["id"])


async def test_topk_bounds(h) -> None:
    async with h.polling():
        for arg in ("0", "21", "abc", "20"):
            h.srv.push_update(h.text(f"/topk {arg}"))
        await wait_text(h, "OK: 20 results per query")
        h.srv.push_update(h.text("/topk"))
        await wait_text(h, "I show 20 results per query")
    assert sum("is not a number from 1 to 20" in t for t in h.sent_texts()) == 3


async def test_unknown_movie(h) -> None:
    async with h.polling():
        h.srv.push_update(h.text("/movie Heat"))
        await wait_text(h, "No indexed movie")
        h.srv.push_update(h.photo(ROSE.read_bytes(), caption="/movie Heat"))
        await h.srv.wait_until(lambda calls: sum("No indexed movie" in c.params.get("text", "") for c in calls) == 2)
    assert h.srv.downloads == []


async def test_no_movie_selected_identifies_the_screenshot(h) -> None:
    import av

    with av.open(str(DATA / "titanic" / "titanic_20s.mp4")) as container:
        frame = next(f for f in container.decode(video=0) if f.time is not None and f.time >= 12.0).to_image()
    data = io.BytesIO()
    frame.save(data, "JPEG", quality=70)
    async with h.polling():
        h.srv.push_update(h.photo(data.getvalue()))
        await h.srv.wait_until(lambda calls: any(c.method == "sendPhoto" for c in calls), timeout=60)
    [answer] = h.srv.calls_of("sendPhoto")
    assert answer.result["caption"].startswith("🎬 Looks like Titanic, shot 3 at 00:00:1")


async def test_non_image_document(h) -> None:
    await h.app.storage.set_movie(USER_ID, "titanic", "Titanic")
    async with h.polling():
        h.srv.push_update(message_update(h.srv, chat=ALICE_CHAT, from_user=ALICE, document_bytes=b"hello",
                                         document_name="notes.txt", mime_type="text/plain"))
        await wait_text(h, "is not an image")


async def test_several_people_picker(h) -> None:
    await h.app.storage.set_movie(USER_ID, "titanic", "Titanic")
    async with h.polling():
        h.srv.push_update(h.photo(JACK.read_bytes()))
        [picker] = await h.srv.wait_for("sendPhoto", timeout=30)
        assert picker.files  # the screenshot annotated with numbered boxes
        data = picker.params["reply_markup"]["inline_keyboard"][-1][0]["callback_data"]  # "All"
        h.srv.push_update(callback_update(h.srv, chat=ALICE_CHAT, from_user=ALICE, message=picker.result, data=data))
        await wait_listing(h)
    answered = [a for a in h.srv.callback_answers.values() if a]
    assert answered and answered[0]["text"] == "Searching for everyone…"


async def test_more_pages_through_stored_results(h) -> None:
    await h.app.storage.set_movie(USER_ID, "titanic", "Titanic")
    await h.app.storage.set_topk(USER_ID, 1)
    async with h.polling():
        h.srv.push_update(h.photo(ROSE.read_bytes()))
        [first] = await wait_listing(h)
        [clips, yes, no, [button]] = first.params["reply_markup"]["inline_keyboard"]
        assert [clips[0]["text"], yes[0]["text"], no[0]["text"]] == ["▶ 1", "✓1", "✗1"]  # clip and feedback, then More
        assert button["text"] == "More (2 left)"
        assert len(button["callback_data"]) <= 64
        h.srv.push_update(callback_update(h.srv, chat=ALICE_CHAT, from_user=ALICE, message=first.result,
                                          data=button["callback_data"]))
        [_, second] = await wait_listing(h, 2)
        # A second tap on the same button sends nothing more.
        h.srv.push_update(callback_update(h.srv, chat=ALICE_CHAT, from_user=ALICE, message=first.result,
                                          data=button["callback_data"]))
        await h.srv.wait_until(lambda calls: sum(c.method == "answerCallbackQuery" for c in calls) == 2)
        [_, _, _, [button2]] = second.params["reply_markup"]["inline_keyboard"]
        assert button2["text"] == "More (1 left)"
        h.srv.push_update(callback_update(h.srv, chat=ALICE_CHAT, from_user=ALICE, message=second.result,
                                          data=button2["callback_data"]))
        [_, _, third] = await wait_listing(h, 3)
    assert [b["text"] for row in third.params["reply_markup"]["inline_keyboard"] for b in row] == ["▶ 3", "✓3", "✗3"]
    ranks = [c.result["text"].split("\n")[1].split(" · ")[0] for c in listings(h)]
    assert ranks == ["#1", "#2", "#3"]
    # One thumbnail per page, sent as single photos (an album needs two), and the first page's timeline.
    photos = h.srv.calls_of("sendPhoto")
    assert len(photos) == 4 and h.srv.calls_of("sendMediaGroup") == []
    assert [name for c in photos for name in c.filenames.values()].count("timeline.png") == 1
    # The first list lost its "More" when it was used, and kept its ▶ and ✓/✗.
    kept = h.srv.messages[(USER_ID, first.result["message_id"])]["reply_markup"]["inline_keyboard"]
    assert [b["text"] for row in kept for b in row] == ["▶ 1", "✓1", "✗1"]


async def test_rate_limit(tmp_path: Path, titanic_engine) -> None:
    async with bot_harness(titanic_engine, tmp_path, user_rate=2) as h:
        await h.app.storage.set_movie(USER_ID, "titanic", "Titanic")
        async with h.polling():
            for answered in (1, 2):
                h.srv.push_update(h.photo(jpeg("navy")))
                await wait_listing(h, answered)
            h.srv.push_update(h.photo(jpeg("navy")))
            await wait_text(h, "at most 2 queries per minute")
        assert len(listings(h)) == 2
        assert len(h.srv.downloads) == 2  # the refused query cost nothing


async def test_429_during_send_media_group_is_waited_out_and_retried(h) -> None:
    await h.app.storage.set_movie(USER_ID, "titanic", "Titanic")
    h.srv.fail_next("sendMediaGroup", retry_after=1)
    async with h.polling():
        h.srv.push_update(h.photo(ROSE.read_bytes()))
        await wait_listing(h)
    refused, sent = h.srv.calls_of("sendMediaGroup")
    assert refused.status == 429 and not sent.failed
    assert len([m for m in h.srv.bot_messages(USER_ID) if m.get("media_group_id")]) == 3  # delivered once


async def test_shutdown_lets_a_running_query_finish_before_the_session_closes(tmp_path: Path, titanic_engine) -> None:
    gated = GatedEngine(titanic_engine)
    async with bot_harness(gated, tmp_path, shutdown_grace_s=30) as h:
        await h.app.storage.set_movie(USER_ID, "titanic", "Titanic")
        shutting_down = asyncio.Event()
        shutdown = h.app.queries.shutdown

        async def spy(grace_s: float) -> None:
            shutting_down.set()
            await shutdown(grace_s)

        h.app.queries.shutdown = spy  # type: ignore[method-assign]
        async with h.polling():
            h.srv.push_update(h.photo(ROSE.read_bytes()))
            await gated.wait_started()
            stopping = asyncio.create_task(h.app.dispatcher.stop_polling())
            await asyncio.wait_for(shutting_down.wait(), 10)
            assert not listings(h) and not stopping.done()  # polling is over, the query is not
            gated.gate.set()
            await stopping
        # Answered over the still-open session; only then did the services close.
        assert listings(h)
        assert h.app.closed


async def test_shutdown_cancels_queries_past_the_grace_period_and_says_so(tmp_path: Path, titanic_engine) -> None:
    gated = GatedEngine(titanic_engine)
    async with bot_harness(gated, tmp_path, shutdown_grace_s=0) as h:
        await h.app.storage.set_movie(USER_ID, "titanic", "Titanic")
        try:
            async with h.polling():
                h.srv.push_update(h.photo(ROSE.read_bytes()))
                await gated.wait_started()
                await h.app.dispatcher.stop_polling()
        finally:
            gated.gate.set()  # let the engine thread go
        assert not listings(h)
        [status] = [m for m in h.srv.bot_messages(USER_ID) if m.get("text", "").startswith("⛔ Stopped")]
        assert status["reply_to_message"]["message_id"] > 0
        with sqlite3.connect(tmp_path / "bot.sqlite3") as db:
            assert [r[0] for r in db.execute("SELECT outcome FROM query_log")] == ["cancelled"]
