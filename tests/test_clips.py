"""Preview clips (`Engine.clip`, `castfinder clip`, the bot's ▶ buttons): a shot as a short muted
H.264 MP4 cut from the indexed video, cached in the index folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from castfinder.cli import main
from core import Engine
from core.clips import MAX_CLIP_S, ClipCutter, clip_window
from core.errors import NoVideoError, ShotNotFoundError, SourceMovedError
from core.types import Shot
from tests.conftest import requires_shared
from tests.media import make_frames_folder, make_video

FPS = 24.0
# 2 s red, 13 s green, 2 s blue (BGR colours), 640×360: shot 2 is longer than a clip.
SEGMENTS = [((0, 0, 220), 48), ((0, 220, 0), 312), ((220, 0, 0), 48)]
SIZE = (640, 360)


def decode(path: Path) -> tuple[list[float], list[np.ndarray], object]:
    """(frame times from PTS, RGB frames, the video stream) of an MP4."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        times, frames = [], []
        for frame in container.decode(stream):
            times.append(float(frame.pts * frame.time_base))
            frames.append(frame.to_ndarray(format="rgb24"))
        info = SimpleNamespace(codec=stream.codec_context.codec.canonical_name, pix_fmt=stream.codec_context.pix_fmt,
                               width=stream.codec_context.width, height=stream.codec_context.height,
                               audio=len(container.streams.audio))
    return times, frames, info


def source_frame(video: Path, time_s: float, size: tuple[int, int]) -> np.ndarray:
    """The source's frame shown at film time `time_s`, upright, at `size`: what the clip should show."""
    import av

    from core.indexing.onepass import upright

    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        base = stream.start_time or 0
        best = None
        for frame in container.decode(stream):
            if float((frame.pts - base) * stream.time_base) > time_s + 1e-3:
                break
            best = frame
    assert best is not None
    turns = round(getattr(best, "rotation", 0) / 90) % 4
    w, h = (size[1], size[0]) if turns % 2 else size
    return upright(best, best.to_ndarray(format="rgb24", width=w, height=h, interpolation="AREA"))


def closest(frame: np.ndarray, candidates: list[np.ndarray]) -> int:
    return int(np.argmin([np.abs(frame.astype(int) - c.astype(int)).mean() for c in candidates]))


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory, tiny_dinov2: Path) -> tuple[Engine, Path]:
    """An engine over an index of the synthetic film (tiny models; nobody in it, shots all the same)."""
    from core import Settings

    folder = tmp_path_factory.mktemp("clips")
    video = make_video(folder / "film.mp4", SEGMENTS, fps=FPS, size=SIZE)
    settings = Settings(_env_file=None, index_dir=folder / "indexes", detector="yolov8n.yaml",
                        dinov2_model=str(tiny_dinov2), device="cpu", det_imgsz=160, channels=["dinov2"],
                        sample_fps=0.5)
    engine = Engine(settings, load_models=False)
    report = engine.index(video, "Clips")
    assert report.shots == 3
    return engine, video


@pytest.fixture
def engine(indexed: tuple[Engine, Path]) -> Engine:
    return indexed[0]


def shot(engine: Engine, number: int) -> Shot:
    return engine.open_index("Clips").shots[number]


def test_a_clip_is_ten_seconds_of_the_shot_around_the_moment_small_muted_h264(indexed) -> None:
    engine, video = indexed
    long_shot = shot(engine, 2)
    clip = engine.clip("Clips", 2, around_s=9.0)
    times, frames, info = decode(clip.path)
    assert (info.codec, info.pix_fmt, info.audio) == ("h264", "yuv420p", 0)
    assert (info.width, info.height) == (clip.width, clip.height) == (480, 270)  # 640×360 to 480 on the long side
    assert (clip.start_s, clip.end_s) == pytest.approx((4.0, 14.0))
    assert long_shot.start_s < clip.start_s and clip.end_s < long_shot.end_s
    assert times[0] == pytest.approx(0.0) and times[-1] <= MAX_CLIP_S
    assert len(frames) == pytest.approx(MAX_CLIP_S * FPS, abs=1)
    # Its first and last frames are the film's at 4.0 s and just before 14.0 s, not their neighbours'.
    candidates = [source_frame(video, t, (480, 270)) for t in (3.5, 3.875, 3.958, 4.0, 4.042, 4.5)]
    assert closest(frames[0], candidates) == 3
    candidates = [source_frame(video, t, (480, 270)) for t in (13.5, 13.875, 13.958, 14.0)]
    assert closest(frames[-1], candidates) == 2
    assert clip.caption == "shot 2 · 00:00:04.0–00:00:14.0"
    assert clip.size_bytes == clip.path.stat().st_size < 2_000_000


