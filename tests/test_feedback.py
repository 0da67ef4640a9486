"""Feedback that changes the answer: "not them" removes a shot and pushes its person's look-alikes
down, "that's them" adds the person's track to the query; the engine, the CLI and the bot."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot.keyboards import FeedbackButton, results_keyboard
from bot.services.feedback import pack, unpack
from bot.services.storage import SCHEMA_VERSION, Storage, migrate, schema_version
from castfinder.cli import main
from core import BadInputError, Engine, Feedback, Mark, Settings
from tests.bot_support import ALICE, ALICE_CHAT, BOB, USER_ID, bot_harness
from tests.fake_telegram import callback_update, private_chat
from tests.media import make_video

# Shots as BGR colours: the tiny DINOv2 sees the query (RGB (200, 50, 30)) nearest the orange of
# "Bea" (shots 1 and 5), then the crimson of "Ann" (shot 3), and the rest far away.
BEA, ANN = (30, 115, 200), (115, 30, 200)
SEGMENTS = [(BEA, 30), ((200, 30, 30), 30), (ANN, 30), ((200, 200, 30), 30), (BEA, 30), ((120, 120, 120), 30)]
QUERY_RGB = (200, 50, 30)


def settings_for(index_dir: Path, dinov2: Path) -> Settings:
    return Settings(_env_file=None, index_dir=index_dir, detector="yolov8n.yaml", dinov2_model=str(dinov2),
                    device="cpu", det_imgsz=160, det_conf=0.0001, min_person_px=4, sample_fps=2,
                    channels=["dinov2"])


@pytest.fixture(scope="module")
def film(tmp_path_factory: pytest.TempPathFactory, tiny_dinov2: Path) -> tuple[Engine, Path]:
    """An engine with the six-shot film indexed as "Twins", and the query screenshot."""
    root = tmp_path_factory.mktemp("feedback")
    engine = Engine(settings_for(root / "indexes", tiny_dinov2))
    engine.index(make_video(root / "twins.mp4", SEGMENTS), "Twins")
    query = root / "query.png"
    Image.fromarray(np.full((96, 64, 3), QUERY_RGB, np.uint8)).save(query)
    return engine, query


def shots(response) -> list[int]:
    return [r.shot for r in response.results]


def test_the_film_is_what_the_feedback_tests_assume(film) -> None:
    engine, query = film
    ranking = shots(engine.search("Twins", [query], top=6))
    assert engine.movies()[0].shots == 6
    # Bea's two shots first, Ann's after them: the wrong person on top.
    assert set(ranking[:2]) == {1, 5} and ranking[2] == 3


def test_not_them_removes_the_shot_and_pushes_the_look_alike_down(film) -> None:
    engine, query = film
    before = engine.search("Twins", [query], top=6)
    top = before.results[0]
    after = engine.search("Twins", [query], top=6, feedback=Feedback(negatives=(Mark(top.shot_id, top.crop),)))
    ranking = shots(after)
    assert top.shot not in ranking
    other_bea = ({1, 5} - {top.shot}).pop()
    # Ann (shot 3) was under Bea's other shot; now above it.
    assert shots(before).index(other_bea) < shots(before).index(3)
    assert ranking[0] == 3 and ranking.index(other_bea) > ranking.index(3)
    assert len(ranking) == len(before.results) - 1


def test_that_s_them_adds_the_track_and_a_low_shot_rises(film) -> None:
    engine, query = film
    before = engine.search("Twins", [query], top=6)
    low = before.results[-1]
    after = engine.search("Twins", [query], top=6, feedback=Feedback(positives=(Mark(low.shot_id, low.crop),)))
    assert shots(after)[0] == low.shot and after.results[0].confidence > low.confidence
    # Nothing left the results: "that's them" adds, it does not remove.
    assert sorted(shots(after)) == sorted(shots(before))


def test_refine_from_the_stored_vectors_is_the_search_with_feedback(film) -> None:
    engine, query = film
    before = engine.search("Twins", [query], top=6)
    feedback = Feedback(positives=(Mark(before.results[-1].shot_id, before.results[-1].crop),),
                        negatives=(Mark(before.results[0].shot_id, before.results[0].crop),))
    # Through float16, as the bot stores them.
    stored = {name: v.astype(np.float16).astype(np.float32) for name, v in before.query_vectors.items()}
    refined = engine.refine("Twins", stored, feedback, top=6)
    direct = engine.search("Twins", [query], top=6, feedback=feedback)
    assert shots(refined) == shots(direct)


def test_marks_that_do_not_fit_the_index_are_refused(film) -> None:
    engine, query = film
    before = engine.search("Twins", [query], top=6)
    with pytest.raises(BadInputError, match="no shot 99"):
        engine.search("Twins", [query], feedback=Feedback(negatives=(Mark(99),)))
    r = before.results[0]
    other = next(x for x in before.results if x.shot_id != r.shot_id)
    with pytest.raises(BadInputError, match="older than the movie's index"):
        engine.refine("Twins", before.query_vectors, Feedback(negatives=(Mark(r.shot_id, other.crop),)))
    with pytest.raises(BadInputError, match="do not fit"):
        engine.refine("Twins", {"dinov2": np.ones((1, 7), np.float32)}, Feedback())


def test_cli_not_and_yes_apply_the_same_feedback(film, capsys, monkeypatch: pytest.MonkeyPatch,
                                                 tiny_dinov2: Path) -> None:
    engine, query = film
    for key, value in {"INDEX_DIR": str(engine.settings.index_dir), "DETECTOR": "yolov8n.yaml",
                       "DINOV2_MODEL": str(tiny_dinov2), "DET_IMGSZ": "160", "DEVICE": "cpu",
                       "CHANNELS": "dinov2"}.items():
        monkeypatch.setenv(f"CASTFINDER_{key}", value)
    assert main(["search", "--movie", "twins", "--top", "6", "--json", str(query)]) == 0
    before = [r["shot"] for r in json.loads(capsys.readouterr().out)["results"]]
    assert main(["search", "--movie", "twins", "--top", "6", "--json", "--not", str(before[0]),
                 "--yes", str(before[-1]), str(query)]) == 0
    after = [r["shot"] for r in json.loads(capsys.readouterr().out)["results"]]
    expected = engine.search("Twins", [query], top=6, feedback=engine.feedback_for("Twins", yes=[before[-1]],
                                                                                     no=[before[0]]))
    assert after == shots(expected) and before[0] not in after and after[0] == before[-1]
    # A shot the movie does not have: one line, exit 1, no traceback.
    assert main(["search", "--movie", "twins", "--not", "42", str(query)]) == 1
    err = capsys.readouterr().err
    assert "no shot 42" in err and "Traceback" not in err


# -- the bot ------------------------------------------------------------------------------
@pytest.fixture
async def h(film, tmp_path: Path, tiny_dinov2: Path, db_target: Path | str):
    """The bot over the fake Bot API, with an engine on the film's index that finds nobody in a
    screenshot (the random detector is told to be sure), so the whole screenshot is the query;
    once on each database backend (pages, query vectors and taps are stored)."""
    engine, _ = film
    bot_engine = Engine(settings_for(engine.settings.index_dir, tiny_dinov2).model_copy(update={"det_conf": 0.99}))
    database = {"db_path": db_target} if isinstance(db_target, Path) else {"database_url": db_target}
    async with bot_harness(bot_engine, tmp_path, admin_ids=frozenset({USER_ID}), **database) as harness:
        await harness.app.storage.set_movie(USER_ID, "twins", "Twins")
        harness.engine = bot_engine  # type: ignore[attr-defined]
        yield harness


def screenshot() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 96), QUERY_RGB).save(out, "PNG")  # lossless: the engine sees the same pixels
    return out.getvalue()


def buttons(message: dict) -> dict[str, str]:
    """Button text -> callback data of a message's inline keyboard."""
    rows = message.get("reply_markup", {}).get("inline_keyboard", [])
    return {b["text"]: b["callback_data"] for row in rows for b in row}


