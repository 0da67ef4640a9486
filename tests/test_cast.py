"""The cast: identities found at index time, `Engine.cast`, the contact sheet, searching from a
cast member, `castfinder cast`, and the bot's /cast.

The index is built by the real indexer from a synthetic video whose "people" are coloured
rectangles in two fixed slots, found by a stub detector and embedded by stub channels whose vectors
are the rectangle's colour: three people, distinct by colour, with known screen times."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
from PIL import Image

from castfinder.cli import main
from core import CastUnavailableError, Engine, Settings
from core.models.channels import Channel, Encoded
from core.models.detector import Detection

FPS = 10
W, H = 160, 96
SLOTS = ((8, 8, 56, 90), (100, 8, 148, 90))  # where a person may stand (x1, y1, x2, y2)
RED, GREEN, BLUE = (220, 30, 30), (30, 200, 30), (30, 30, 220)
# Shots: (background grey, people in the two slots, frames). Red is in 3 shots (6 s), green in 2
# (5 s), blue in 1 (1 s): the cast in that order.
SHOTS = [
    (40, (RED, None), 30),
    (200, (RED, GREEN), 20),
    (90, (None, GREEN), 30),
    (150, (BLUE, RED), 10),
    (20, (None, None), 10),
]


def make_cast_video(path: Path) -> Path:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (W, H))
    for grey, people, frames in SHOTS:
        for n in range(frames):
            frame = np.full((H, W, 3), grey, np.uint8)
            for slot, colour in zip(SLOTS, people):
                if colour is not None:
                    x1, y1, x2, y2 = slot
                    frame[y1:y2, x1 + n % 3:x2 + n % 3] = colour[::-1]  # BGR
            writer.write(frame)
    writer.release()
    return path


class SlotDetector:
    """A person wherever a slot's centre differs from the frame's corner (the background)."""

    runtime = "stub"

    def load(self) -> SlotDetector:
        return self

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        out = []
        for image in images:
            background = image[2, 2].astype(int)
            found = []
            for x1, y1, x2, y2 in SLOTS:
                centre = image[(y1 + y2) // 2, (x1 + x2) // 2].astype(int)
                if np.abs(centre - background).max() > 60:
                    found.append(Detection((float(x1), float(y1), float(x2), float(y2)), 0.9))
            out.append(found)
        return out


class ColourChannel(Channel):
    """A crop's vector is its centre's colour (normalised); as a face channel, the crop's top
    third is its face."""

    def __init__(self, name: str, kind: str) -> None:
        super().__init__()
        self.name = self.role = name
        self.kind = kind  # type: ignore[misc]
        self.model_name = f"stub-{name}"
        self._dim = 3

    def _load(self) -> None:
        pass

    def _predict(self, inputs: Sequence[Image.Image]) -> Encoded:
        vectors = []
        for crop in inputs:
            rgb = np.asarray(crop.convert("RGB"), dtype=np.float32)
            centre = rgb[rgb.shape[0] // 3: 2 * rgb.shape[0] // 3, rgb.shape[1] // 3: 2 * rgb.shape[1] // 3]
            v = centre.reshape(-1, 3).mean(axis=0) - 60
            vectors.append(v / max(float(np.linalg.norm(v)), 1e-6))
        rows = np.arange(len(inputs))
        boxes = [(0.0, 0.0, float(c.width), float(c.height) / 3) for c in inputs] if self.kind == "face" else None
        return Encoded(np.array(vectors, np.float32).reshape(-1, 3), rows, boxes)


@pytest.fixture
def stubs(monkeypatch: pytest.MonkeyPatch):
    import core.engine

    channels = {"face": ColourChannel("face", "face"), "reid": ColourChannel("reid", "body")}
    monkeypatch.setattr(core.engine, "make_detector", lambda settings, device: SlotDetector())
    monkeypatch.setattr(core.engine, "make_channel", lambda name, model, settings, device: channels[name])
    monkeypatch.setattr(Settings, "model_for", lambda self, name: f"stub-{name}")
    return channels


def cast_settings(index_dir: Path, **overrides) -> Settings:
    values = dict(index_dir=index_dir, device="cpu", channels=["face", "reid"], sample_fps=2.0,
                  cast_threshold=0.2, dedup=False)
    values.update(overrides)
    return Settings(_env_file=None, **values)


@pytest.fixture
def movie(tmp_path: Path, stubs) -> tuple[Engine, Path]:
    engine = Engine(cast_settings(tmp_path / "indexes"), load_models=False)
    video = make_cast_video(tmp_path / "cast.mp4")
    engine.index(video, "Three People")
    return engine, video


def test_the_cast_is_the_three_people_ordered_by_screen_time(movie) -> None:
    engine, _ = movie
    cast = engine.cast("three")
    assert [m.number for m in cast] == [1, 2, 3]
    assert [len(m.shots) for m in cast] == [3, 2, 1]
    assert [round(m.screen_s) for m in cast] == [6, 5, 1]  # the durations of their shots
    assert [m.screen_s for m in cast] == sorted((m.screen_s for m in cast), reverse=True)
    red, green, blue = cast
    assert red.first_s < 1.0 and 3.0 <= green.first_s < 5.1 and blue.first_s >= 8.0
    assert abs(red.share - 6 / 10) < 0.02
    for member in cast:
        assert member.crops and member.portrait is not None
        with Image.open(member.portrait) as img:
            assert img.format == "JPEG"
            # The portrait shows its person's colour.
            pixel = np.asarray(img.convert("RGB"))[img.height // 2, img.width // 2]
        expected = {1: RED, 2: GREEN, 3: BLUE}[member.number]
        assert np.abs(pixel.astype(int) - np.array(expected)).max() < 60


def test_a_search_from_a_cast_member_returns_their_shots_first(movie) -> None:
    engine, _ = movie
    cast = engine.cast("three")
    for member in cast:
        response = engine.search_identity("three", member.identity, top=5)
        found = [r.shot_id for r in response.results[: len(member.shots)]]
        assert sorted(found) == list(member.shots)
        assert response.query_crops >= 1


def test_the_contact_sheet_is_a_jpeg_with_a_tile_per_member(movie) -> None:
    engine, _ = movie
    sheet = engine.cast_sheet("three")
    with Image.open(io.BytesIO(sheet)) as img:
        assert img.format == "JPEG"
        rgb = np.asarray(img.convert("RGB")).astype(int)
    # One tile per member, each with its person's colour: red, green and blue patches present.
    for colour in (RED, GREEN, BLUE):
        near = (np.abs(rgb - np.array(colour)).max(axis=2) < 50).sum()
        assert near > 2000, colour
    assert len(engine.cast_sheet("three", engine.cast("three")[:1])) < len(sheet)


def test_an_index_without_a_cast_says_to_reindex(movie) -> None:
    engine, video = movie
    index = engine.open_index("three")
    db = sqlite3.connect(index.path / "meta.sqlite")
    db.executescript("DROP TABLE cast_tracks; DROP TABLE cast_members;")
    db.close()
    engine._cache.clear()
    with pytest.raises(CastUnavailableError, match="re-index this movie to get its cast") as err:
        engine.cast("three")
    assert str(video) in str(err.value)


def test_an_index_without_faces_has_no_cast_and_says_why(tmp_path: Path, stubs) -> None:
    engine = Engine(cast_settings(tmp_path / "indexes", channels=["reid"]), load_models=False)
    engine.index(make_cast_video(tmp_path / "cast.mp4"), "Bodies")
    with pytest.raises(CastUnavailableError, match="without a face channel.*--channels face,reid"):
        engine.cast("bodies")


def test_the_format2_index_loads_and_has_no_cast(tmp_path: Path) -> None:
    import shutil

    shutil.copytree(Path(__file__).parent / "data" / "format2-index", tmp_path / "indexes")
    engine = Engine(Settings(_env_file=None, index_dir=tmp_path / "indexes", device="cpu"), load_models=False)
    [movie] = engine.movies()
    with pytest.raises(CastUnavailableError, match="re-index"):
        engine.cast(movie)


# -- the CLI ---------------------------------------------------------------------------------
@pytest.fixture
def cli_env(movie, monkeypatch: pytest.MonkeyPatch):
    engine, _ = movie
    monkeypatch.setenv("CASTFINDER_INDEX_DIR", str(engine.settings.index_dir))
    monkeypatch.setenv("CASTFINDER_CHANNELS", "face,reid")
    return engine


def test_cast_json_schema_and_sheet(cli_env, tmp_path: Path, capsys) -> None:
    sheet = tmp_path / "sheet.jpg"
    assert main(["cast", "--movie", "three", "--json", "--top", "2", "--save", str(sheet)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"movie", "duration_s", "members", "cast", "sheet"}
    assert data["movie"] == "Three People" and data["members"] == 3 and len(data["cast"]) == 2
    first = data["cast"][0]
    assert set(first) == {"number", "identity", "screen_s", "share", "shots", "shot_ids", "first_s", "tracks",
                          "portrait"}
    assert first["number"] == 1 and first["shots"] == 3 and Path(first["portrait"]).is_file()
    with Image.open(sheet) as img:
        assert img.format == "JPEG"


def test_cast_table_and_search_from_a_member(cli_env, capsys) -> None:
    assert main(["cast", "--movie", "three"]) == 0
    out = capsys.readouterr().out
    assert "the cast (3 people" in out and "6 s" in out and "60%" in out
    assert main(["search", "--movie", "three", "--cast", "2", "--json", "--quiet"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert sorted(r["shot"] for r in results[:2]) == list(cli_env.cast("three")[1].shots)
    assert main(["search", "--movie", "three", "--cast", "9"]) == 1
    assert "has no cast member 9; its cast has 3" in capsys.readouterr().err
    assert main(["search", "--movie", "three"]) == 2  # neither screenshots nor --cast


# -- the bot -----------------------------------------------------------------------------------
async def test_bot_cast_sheet_then_a_tap_answers_like_a_screenshot(movie, tmp_path: Path) -> None:
    from bot.keyboards import CastChoice
    from tests.bot_support import ALICE, ALICE_CHAT, BOB, USER_ID, bot_harness
    from tests.fake_telegram import callback_update, private_chat

    engine, _ = movie
    async with bot_harness(engine, tmp_path) as h:
        await h.app.storage.set_movie(USER_ID, "three-people", "Three People")
        asked = h.text("/cast")
        await h.feed(asked)
        [sheet] = h.srv.calls_of("sendPhoto")
        assert sheet.params["caption"].startswith("The cast of Three People: the 3 people")
        assert sheet.params["reply_parameters"]["message_id"] == asked["message"]["message_id"]
        buttons = [b for row in sheet.params["reply_markup"]["inline_keyboard"] for b in row]
        assert [b["text"] for b in buttons] == ["1 · 6 s", "2 · 5 s", "3 · 1 s"]
        second = buttons[1]["callback_data"]
        assert second.startswith("ca:") and CastChoice.unpack(second).number == "2"

        # The tap: an album of member 2's shots, as a screenshot's answer is.
        await h.feed(callback_update(h.srv, chat=ALICE_CHAT, from_user=ALICE, message=sheet.result, data=second))
        [album] = h.srv.calls_of("sendMediaGroup")
        green = engine.cast("three")[1]
        expected = engine.search_identity("three", green.identity, top=5)
        shots = [m["caption"].split(" · ")[1] for m in album.params["media"]]
        assert shots == [f"shot {r.shot}" for r in expected.results]
        assert sorted(shots[:2]) == [f"shot {s}" for s in green.shots]
        assert any("best shots" in t or "closest shots" in t for t in h.sent_texts())

        # The same button pressed in another chat, and a forged sheet id: expired, nothing searched.
        bob_chat = private_chat(BOB["id"], "Bob", "bob")
        await h.feed(callback_update(h.srv, chat=bob_chat, from_user=BOB, message={**sheet.result, "chat": bob_chat},
                                     data=second))
        forged = CastChoice(sheet="AAAAAAAAAAA", number="1").pack()
        await h.feed(callback_update(h.srv, chat=ALICE_CHAT, from_user=ALICE, message=sheet.result, data=forged))
        out_of_range = CastChoice.unpack(second).model_copy(update={"number": "9"}).pack()
        await h.feed(callback_update(h.srv, chat=ALICE_CHAT, from_user=ALICE, message=sheet.result, data=out_of_range))
        answers = [a["text"] for a in h.srv.callback_answers.values() if a and a.get("text")]
        assert answers[-3:] == ["This cast sheet has expired. Send /cast again."] * 3
        assert len(h.srv.calls_of("sendMediaGroup")) == 1


async def test_bot_cast_of_an_old_index_says_to_reindex(movie, tmp_path: Path) -> None:
    from tests.bot_support import USER_ID, bot_harness

    engine, _ = movie
    db = sqlite3.connect(engine.open_index("three").path / "meta.sqlite")
    db.executescript("DROP TABLE cast_tracks; DROP TABLE cast_members;")
    db.close()
    engine._cache.clear()
    async with bot_harness(engine, tmp_path) as h:
        await h.app.storage.set_movie(USER_ID, "three-people", "Three People")
        await h.feed(h.text("/cast"))
        assert "re-index this movie to get its cast" in h.sent_texts()[-1]
        assert h.srv.calls_of("sendPhoto") == []
