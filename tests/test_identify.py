"""Which movie is this? A screenshot matched against every indexed movie (core/catalog.py,
Engine.identify, `castfinder identify`)."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path
from typing import Iterator

import av
import cv2
import numpy as np
import pytest
from PIL import Image

from castfinder.cli import main
from tests.media import recompressed

FPS = 12.0
SHOT_FRAMES = 24  # 2 s a shot
SIZE = (160, 96)


def make_movie(path: Path, seed: int, shots: int = 3) -> Path:
    """An mp4 of `shots` shots, each a different smooth colour pattern (a film's frames are
    pictures, not flat colours) with a square moving across it."""
    rng = np.random.default_rng(seed)
    w, h = SIZE
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (w, h))
    n = 0
    for _ in range(shots):
        grid = rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)
        base = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
        for _ in range(SHOT_FRAMES):
            frame = base.copy()
            x = (n * 2) % (w - 16)
            cv2.rectangle(frame, (x, 40), (x + 12, 52), (255, 255, 255), -1)
            writer.write(frame)
            n += 1
    writer.release()
    return path


def frame_at(video: Path, seconds: float) -> Image.Image:
    with av.open(str(video)) as container:
        for frame in container.decode(video=0):
            if frame.time is not None and frame.time >= seconds:
                return frame.to_image()
    raise AssertionError(f"no frame at {seconds} s")


def letterboxed(image: Image.Image) -> Image.Image:
    """Black bars above and below, and dark grey ones at the sides, as a player's window shows it."""
    w, h = image.size
    canvas = Image.new("RGB", (w + 40, h + 60), (18, 18, 18))
    bars = Image.new("RGB", (w, h + 60), (0, 0, 0))
    bars.paste(image, (0, 30))
    canvas.paste(bars, (20, 0))
    return canvas