def test_a_clip_stays_inside_its_shot(engine: Engine) -> None:
    frame = 1 / FPS
    long_shot = shot(engine, 2)
    near_end = engine.clip("Clips", 2, around_s=long_shot.end_s - 0.2)
    times, frames, _ = decode(near_end.path)
    assert near_end.end_s == pytest.approx(long_shot.end_s)
    assert near_end.start_s == pytest.approx(long_shot.end_s - MAX_CLIP_S)
    assert near_end.start_s + times[-1] < long_shot.end_s + frame
    # Every frame is the green shot's: none of the blue one after it.
    assert all(f[..., 1].mean() > 150 and f[..., 2].mean() < 60 for f in frames)
    first = shot(engine, 1)  # 2 s: the whole shot, whatever the moment
    whole = engine.clip("Clips", 1, around_s=0.1)
    times, frames, _ = decode(whole.path)
    assert (whole.start_s, whole.end_s) == pytest.approx((first.start_s, first.end_s))
    assert abs(times[-1] + frame - first.duration_s) <= frame + 1e-3
    assert all(f[..., 0].mean() > 150 and f[..., 1].mean() < 60 for f in frames)  # all red
    middle = engine.clip("Clips", 2)  # no moment given: the shot's middle
    assert (middle.start_s + middle.end_s) / 2 == pytest.approx((long_shot.start_s + long_shot.end_s) / 2)


def test_the_second_request_is_served_from_the_cache(engine: Engine) -> None:
    first = engine.clip("Clips", 3, around_s=16.0)
    stamp = first.path.stat().st_mtime_ns
    again = engine.clip("Clips", 3, around_s=16.0)
    assert (first.cached, again.cached) == (False, True)
    assert again.path == first.path and again.path.stat().st_mtime_ns == stamp
    assert (again.width, again.height, again.size_bytes) == (first.width, first.height, first.size_bytes)
    assert first.path.parent == engine.open_index("Clips").path / "clips"
    assert not [p for p in first.path.parent.iterdir() if p.name.startswith(".")]  # no half file left


def test_a_killed_cuts_leftover_is_removed_once_old(engine: Engine) -> None:
    clips = engine.open_index("Clips").path / "clips"
    clips.mkdir(exist_ok=True)
    old, fresh = clips / ".shot_00002_1_2.123.4.part", clips / ".shot_00002_3_4.123.5.part"
    for part in (old, fresh):
        part.write_bytes(b"half a clip")
    os.utime(old, (1e9, 1e9))  # 2001: a cut killed long ago
    engine.clip("Clips", 2, around_s=7.0)
    assert not old.exists() and fresh.exists()  # a fresh one may be another process's cut in progress
    fresh.unlink()


def test_a_damaged_cached_clip_is_cut_again(engine: Engine) -> None:
    clip = engine.clip("Clips", 1, around_s=1.0)
    clip.path.write_bytes(b"not an mp4")
    again = engine.clip("Clips", 1, around_s=1.0)
    assert not again.cached and decode(again.path)[2].codec == "h264"


def test_the_clip_window_is_the_moment_clamped_to_the_shot() -> None:
    s = Shot(7, 7, None, 0, 0, 100.0, 130.0)
    assert clip_window(s, 115.0) == (110.0, 120.0)
    assert clip_window(s, 101.0) == (100.0, 110.0)
    assert clip_window(s, 129.9) == (120.0, 130.0)
    assert clip_window(s, None) == (110.0, 120.0)
    assert clip_window(Shot(1, 1, None, 0, 0, 3.0, 5.5), 4.0) == (3.0, 5.5)