def listed_shots(text: str) -> list[int]:
    return [int(m) for m in re.findall(r"^#\d+ · shot (\d+)", text, re.M)]


def edits_of(h, message: dict) -> list:
    """editMessageText calls on `message` (status messages are edited too)."""
    return [c for c in h.srv.calls_of("editMessageText") if c.params["message_id"] == message["message_id"]]


def last_answer(h) -> str:
    return [a for a in h.srv.callback_answers.values() if a][-1].get("text", "")


async def test_taps_edit_the_list_in_place_and_accumulate(h) -> None:
    await h.feed(h.photo(screenshot()))
    listing = h.srv.calls_of("sendMessage")[-1].result
    expected = h.engine.search("Twins", [screenshot()], top=50)
    assert listed_shots(listing["text"]) == shots(expected)[:5]
    keys = buttons(listing)
    assert {"✓1", "✗1", "✓5", "✗5"} <= set(keys)
    sent = len(h.srv.calls_of("sendMessage"))

    # ✗ on the top result: the same message now lists the re-ranked shots, without it.
    top = expected.results[0]
    await h.feed(callback_update(h.srv, chat=ALICE_CHAT, from_user=ALICE, message=listing, data=keys["✗1"]))
    [edit] = edits_of(h, listing)
    assert len(h.srv.calls_of("sendMessage")) == sent
    no = Feedback(negatives=(Mark(top.shot_id, top.crop),))
    refined = h.engine.search("Twins", [screenshot()], top=50, feedback=no)
    assert listed_shots(edit.result["text"]) == shots(refined)[:5] and top.shot not in listed_shots(edit.result["text"])
    assert "Re-ranked with your feedback (✓ 0 · ✗ 1)" in edit.result["text"]
    assert f"Shot {top.shot} removed" in last_answer(h)

    # ✓ on the last one of the new list: both taps count.
    last = refined.results[len(listed_shots(edit.result["text"])) - 1]
    rank = len(listed_shots(edit.result["text"]))
    await h.feed(callback_update(h.srv, chat=ALICE_CHAT, from_user=ALICE, message=edit.result,
                                 data=buttons(edit.result)[f"✓{rank}"]))
    second = edits_of(h, listing)[-1]
    both = Feedback(positives=(Mark(last.shot_id, last.crop),), negatives=no.negatives)
    again = h.engine.search("Twins", [screenshot()], top=50, feedback=both)
    now = listed_shots(second.result["text"])
    assert now == shots(again)[:5] and now[0] == last.shot
    assert "(✓ 1 · ✗ 1)" in second.result["text"] and len(h.srv.calls_of("sendMessage")) == sent

    # A button of the list as it was before the last tap: refused, nothing edited.
    await h.feed(callback_update(h.srv, chat=ALICE_CHAT, from_user=ALICE, message=edit.result,
                                 data=buttons(edit.result)["✗2"]))
    assert "changed" in last_answer(h) and len(edits_of(h, listing)) == 2

    # /stats: one answer, corrected, with a ✗.
    await h.feed(h.text("/stats"))
    assert "Feedback: 1 of 1 answers corrected (100%); 1 with a ✗; taps ✓ 1 · ✗ 1" in h.sent_texts()[-1]