VARIANTS = {
    "full": lambda im: im,
    "jpeg q40": lambda im: recompressed(im, 40),
    "resized 50%": lambda im: recompressed(im.resize((im.width // 2, im.height // 2), Image.Resampling.BILINEAR), 75),
    "letterboxed": lambda im: recompressed(letterboxed(im), 75),
}


@pytest.fixture
def two_movies(make_settings, tmp_path: Path) -> Iterator[tuple[object, Path, Path]]:
    """An engine with two tiny movies indexed (a detector that finds nobody: frames alone)."""
    from core import Engine

    engine = Engine(make_settings(det_conf=1.0))
    alpha = make_movie(tmp_path / "alpha.mp4", seed=1)
    beta = make_movie(tmp_path / "beta.mp4", seed=2)
    engine.index(alpha, "Alpha")
    engine.index(beta, "Beta")
    yield engine, alpha, beta
    engine.catalog.close()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_a_frame_identifies_its_movie_and_shot(two_movies, variant: str) -> None:
    engine, alpha, beta = two_movies
    for video, name in ((alpha, "Alpha"), (beta, "Beta")):
        for shot, seconds in ((1, 0.9), (3, 4.6)):
            response = engine.identify(VARIANTS[variant](frame_at(video, seconds)))
            assert response.movie == name, (variant, name, seconds, response)
            assert response.confidence >= 0.5 and response.shots[0].shot == shot
            assert response.shots[0].start_s <= response.shots[0].frame_s < response.shots[0].end_s
            assert response.shots[0].evidence == "frame" and response.shots[0].thumbnail


def test_a_picture_from_no_indexed_movie_is_not_in_the_catalogue(two_movies, tmp_path: Path) -> None:
    engine, _, _ = two_movies
    other = make_movie(tmp_path / "other.mp4", seed=99, shots=1)
    noise = Image.fromarray(np.random.default_rng(5).integers(0, 256, (96, 160, 3), dtype=np.uint8))
    for picture in (frame_at(other, 1.0), noise):
        response = engine.identify(picture)
        assert response.movie is None and not response.found and response.shots == []
        assert response.confidence < 0.5 and response.movies_searched == 2


def test_an_empty_catalogue_says_to_index_a_movie_first(make_settings) -> None:
    from core import BadInputError, Engine

    engine = Engine(make_settings(det_conf=1.0))
    with pytest.raises(BadInputError, match="No movie is indexed yet.*castfinder index"):
        engine.identify(Image.new("RGB", (64, 48), (10, 200, 30)))


def test_reindexing_or_removing_a_movie_leaves_no_stale_entries(two_movies, tmp_path: Path) -> None:
    engine, alpha, beta = two_movies
    old_frame = frame_at(alpha, 0.9)
    assert engine.identify(old_frame).movie == "Alpha"
    # "Alpha" re-indexed from another film: the catalogue holds the new one only.
    gamma = make_movie(tmp_path / "gamma.mp4", seed=3)
    engine.index(gamma, "Alpha")
    assert engine.identify(frame_at(gamma, 2.5)).movie == "Alpha"
    assert engine.identify(old_frame).movie is None
    entries = engine.catalog.entries()
    assert {e.build_id for e in entries.values()} == {m.build_id for m in engine.movies()}
    # A movie's index deleted: it leaves the catalogue at the next identify.
    shutil.rmtree(tmp_path / "indexes" / "beta")
    response = engine.identify(frame_at(beta, 0.9))
    assert response.movie is None and response.movies_searched == 1
    assert set(engine.catalog.entries()) == {"alpha"}


def test_the_catalogue_is_rebuilt_when_missing(two_movies, tmp_path: Path) -> None:
    from core import Engine

    engine, alpha, _ = two_movies
    assert engine.identify(frame_at(alpha, 4.6)).movie == "Alpha"
    engine.catalog.close()
    shutil.rmtree(tmp_path / "indexes" / ".catalog.db")
    fresh = Engine(engine.settings)  # another process: the catalogue is gone, the indexes are not
    try:
        assert fresh.identify(frame_at(alpha, 4.6)).movie == "Alpha"
        assert set(fresh.catalog.entries()) == {"alpha", "beta"}
    finally:
        fresh.catalog.close()


def test_an_index_without_frame_descriptors_is_found_by_people_only(two_movies, tmp_path: Path) -> None:
    import sqlite3

    engine, alpha, _ = two_movies
    engine.catalog.close()
    # As an index written before descriptors existed: no table.
    db = sqlite3.connect(tmp_path / "indexes" / "alpha" / "meta.sqlite")
    db.execute("DROP TABLE frame_descriptors")
    db.commit()
    db.close()
    report = engine.rebuild_catalog()
    assert report.without_descriptors == ["Alpha"]
    response = engine.identify(frame_at(alpha, 0.9))
    assert response.movie is None and response.without_descriptors == ["Alpha"]


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_dinov2: Path) -> Path:
    index_dir = tmp_path / "indexes"
    for key, value in {"INDEX_DIR": str(index_dir), "DETECTOR": "yolov8n.yaml", "DINOV2_MODEL": str(tiny_dinov2),
                       "DET_CONF": "1.0", "DET_IMGSZ": "160", "DEVICE": "cpu", "CHANNELS": "dinov2"}.items():
        monkeypatch.setenv(f"CASTFINDER_{key}", value)
    return index_dir


def test_cli_identify_json_schema(cli_env: Path, tmp_path: Path, capsys) -> None:
    screenshot = tmp_path / "screenshot.jpg"
    Image.new("RGB", (64, 48), (10, 200, 30)).save(screenshot)
    assert main(["identify", str(screenshot)]) == 1
    assert "No movie is indexed yet" in capsys.readouterr().err
    video = make_movie(tmp_path / "heat.mp4", seed=4)
    assert main(["index", str(video), "--movie", "Heat (1995)", "--quiet"]) == 0
    recompressed(frame_at(video, 2.5), 60).save(screenshot)
    capsys.readouterr()
    assert main(["identify", str(screenshot), "--json", "--top", "2"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"found", "movie", "slug", "confidence", "shots", "candidates", "movies_searched", "people",
                         "without_descriptors"}
    assert (data["found"], data["movie"], data["slug"]) == (True, "Heat (1995)", "heat-1995")
    assert data["movies_searched"] == 1
    assert 0.5 <= data["confidence"] <= 1 and 1 <= len(data["shots"]) <= 2
    best = data["shots"][0]
    assert set(best) == {"shot", "scene", "start_s", "end_s", "frame_s", "confidence", "evidence", "thumbnail"}
    assert best["shot"] == 2 and best["start_s"] <= best["frame_s"] < best["end_s"]
    assert main(["identify", str(screenshot)]) == 0
    assert re.search(r"Looks like Heat \(1995\), shot 2 at 00:00:0[23] \(\d+% sure\)", capsys.readouterr().out)
    assert main(["identify", str(screenshot), "--top", "0"]) == 2
    assert main(["identify", str(tmp_path / "missing.png")]) == 1
    assert "no such file" in capsys.readouterr().err
    assert main(["catalog", "rebuild"]) == 0
    assert "1 movie(s); 1 read" in capsys.readouterr().out


async def test_bot_identifies_a_screenshot_when_no_movie_is_set_and_searches_there(two_movies) -> None:
    from bot.keyboards import IdentifyAction
    from tests.bot_support import ALICE, ALICE_CHAT, BOB, USER_ID, bot_harness
    from tests.fake_telegram import callback_update

    engine, alpha, beta = two_movies
    screenshot = io.BytesIO()
    recompressed(frame_at(beta, 4.6), 70).save(screenshot, "JPEG")
    async with bot_harness(engine, engine.settings.index_dir.parent) as h:
        upd = h.photo(screenshot.getvalue())
        await h.feed(upd)
        [answer] = h.srv.calls_of("sendPhoto")  # the matched shot's thumbnail
        caption = answer.result["caption"]
        assert re.match(r"🎬 Looks like Beta, shot 3 at 00:00:0[45] \(\d+% sure\)", caption), caption
        assert answer.params["reply_parameters"]["message_id"] == upd["message"]["message_id"]
        buttons = [b for row in answer.params["reply_markup"]["inline_keyboard"] for b in row]
        assert [b["text"] for b in buttons] == ["🔎 Search in Beta", "🎬 Set Beta for this chat"]
        search = buttons[0]["callback_data"]
        assert IdentifyAction.unpack(search).act == "s"
        assert (await h.app.storage.chat(USER_ID)).movie_slug is None  # nothing set before a tap
        # Another user's tap does nothing but say so.
        await h.feed(callback_update(h.srv, chat=ALICE_CHAT, from_user=BOB, message=answer.result, data=search))
        assert (await h.app.storage.chat(USER_ID)).movie_slug is None
        # "Search in Beta": the chat's movie is set and the screenshot searched in it.
        await h.feed(callback_update(h.srv, chat=ALICE_CHAT, from_user=ALICE, message=answer.result, data=search))
        assert (await h.app.storage.chat(USER_ID)).movie_slug == "beta"
        # (This engine's detector finds nobody, so Beta's index holds no people: the search says so.)
        assert h.sent_texts()[-1].startswith("No shot of <b>Beta</b>")
        rows = await h.app.storage.recent_queries()
        assert [(r["outcome"], r["movie_slug"]) for r in rows] == [("identified", "beta"), ("ok", "beta")]


async def test_bot_says_not_in_the_catalogue_for_a_picture_of_no_indexed_movie(two_movies) -> None:
    from tests.bot_support import bot_harness

    engine, _, _ = two_movies
    noise = io.BytesIO()
    Image.fromarray(np.random.default_rng(7).integers(0, 256, (96, 160, 3), dtype=np.uint8)).save(noise, "JPEG")
    async with bot_harness(engine, engine.settings.index_dir.parent) as h:
        await h.feed(h.photo(noise.getvalue()))
        assert h.srv.calls_of("sendPhoto") == []
        assert "not from any movie I have indexed" in h.sent_texts()[-1]
        assert "/movies" in h.sent_texts()[-1]


@pytest.fixture(scope="module")
def real_catalogue(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """Titanic's clip and GoldenEye's frames indexed with the real detector and the default channels
    (faces and body re-id from ../shared/weights), 1 frame a second: each movie the other's distractor."""
    from core import Engine
    from tests.conftest import GOLDENEYE_FRAMES, PERSON_DETECTOR, TITANIC, WEIGHTS

    if not (PERSON_DETECTOR.is_file() and TITANIC.is_file() and GOLDENEYE_FRAMES.is_dir()):
        pytest.skip(f"needs the real footage and weights in {WEIGHTS.parent}")
    from core import Settings

    settings = Settings(_env_file=None, index_dir=tmp_path_factory.mktemp("catalogue") / "indexes",
                        detector=str(PERSON_DETECTOR), person_classes=[0, 1], models_dir=WEIGHTS, device="cpu",
                        sample_fps=1.0)
    engine = Engine(settings)
    engine.index(TITANIC, "Titanic")
    engine.index(GOLDENEYE_FRAMES, "GoldenEye")
    yield engine
    engine.catalog.close()


# Person crops with a face (the shared query pictures: not frames of the clips, not what was indexed).
# (With only these two films Titanic's three shots calibrate weakly: its crops land at 0.56-0.67;
# Jack seen from behind, body_jack.jpg, and a face with no body, face_rose.jpg, stay under 0.5.)
CROPS = [("titanic/portrait_jack.jpg", "Titanic"), ("titanic/body_rose.jpg", "Titanic"),
         ("goldeneye/queries/natalya_1.jpg", "GoldenEye"), ("goldeneye/queries/boris_2.jpg", "GoldenEye")]


@pytest.mark.slow
@pytest.mark.parametrize(("picture", "movie"), CROPS)
def test_a_person_crop_identifies_its_movie_by_the_people_in_it(real_catalogue, picture: str, movie: str) -> None:
    from tests.conftest import DATA

    response = real_catalogue.identify(Image.open(DATA / picture))
    assert response.movie == movie, response
    assert response.confidence >= 0.5
    assert response.people >= 1 and "people" in response.shots[0].evidence


@pytest.mark.slow
async def test_bot_identifies_the_movie_of_a_person_crop_and_searches_the_character_there(real_catalogue) -> None:
    from tests.bot_support import ALICE, ALICE_CHAT, USER_ID, bot_harness
    from tests.conftest import DATA
    from tests.fake_telegram import callback_update

    engine = real_catalogue
    crop = (DATA / "goldeneye" / "queries" / "natalya_1.jpg").read_bytes()
    async with bot_harness(engine, engine.settings.index_dir.parent) as h:
        await h.feed(h.photo(crop))
        [answer] = h.srv.calls_of("sendPhoto")
        caption = answer.result["caption"]
        assert re.match(r"🎬 Looks like GoldenEye, shot \d+/\d+ at 00:00:\d\d \((8|9)\d% sure\)", caption), caption
        search = answer.params["reply_markup"]["inline_keyboard"][0][0]
        assert search["text"] == "🔎 Search in GoldenEye"
        await h.feed(callback_update(h.srv, chat=ALICE_CHAT, from_user=ALICE, message=answer.result,
                                     data=search["callback_data"]))
        assert (await h.app.storage.chat(USER_ID)).movie_slug == "goldeneye"
        # The crop is then searched in GoldenEye: Natalya's shots come back as results.
        results = [c for c in h.srv.calls_of("sendPhoto")[1:] if "shot" in (c.result.get("caption") or "")]
        assert results, h.sent_texts()
        rows = await h.app.storage.recent_queries()
        assert [(r["outcome"], r["movie_slug"]) for r in rows] == [("identified", "goldeneye"), ("ok", "goldeneye")]