def test_unknown_shot_is_a_message(engine: Engine) -> None:
    with pytest.raises(ShotNotFoundError, match=r"'Clips' has no shot 99; its shots are 1 to 3"):
        engine.clip("Clips", 99)


def test_moved_or_changed_video_is_a_message(tmp_path: Path, tiny_dinov2: Path) -> None:
    from core import Settings

    video = make_video(tmp_path / "film.mp4", SEGMENTS[:2], fps=FPS, size=(160, 96))
    settings = Settings(_env_file=None, index_dir=tmp_path / "indexes", detector="yolov8n.yaml",
                        dinov2_model=str(tiny_dinov2), device="cpu", det_imgsz=160, channels=["dinov2"],
                        sample_fps=0.5)
    engine = Engine(settings, load_models=False)
    engine.index(video, "Moved")
    moved = video.rename(tmp_path / "elsewhere.mp4")
    message = (r"the video .*film\.mp4 that 'Moved' was indexed from was moved or changed since indexing; "
               "re-index or put it back")
    with pytest.raises(SourceMovedError, match=message):
        engine.clip("Moved", 1)
    shutil.copy(moved, video)
    with open(video, "ab") as fh:  # the same name, another file
        fh.write(b"\0" * 10)
    with pytest.raises(SourceMovedError, match=message):
        engine.check_clip("Moved", 1)
    moved.replace(video)  # put back: it cuts
    assert engine.clip("Moved", 1).width == 160


def test_frames_folder_movie_is_a_message(tmp_path: Path, tiny_dinov2: Path) -> None:
    from core import Settings

    folder = make_frames_folder(tmp_path / "frames", "dump", {(1, 1): 2, (1, 2): 2})
    settings = Settings(_env_file=None, index_dir=tmp_path / "indexes", detector="yolov8n.yaml",
                        dinov2_model=str(tiny_dinov2), device="cpu", det_imgsz=160, channels=["dinov2"])
    engine = Engine(settings, load_models=False)
    engine.index(folder, "Dump")
    with pytest.raises(NoVideoError, match="indexed from a frames folder: no video to cut a clip from; "
                                           "the thumbnail still works"):
        engine.clip("Dump", 1)


@pytest.mark.parametrize("rotation", [90, -90])
def test_a_phone_video_stored_on_its_side_is_cut_upright(tmp_path: Path, rotation: int) -> None:
    import subprocess

    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    try:
        ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as exc:
        pytest.skip(f"no ffmpeg binary: {exc}")
    plain = make_video(tmp_path / "plain.mp4", [((0, 0, 200), 24), ((200, 200, 0), 48)], fps=FPS, size=(640, 360))
    turned = tmp_path / "turned.mp4"
    subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-display_rotation", str(rotation), "-i", str(plain),
                    "-c", "copy", str(turned)], check=True)
    index = SimpleNamespace(  # what the cutter reads of a MovieIndex
        manifest=SimpleNamespace(name="Phone", source=SimpleNamespace(kind="video", path=str(turned),
                                                                      size=turned.stat().st_size)),
        shots={1: Shot(1, 1, None, 0, 23, 0.0, 1.0), 2: Shot(2, 2, None, 24, 71, 1.0, 3.0)}, path=tmp_path / "index")
    index.path.mkdir()
    clip = ClipCutter().clip(index, 2, around_s=2.0)  # type: ignore[arg-type]
    assert (clip.width, clip.height) == (270, 480)  # portrait, as the phone shows it
    _, frames, _ = decode(clip.path)
    candidates = [source_frame(turned, t, (270, 480)) for t in (1.0, 1.5, 2.0)]
    assert candidates[0].shape == frames[0].shape
    assert closest(frames[0], candidates) == 0
    assert np.abs(frames[0].astype(int) - candidates[0].astype(int)).mean() < 6  # the same picture, upright


