"""Handler tests: updates go through `Dispatcher.feed_update`; the bot's requests go over HTTP to
the fake Bot API server, where they are inspected."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.keyboards import MovieChoice
from tests.bot_support import (
    ALICE,
    ALICE_CHAT,
    BOB,
    GROUP,
    USER_ID,
    CatalogEngine,
    bot_harness,
    movie_info,
)
from tests.fake_telegram import callback_update, private_chat

CATALOG = [
    movie_info("Heat", "heat", duration_s=10240, shots=2100),
    movie_info("The Godfather", "the-godfather", duration_s=10500, shots=1900),
    movie_info("The Godfather Part II", "the-godfather-part-ii", duration_s=12120, shots=2300),
    movie_info("Titanic", "titanic", duration_s=11640, shots=2500),
]


@pytest.fixture
async def h(tmp_path: Path):
    async with bot_harness(CatalogEngine(CATALOG, tmp_path), tmp_path, admin_ids=frozenset({USER_ID})) as harness:
        yield harness


def buttons(call) -> list[tuple[str, str]]:
    rows = (call.params.get("reply_markup") or {}).get("inline_keyboard", [])
    return [(b["text"], b.get("callback_data", "")) for row in rows for b in row]


async def test_start_and_help_explain_how_to_use_the_bot(h) -> None:
    await h.feed(h.text("/start"))
    await h.feed(h.text("/help"))
    start, help_ = h.sent_texts()
    assert start == help_
    for expected in ("/movies", "/movie Titanic", "screenshot", "/topk", "#1 · shot 12 · 00:03:21.4–00:03:27.9 · 83%",
                     "/movie@castfinder_test_bot"):
        assert expected in start


async def test_movies_lists_name_duration_and_shots_as_a_keyboard(h) -> None:
    await h.feed(h.text("/movies"))
    [call] = h.srv.calls_of("sendMessage")
    assert "Heat — 2:50:40, 2100 shots" in call.params["text"]
    assert [text for text, _ in buttons(call)] == [m.name for m in CATALOG]
    # Callback data carries a short id, never the movie's name.
    assert all(data.startswith("mv:") and len(data) <= 64 and "Godfather" not in data for _, data in buttons(call))


async def test_picking_a_movie_from_the_keyboard_sets_the_chat_movie(h) -> None:
    await h.feed(h.text("/movies"))
    [listing] = h.srv.calls_of("sendMessage")
    data = dict(buttons(listing))["Titanic"]
    message = listing.result
    await h.feed(callback_update(h.srv, chat=ALICE_CHAT, from_user=ALICE, message=message, data=data))
    assert (await h.app.storage.chat(USER_ID)).movie_slug == "titanic"
    [edit] = h.srv.calls_of("editMessageText")
    assert "Movie for this chat: <b>Titanic</b>" in edit.params["text"]
    answers = [a for a in h.srv.callback_answers.values() if a]
    assert answers and answers[0]["text"] == "Titanic selected"


@pytest.mark.parametrize("query", ["titanic", "TITANIC", "  titanic  ", "tita"])
async def test_movie_resolves_case_insensitively_and_by_prefix(h, query: str) -> None:
    await h.feed(h.text(f"/movie {query}"))
    assert (await h.app.storage.chat(USER_ID)).movie_slug == "titanic"
    assert "Movie for this chat: <b>Titanic</b>" in h.srv.calls_of("sendMessage")[-1].params["text"]


async def test_movie_alone_shows_the_current_movie(h) -> None:
    await h.feed(h.text("/movie"))
    await h.feed(h.text("/movie heat"))
    await h.feed(h.text("/movie"))
    before, _, after = h.sent_texts()
    assert "No movie is selected" in before
    assert "The movie for this chat is <b>Heat</b>" in after


async def test_several_candidates_give_a_keyboard_to_choose(h) -> None:
    await h.feed(h.text("/movie the godfather p"))  # a prefix of one movie: resolved
    assert (await h.app.storage.chat(USER_ID)).movie_slug == "the-godfather-part-ii"
    await h.feed(h.text("/movie the god"))  # a prefix of two: ask
    call = h.srv.calls_of("sendMessage")[-1]
    assert "Several movies match" in call.params["text"]
    assert [t for t, _ in buttons(call)] == ["The Godfather", "The Godfather Part II"]
    # The choice is still the previous one until a button is tapped.
    assert (await h.app.storage.chat(USER_ID)).movie_slug == "the-godfather-part-ii"
    key = MovieChoice.unpack(dict(buttons(call))["The Godfather"]).key
    await h.feed(callback_update(h.srv, chat=ALICE_CHAT, from_user=ALICE, message=call.result,
                                 data=MovieChoice(key=key).pack()))
    assert (await h.app.storage.chat(USER_ID)).movie_slug == "the-godfather"


async def test_a_typo_offers_the_closest_movies_and_nothing_close_lists_some(h) -> None:
    await h.feed(h.text("/movie Titanik"))
    call = h.srv.calls_of("sendMessage")[-1]
    assert "Did you mean" in call.params["text"]
    assert [t for t, _ in buttons(call)][0] == "Titanic"
    await h.feed(h.text("/movie Zzyzx Road"))
    call = h.srv.calls_of("sendMessage")[-1]
    assert "No indexed movie matches “Zzyzx Road”. Closest:" in call.params["text"]
    assert "Heat" in call.params["text"] and not buttons(call)
    assert (await h.app.storage.chat(USER_ID)).movie_slug is None


@pytest.mark.parametrize("arg", ["0", "21", "-3", "five", "3.5", "1e3"])
async def test_topk_refuses_anything_but_1_to_20(h, arg: str) -> None:
    await h.feed(h.text(f"/topk {arg}"))
    assert "is not a number from 1 to 20" in h.sent_texts()[-1]
    assert (await h.app.storage.chat(USER_ID)).topk == 5


async def test_topk_is_stored_per_chat(h) -> None:
    await h.feed(h.text("/topk 20"))
    await h.feed(h.text("/topk 1", chat=GROUP))
    await h.feed(h.text("/topk"))
    assert h.sent_texts()[-1].startswith("I show 20 results per query")
    assert (await h.app.storage.chat(GROUP["id"])).topk == 1
    assert (await h.app.storage.chat(USER_ID)).topk == 20
    # In a group, the answer threads to the asker's message.
    group_reply = [c for c in h.srv.calls_of("sendMessage") if c.params["chat_id"] == GROUP["id"]][0]
    assert group_reply.params["reply_parameters"]["message_id"] > 0


async def test_commands_addressed_to_another_bot_are_ignored(h) -> None:
    await h.feed(h.text("/movie@other_bot Heat", chat=GROUP))
    await h.feed(h.text("/topk@other_bot 3"))
    assert h.srv.calls == []
    await h.feed(h.text("/movie@castfinder_test_bot Heat", chat=GROUP))
    assert (await h.app.storage.chat(GROUP["id"])).movie_slug == "heat"


async def test_stats_is_for_admins_only(h) -> None:
    await h.feed(h.text("/stats", chat=private_chat(BOB["id"]), from_user=BOB))
    assert h.sent_texts() == ["This command is for the bot's admins."]
    await h.feed(h.text("/stats"))
    text = h.sent_texts()[-1]
    assert "Queries: 0" in text and "4 movies indexed" in text


async def test_plain_text_in_private_gets_a_hint_and_in_groups_nothing(h) -> None:
    await h.feed(h.text("hello?"))
    await h.feed(h.text("hello?", chat=GROUP))
    assert len(h.sent_texts()) == 1
    assert "/movie name" in h.sent_texts()[0]


async def test_a_non_image_document_is_refused_without_downloading(h) -> None:
    await h.feed(h.text("/movie heat"))
    await h.feed({"message": {**_doc_message(h, b"%PDF-1.4 ...", "script.pdf", "application/pdf")}})
    assert "“script.pdf” is not an image" in h.sent_texts()[-1]
    assert h.srv.calls_of("getFile") == [] and h.srv.downloads == []


async def test_a_file_over_20_mb_is_refused_without_downloading(h) -> None:
    await h.feed(h.text("/movie heat"))
    from tests.fake_telegram import message_update

    upd = message_update(h.srv, chat=ALICE_CHAT, from_user=ALICE, document_bytes=b"\xff\xd8 not really",
                         document_name="huge.png", mime_type="image/png")
    upd["message"]["document"]["file_size"] = 25 * 1024 * 1024
    await h.feed(upd)
    assert "That file is 25.0 MB; bots can download files up to 20 MB" in h.sent_texts()[-1]
    assert h.srv.calls_of("getFile") == []
    [row] = await _log_rows(h)
    assert row["outcome"] == "too_big"


async def test_a_plain_photo_in_a_group_is_not_for_the_bot(h) -> None:
    await h.feed(h.photo(b"\xff\xd8 whatever", chat=GROUP))
    await h.feed(h.photo(b"\xff\xd8 whatever", chat=GROUP, caption="look at this"))
    await h.feed(h.photo(b"\xff\xd8 whatever", chat=GROUP, caption="/movie@other_bot Heat"))
    assert h.srv.calls == []


def _doc_message(h, data: bytes, name: str, mime: str) -> dict:
    from tests.fake_telegram import message_update

    return message_update(h.srv, chat=ALICE_CHAT, from_user=ALICE, document_bytes=data, document_name=name,
                          mime_type=mime)["message"]


async def _log_rows(h) -> list[dict]:
    return await h.app.storage.recent_queries()


async def test_media_the_bot_cannot_use_gets_a_hint_unless_meant_for_another_bot(h) -> None:
    from tests.fake_telegram import message_update

    sticker = message_update(h.srv, chat=ALICE_CHAT, from_user=ALICE)
    sticker["message"]["sticker"] = {"file_id": "s1", "file_unique_id": "u1", "type": "regular", "width": 512,
                                     "height": 512, "is_animated": False, "is_video": False}
    await h.feed(sticker)
    assert h.sent_texts() == ["Send me a screenshot (a photo, or an image as a file). /help explains how."]
    await h.feed(h.photo(b"\xff\xd8 whatever", caption="/movie@other_bot Heat"))
    assert len(h.srv.calls) == 1