async def test_forged_and_foreign_feedback_buttons_change_nothing(h) -> None:
    await h.feed(h.photo(screenshot()))
    listing = h.srv.calls_of("sendMessage")[-1].result
    data = FeedbackButton.unpack(buttons(listing)["✗1"])
    forged = [
        data.model_copy(update={"rank": 42}).pack(),  # a rank the answer does not have
        data.model_copy(update={"page": "AAAAAAAAAAA"}).pack(),  # no such page
        f"fb:{data.page}:0:1:x",  # no such verdict
        f"fb:{data.page}:0:+1:n",  # not the bot's digits
    ]
    for forged_data in forged:
        await h.feed(callback_update(h.srv, chat=ALICE_CHAT, from_user=ALICE, message=listing, data=forged_data))
        assert "Send the screenshot again" in last_answer(h), forged_data
    # The page pressed in another chat (Bob's) is not found there.
    bob_chat = private_chat(BOB["id"], "Bob", "bob")
    await h.feed(callback_update(h.srv, chat=bob_chat, from_user=BOB, message={**listing, "chat": bob_chat},
                                 data=data.pack()))
    assert "Send the screenshot again" in last_answer(h)
    # Someone else in the chat: the asker's answer is theirs to correct.
    await h.feed(callback_update(h.srv, chat=ALICE_CHAT, from_user=BOB, message=listing, data=data.pack()))
    assert "Only the person who asked" in last_answer(h)
    assert edits_of(h, listing) == []
    usage = await h.app.storage.stats()
    assert (usage.corrected, usage.yes_taps, usage.no_taps) == (0, 0, 0)


async def test_a_database_of_the_previous_schema_opens_and_its_pages_expire_politely(tmp_path: Path) -> None:
    import aiosqlite

    path = tmp_path / "old.sqlite3"
    async with aiosqlite.connect(path) as db:
        await migrate(db, target=2)
        old = {"results": [{"rank": 1, "shot": 3, "scene": None, "start_s": 1.0, "end_s": 2.0, "confidence": 0.9,
                            "thumbnail": "", "low_confidence": False}], "notes": []}
        await db.execute("INSERT INTO result_pages VALUES (?,?,?,?,?,?,?,?,?)",
                         ("oldpage", USER_ID, USER_ID, None, None, "Twins", 5, json.dumps(old), 0.0))
        await db.commit()
    storage = await Storage.open(path)
    try:
        page = await storage.results("oldpage", chat_id=USER_ID)
        assert page is not None and page.results[0].shot == 3 and page.slug == "" and page.version == 0
        assert await storage.query_vectors("oldpage", chat_id=USER_ID) is None
        # An old page takes no feedback: its list gets no ✓/✗ buttons (its ▶ stays).
        keyboard = results_keyboard(page, page.results, 1)
        assert keyboard is not None and [b.text for row in keyboard.inline_keyboard for b in row] == ["▶ 1"]
        assert (await storage.stats()).corrected == 0
        async with aiosqlite.connect(path) as db:
            assert await schema_version(db) == SCHEMA_VERSION == 3
    finally:
        await storage.close()


def test_stored_vectors_are_bounded_and_read_back() -> None:
    rows = np.random.default_rng(0).normal(size=(500, 768)).astype(np.float32)
    packed = pack({"dinov2": rows, "face": np.zeros((0, 512), np.float32)})
    assert packed is not None and len(packed) < 60_000
    back = unpack(packed)
    assert back is not None and back["dinov2"].shape == (32, 768) and back["face"].shape == (0, 512)
    assert unpack(b"not an npz") is None