# -- the CLI -------------------------------------------------------------------------------
@pytest.fixture
def cli_env(indexed, monkeypatch: pytest.MonkeyPatch, tiny_dinov2: Path) -> Path:
    engine, video = indexed
    monkeypatch.setenv("CASTFINDER_INDEX_DIR", str(engine.settings.index_dir))
    monkeypatch.setenv("CASTFINDER_DINOV2_MODEL", str(tiny_dinov2))
    monkeypatch.setenv("CASTFINDER_CHANNELS", "dinov2")
    monkeypatch.setenv("CASTFINDER_DEVICE", "cpu")
    return video


def test_cli_saves_the_clip(cli_env: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "shot2.mp4"
    assert main(["clip", "--movie", "clips", "--shot", "2", "--at", "9", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"Saved {out}: shot 2 · 00:00:04.0–00:00:14.0 · 480×270" in printed
    _, frames, info = decode(out)
    assert info.codec == "h264" and len(frames) == pytest.approx(240, abs=1)
    assert main(["clip", "--movie", "clips", "--shot", "2", "--at", "9", str(out)]) == 0
    assert "(from the cache)" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "code", "message"), [
    (["--shot", "99"], 1, "'Clips' has no shot 99"),
    (["--shot", "abc"], 2, "invalid int value"),
    (["--movie", "nosuch", "--shot", "1"], 1, "No indexed movie matches 'nosuch'"),
    (["--shot", "2", "--at", "nan"], 1, "must be a time in seconds, not nan"),
    (["--shot", "2", "--at=-inf"], 1, "must be a time in seconds, not -inf"),
])
def test_cli_refusals(cli_env: Path, tmp_path: Path, capsys, argv: list[str], code: int, message: str) -> None:
    full = ["clip", "--movie", "clips", *argv, str(tmp_path / "out.mp4")] if "--movie" not in argv \
        else ["clip", *argv, str(tmp_path / "out.mp4")]
    try:
        got = main(full)
    except SystemExit as exc:  # argparse's usage errors
        got = exc.code
    assert got == code
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out.mp4").exists()


def test_cli_moved_video_and_missing_folder(cli_env: Path, tmp_path: Path, capsys) -> None:
    assert main(["clip", "--movie", "clips", "--shot", "1", str(tmp_path / "no" / "out.mp4")]) == 1
    assert "the folder" in capsys.readouterr().err
    aside = cli_env.with_name("aside.mp4")
    os.replace(cli_env, aside)
    try:
        assert main(["clip", "--movie", "clips", "--shot", "1", "--at", "0.5", str(tmp_path / "out.mp4")]) == 1
        err = capsys.readouterr().err
        assert "was moved or changed since indexing; re-index or put it back" in err
        assert "Traceback" not in err
    finally:
        os.replace(aside, cli_env)



# -- the bot: ▶ under a results list --------------------------------------------------------------
async def posted_results(h, engine: Engine, *, chat: dict | None = None, page_size: int = 5):
    """A stored page of two results of "Clips" (shot 2 best, around 9 s; then shot 1), posted as
    the bot posts an answer; returns (page, the list message, the query message it replies to)."""
    from bot.services.storage import StoredResult
    from bot.services.telegram_io import ResultSender, ThumbnailCache
    from tests.bot_support import ALICE_CHAT, USER_ID

    chat = chat or ALICE_CHAT
    index = engine.open_index("Clips")
    query = h.photo(b"\xff\xd8\xff", chat=chat)["message"]  # the user's screenshot, replied to
    results = [StoredResult(1, 2, None, index.shots[2].start_s, index.shots[2].end_s, 0.9,
                            index.thumbnail(2) or "", False, shot_id=2, frame_s=9.0),
               StoredResult(2, 1, None, 0.0, index.shots[1].end_s, 0.4, index.thumbnail(1) or "", True,
                            shot_id=1, frame_s=1.0)]
    page = await h.app.storage.save_results(chat_id=chat["id"], user_id=USER_ID, reply_to=query["message_id"],
                                            thread_id=None, movie="Clips", page_size=page_size, results=results,
                                            notes=[], slug="clips")
    listing = await ResultSender(h.app.bot, ThumbnailCache()).send_page(page, 0)
    return page, listing.model_dump(mode="json", exclude_none=True), query


def buttons(message: dict) -> list[list[tuple[str, str]]]:
    return [[(b["text"], b["callback_data"]) for b in row] for row in message["reply_markup"]["inline_keyboard"]]


def answer_of(h, update: dict) -> str:
    answer = h.srv.callback_answers[update["callback_query"]["id"]]
    assert answer is not None, "the button was never answered: it would spin"
    return str(answer.get("text", ""))


async def test_play_button_sends_the_clip_as_a_video_reply(indexed, tmp_path: Path) -> None:
    from tests.bot_support import ALICE, ALICE_CHAT, bot_harness
    from tests.fake_telegram import callback_update

    engine, _ = indexed
    async with bot_harness(engine, tmp_path) as h:
        page, listing, query = await posted_results(h, engine)
        assert buttons(listing) == [[("▶ 1", f"cl:{page.id}:1"), ("▶ 2", f"cl:{page.id}:2")]]
        press = callback_update(h.srv, chat=ALICE_CHAT, from_user=ALICE, message=listing, data=f"cl:{page.id}:1")
        await h.feed(press)
        assert answer_of(h, press) == "Cutting the clip…"
        [video] = h.srv.calls_of("sendVideo")
        p = video.params
        assert (p["duration"], p["width"], p["height"]) == (10, 480, 270)
        assert p["supports_streaming"] in (True, "true")
        assert p["caption"] == "shot 2 · 00:00:04.0–00:00:14.0"
        assert p["reply_parameters"]["message_id"] == query["message_id"]
        [data] = video.files.values()
        assert 0 < len(data) < 2_000_000  # Telegram takes 50 MB from bots; a clip is far smaller
        (tmp_path / "sent.mp4").write_bytes(data)
        times, frames, info = decode(tmp_path / "sent.mp4")
        assert (info.codec, info.audio, len(frames)) == ("h264", 0, 240) and times[-1] <= MAX_CLIP_S
        # Pressed again (here or by anyone in the chat): the same clip, by Telegram's file id.
        again = callback_update(h.srv, chat=ALICE_CHAT, from_user=ALICE, message=listing, data=f"cl:{page.id}:1")
        await h.feed(again)
        [_, second] = h.srv.calls_of("sendVideo")
        assert second.files == {} and second.params["video"] == video.result["video"]["file_id"]


async def test_more_keeps_the_play_buttons_of_the_list_it_was_under(indexed, tmp_path: Path) -> None:
    from tests.bot_support import ALICE, ALICE_CHAT, USER_ID, bot_harness
    from tests.fake_telegram import callback_update

    engine, _ = indexed
    async with bot_harness(engine, tmp_path) as h:
        page, listing, _ = await posted_results(h, engine, page_size=1)
        assert buttons(listing) == [[("▶ 1", f"cl:{page.id}:1")], [("More (1 left)", f"mr:{page.id}:1")]]
        await h.feed(callback_update(h.srv, chat=ALICE_CHAT, from_user=ALICE, message=listing,
                                     data=f"mr:{page.id}:1"))
        first_now = h.srv.messages[(USER_ID, listing["message_id"])]
        assert buttons(first_now) == [[("▶ 1", f"cl:{page.id}:1")]]
        second = h.srv.calls_of("sendMessage")[-1].result
        assert buttons(second) == [[("▶ 2", f"cl:{page.id}:2")]]


async def test_forged_expired_or_other_chats_play_buttons_send_nothing(indexed, tmp_path: Path) -> None:
    from tests.bot_support import ALICE, ALICE_CHAT, BOB, GROUP, bot_harness
    from tests.fake_telegram import callback_update

    engine, _ = indexed
    async with bot_harness(engine, tmp_path) as h:
        page, listing, _ = await posted_results(h, engine)
        _, group_listing, _ = await posted_results(h, engine, chat=GROUP)
        cases = [(ALICE_CHAT, listing, f"cl:{page.id}:3"),  # no result 3 on the page
                 (ALICE_CHAT, listing, "cl:AAAAAAAAAAAAAAAA:1"),  # no such page
                 (GROUP, group_listing, f"cl:{page.id}:1")]  # Alice's page, pressed in the group
        for chat, message, data in cases:
            press = callback_update(h.srv, chat=chat, from_user=BOB, message=message, data=data)
            await h.feed(press)
            assert answer_of(h, press) == "These results have expired. Send the screenshot again."
        for data in (f"cl:{page.id}:٢", f"cl:{page.id}:0", f"cl:{page.id}:+1", "cl:/etc/passwd:1"):
            press = callback_update(h.srv, chat=ALICE_CHAT, from_user=ALICE, message=listing, data=data)
            await h.feed(press)
            assert answer_of(h, press) == "This button no longer works. Send the screenshot again."
        assert h.srv.calls_of("sendVideo") == []


async def test_play_button_of_a_moved_video_or_a_frames_folder_is_answered_politely(indexed, tmp_path: Path,
                                                                                   caplog) -> None:
    from bot.services.storage import StoredResult
    from bot.services.telegram_io import ResultSender, ThumbnailCache
    from tests.bot_support import ALICE, ALICE_CHAT, USER_ID, bot_harness
    from tests.fake_telegram import callback_update

    engine, video = indexed
    frames = make_frames_folder(tmp_path / "frames", "dump", {(1, 1): 2, (1, 2): 2})
    engine.index(frames, "Dump")
    async with bot_harness(engine, tmp_path) as h:
        page, listing, _ = await posted_results(h, engine)
        aside = video.with_name("aside.mp4")
        os.replace(video, aside)
        try:
            press = callback_update(h.srv, chat=ALICE_CHAT, from_user=ALICE, message=listing, data=f"cl:{page.id}:2")
            await h.feed(press)
        finally:
            os.replace(aside, video)
        moved = answer_of(h, press)
        assert moved.startswith("I can't cut clips of this movie right now: its video was moved or changed")
        assert str(video.parent) not in moved  # the server's paths are for the log
        assert "re-index or put it back" in caplog.text
        dump = await h.app.storage.save_results(
            chat_id=USER_ID, user_id=USER_ID, reply_to=None, thread_id=None, movie="Dump", page_size=5,
            results=[StoredResult(1, 1, 1, 0.0, 0.4, 0.5, "", False, shot_id=1, frame_s=0.0)], notes=[], slug="dump")
        dump_list = (await ResultSender(h.app.bot, ThumbnailCache()).send_page(dump, 0)).model_dump(mode="json")
        press = callback_update(h.srv, chat=ALICE_CHAT, from_user=ALICE, message=dump_list, data=f"cl:{dump.id}:1")
        await h.feed(press)
        assert answer_of(h, press) == ("This movie was indexed from a frames folder: there is no video to cut a "
                                       "clip from. The thumbnail still shows the shot.")
        assert h.srv.calls_of("sendVideo") == []


# -- real footage ------------------------------------------------------------------------------------
@requires_shared
def test_a_titanic_results_clip_shows_the_moment_it_matched(titanic_engine: Engine) -> None:
    from tests.conftest import DATA, TITANIC

    result = titanic_engine.search("Titanic", [DATA / "titanic" / "body_rose.jpg"], top=1).results[0]
    clip = titanic_engine.clip("Titanic", result.shot, result.frame_s)
    assert result.start_s - 1e-3 <= clip.start_s <= result.frame_s <= clip.end_s <= result.end_s + 1e-3
    assert clip.duration_s <= MAX_CLIP_S + 1e-6 and max(clip.width, clip.height) <= 480
    assert clip.width % 2 == 0 and clip.height % 2 == 0
    times, frames, info = decode(clip.path)
    assert (info.codec, info.audio) == ("h264", 0)
    fps = len(frames) / (times[-1] + times[1])
    # The clip's frame at the matched moment is the film's frame then, not one a few frames off.
    k = int(np.argmin([abs(clip.start_s + t - result.frame_s) for t in times]))
    moment = clip.start_s + times[k]
    offsets = (-0.5, -2 / fps, -1 / fps, 0.0, 1 / fps, 2 / fps, 0.5)
    candidates = [source_frame(TITANIC, moment + d + 1e-3, (clip.width, clip.height)) for d in offsets]
    assert closest(frames[k], candidates) == 3
    assert np.abs(frames[k].astype(int) - candidates[3].astype(int)).mean() < 6  # the same picture, H.264's losses
