"""The screen-time timeline: the numbers, the picture, `search --timeline` and the bot's answer."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.keyboards import MoreResults
from castfinder.cli import main
from core import Person, SearchResponse, ShotResult
from core.search import timeline as tl
from core.types import Timeline, TimelineShot
from tests import test_cli
from tests.bot_support import ALICE, ALICE_CHAT, USER_ID, CatalogEngine, bot_harness, jpeg, movie_info
from tests.fake_telegram import callback_update

# test_cli's fixtures: a tiny CLI index in seconds, and a query image.
env, indexed, query = test_cli.env, test_cli.indexed, test_cli.query

BLUE = tl.CONFIDENT


def result(rank: int, start: float, end: float, confidence: float, *, low: float = 0.5,
           thumbnail: str | None = None) -> ShotResult:
    return ShotResult(rank=rank, shot=rank, shot_id=rank, scene=None, start_s=start, end_s=end, score=confidence,
                      thumbnail=thumbnail, frame_s=start, bbox=(0.0, 0.0, 1.0, 1.0), similarity=confidence,
                      confidence=confidence, low_confidence=confidence < low)


def picture(timeline: Timeline) -> Image.Image:
    data = tl.draw_timeline(timeline, "Heat — where this character appears")
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    img = Image.open(io.BytesIO(data))
    img.load()
    return img.convert("RGB")


def strip_colour(img: Image.Image, seconds: float, duration: float) -> tuple[int, int, int]:
    """The colour in the middle of the strip at film time `seconds`."""
    return img.getpixel((round(tl.x_of(seconds, duration)), (tl.STRIP_TOP + tl.STRIP_BOTTOM) // 2))


def is_orange(rgb: tuple[int, int, int]) -> bool:
    r, g, b = rgb
    return r > 200 and b < 170 and r - b > 80


# -- numbers ------------------------------------------------------------------------------------
def test_summary_numbers_of_a_hand_built_result_list() -> None:
    # A 100-minute film; three confident shots (6 + 10 + 4 s) and one weak (not counted).
    results = [result(1, 600.0, 606.0, 0.9), result(2, 3000.0, 3010.0, 0.8), result(3, 120.0, 124.0, 0.7),
               result(4, 5000.0, 5030.0, 0.2)]
    timeline = Timeline.from_results(6000.0, results)
    assert timeline.screen_time_s == pytest.approx(20.0)
    assert timeline.share == pytest.approx(20.0 / 6000.0)
    assert (timeline.first_s, timeline.last_s) == (120.0, 3000.0)  # in film order, not rank order
    assert len(timeline.confident) == 3 and len(timeline.weak) == 1 and timeline.weak_time_s == pytest.approx(30.0)
    assert timeline.to_json() == {"screen_time_s": 20.0, "share": 0.00333, "first_s": 120.0, "last_s": 3000.0,
                                  "shots": 3, "weak_shots": 1, "weak_time_s": 30.0, "duration_s": 6000.0,
                                  "capped": False}
    assert tl.summary_line(timeline) == "≈ 20 s in 3 shots (0.3 % of the film) · first 0:02:00 · last 0:50:00"


def test_a_shot_is_counted_once_clipped_to_the_film_and_confident_wins() -> None:
    shots = [TimelineShot(7, 10.0, 14.0, 0.3, True), TimelineShot(7, 10.0, 14.0, 0.9, False),
             TimelineShot(8, 18.0, 25.0, 0.9, False)]  # runs past the end of a 20 s clip
    timeline = Timeline.of(20.0, shots)
    assert [(s.shot_id, s.weak) for s in timeline.shots] == [(7, False), (8, False)]
    assert timeline.screen_time_s == pytest.approx(6.0) and timeline.share == pytest.approx(0.3)


def test_summary_lines_say_what_was_found() -> None:
    assert tl.summary_line(Timeline(20.0, ())) == "No matching shot"
    weak = Timeline.from_results(3000.0, [result(1, 300.0, 305.0, 0.2), result(2, 1200.0, 1212.0, 0.1)])
    assert tl.summary_line(weak) == "No confident match; 2 weak matches (≈ 17 s)"
    assert weak.first_s is None and weak.to_json()["screen_time_s"] == 0.0
    one = Timeline.from_results(7200.0, [result(1, 4000.0, 4252.0, 0.9)])
    assert tl.summary_line(one) == "≈ 4 min 12 s in 1 shot (3.5 % of the film) · at 1:06:40"
    capped = Timeline.of(60.0, [TimelineShot(1, 0.0, 6.0, 0.9, False)], capped=True)
    assert tl.summary_line(capped).startswith("at least 6 s in 1 shot (10 % of the film)")


@pytest.mark.parametrize(("duration", "first", "last"), [
    (20.0, "00:00", "00:20"), (45 * 60.0, "00:00", "45:00"), (7200.0, "0:00", "2:00"), (5400.0, "0:00", "1:30")])
def test_axis_ticks_are_round_and_readable(duration: float, first: str, last: str) -> None:
    ticks = tl.axis_ticks(duration)
    assert ticks[0][1] == first and ticks[-1][1] == last
    assert 4 <= len(ticks) <= tl.MAX_TICKS + 1
    steps = {round(b[0] - a[0], 6) for a, b in zip(ticks, ticks[1:])}
    assert len(steps) == 1  # evenly spaced


# -- the picture --------------------------------------------------------------------------------
def test_the_picture_is_a_wide_png_with_marks_where_the_shots_are() -> None:
    duration = 7200.0  # a two-hour film, three matches: two confident, one weak
    timeline = Timeline.from_results(duration, [result(1, 600.0, 603.5, 0.9), result(2, 3700.0, 3702.0, 0.8),
                                                result(3, 7100.0, 7108.0, 0.2)])
    img = picture(timeline)
    assert img.size == (tl.WIDTH, tl.HEIGHT) == (1280, 360)
    assert strip_colour(img, 601.0, duration) == BLUE  # a 3.5 s shot of a 2-hour film is still visible
    assert strip_colour(img, 3701.0, duration) == BLUE
    assert strip_colour(img, 2000.0, duration) == tl.FILM  # between matches: the bare film
    assert strip_colour(img, 6000.0, duration) == tl.FILM
    # The weak match is orange (hatched: light and full orange), never the confident blue.
    weak_column = [img.getpixel((round(tl.x_of(7104.0, duration)), y)) for y in range(tl.STRIP_TOP, tl.STRIP_BOTTOM)]
    assert all(is_orange(c) for c in weak_column) and BLUE not in weak_column
    assert {tl.WEAK_FILL, tl.WEAK_HATCH} <= set(weak_column)  # two tones: a pattern, not only a colour


def test_weak_and_confident_marks_differ_by_colour_in_a_short_clip() -> None:
    duration = 20.0
    img = picture(Timeline.from_results(duration, [result(1, 2.4, 8.8, 0.9), result(2, 12.0, 14.0, 0.3)]))
    confident = {strip_colour(img, t, duration) for t in (3.0, 5.0, 8.5)}
    assert confident == {BLUE}
    assert is_orange(strip_colour(img, 13.0, duration))
    assert strip_colour(img, 10.0, duration) == tl.FILM and strip_colour(img, 18.0, duration) == tl.FILM
    # Marks start where their shot starts (within the pixel of rounding).
    x = round(tl.x_of(2.4, duration))
    row = (tl.STRIP_TOP + tl.STRIP_BOTTOM) // 2
    assert img.getpixel((x - 2, row)) == tl.FILM and img.getpixel((x + 1, row)) == BLUE


def test_pictures_of_no_match_and_of_many_matches_are_drawn() -> None:
    assert picture(Timeline(20.0, ())).size == (1280, 360)
    many = Timeline.of(6300.0, [TimelineShot(i, 30.0 * i, 30.0 * i + 5, 0.9, i % 7 == 0) for i in range(200)])
    img = picture(many)
    assert strip_colour(img, 30.0 * 3 + 2, 6300.0) == BLUE and is_orange(strip_colour(img, 30.0 * 7 + 2, 6300.0))


# -- the engine and the CLI ---------------------------------------------------------------------
def test_search_json_adds_the_timeline_summary_and_the_flag_writes_the_picture(
        indexed: Path, query: Path, tmp_path: Path, capsys) -> None:
    out_png = tmp_path / "timeline.png"
    assert main(["search", "--movie", "heat", "--top", "1", "--json", "--timeline", str(out_png), str(query)]) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)  # stdout is still exactly one JSON object
    assert set(data) == {"movie", "results", "timeline"} and len(data["results"]) == 1
    summary = data["timeline"]
    # The timeline counts every confident shot of the film, not only the one result asked for.
    confident = summary["shots"]
    assert summary["screen_time_s"] <= summary["duration_s"] and 0.0 <= summary["share"] <= 1.0
    assert summary["duration_s"] == pytest.approx(3.75, abs=0.05)  # 90 frames at 24 fps
    if confident:
        assert summary["first_s"] <= summary["last_s"]
    assert f"Saved {out_png}" in captured.err and "Screen time:" in captured.err
    with Image.open(out_png) as img:
        assert img.format == "PNG" and img.size == (1280, 360)


def test_the_timeline_counts_matches_beyond_the_page(make_settings, tmp_path: Path) -> None:
    from core import Engine
    from tests.media import make_video
    engine = Engine(make_settings(low_score=1e-6, det_conf=0.0001, det_imgsz=160, min_person_px=4))
    engine.index(make_video(tmp_path / "heat.mp4", test_cli.SEGMENTS), "Heat")
    q = tmp_path / "q.png"
    Image.new("RGB", (64, 96), (200, 30, 30)).save(q)
    response = engine.search("Heat", [q], top=1)
    assert response.timeline is not None and len(response.results) == 1
    # Every shot is a confident match with the line (almost) at 0: three on the timeline, one on the page.
    assert len(response.timeline.confident) == 3
    assert response.timeline.screen_time_s == pytest.approx(response.timeline.duration_s, abs=0.05)
    capped = Engine(make_settings(low_score=1e-6, timeline_max_shots=2, det_conf=0.0001, det_imgsz=160,
                                  min_person_px=4)).search("Heat", [q], top=1).timeline
    assert capped is not None and len(capped.confident) == 2 and capped.capped


def test_search_timeline_bad_paths_get_one_message_before_any_work(indexed: Path, query: Path, tmp_path: Path,
                                                                   capsys) -> None:
    missing = tmp_path / "no-such-folder" / "t.png"
    assert main(["search", "--movie", "heat", "--timeline", str(missing), str(query)]) == 1
    err = capsys.readouterr().err
    assert "--timeline" in err and "does not exist" in err and "Traceback" not in err
    assert not missing.parent.exists()
    assert main(["search", "--movie", "heat", "--timeline", str(tmp_path), str(query)]) == 1
    err = capsys.readouterr().err
    assert "--timeline" in err and "a folder" in err
    assert main(["search", "--movie", "heat", "--timeline", "/dev/full", str(query)]) == 1
    assert "--timeline /dev/full: could not write it: no space left on the disk" in capsys.readouterr().err


def test_search_prints_the_summary_line_with_the_table(indexed: Path, query: Path, tmp_path: Path, capsys) -> None:
    out_png = tmp_path / "t.png"
    assert main(["search", "--movie", "heat", "--timeline", str(out_png), str(query)]) == 0
    out = capsys.readouterr().out
    assert "Screen time:" in out and "the matched shots' lengths added up" in out and f"Saved {out_png}" in out
    assert out_png.read_bytes().startswith(b"\x89PNG")


# -- the bot ------------------------------------------------------------------------------------
class TimelineEngine(CatalogEngine):
    """One 100-minute movie, "Heat", with 8 results (6 confident, 2 weak) and 4 more confident
    shots beyond them; the real timeline drawing."""

    def __init__(self, tmp_path: Path) -> None:
        super().__init__([movie_info("Heat", "heat", duration_s=6000.0)], tmp_path)
        folder = tmp_path / "thumbs"
        folder.mkdir()
        self.results = []
        for i in range(1, 9):
            thumb = folder / f"shot_{i}.jpg"
            Image.new("RGB", (64, 36), (i * 20, 40, 90)).save(thumb, "JPEG")
            self.results.append(result(i, 600.0 * i, 600.0 * i + 10, 0.9 if i <= 6 else 0.3, thumbnail=str(thumb)))
        extra = [TimelineShot(100 + i, 100.0 + 50 * i, 105.0 + 50 * i, 0.6, False) for i in range(4)]
        self.timeline = Timeline.of(6000.0, [*Timeline.from_results(6000.0, self.results).shots, *extra])

    def find_people(self, image: Any) -> list[Person]:
        self.load_image(image)
        return []  # nobody: the screenshot is searched whole, no picker

    def search(self, movie, queries, *, top=5, aggregation=None, channels=None, progress=None) -> SearchResponse:
        return SearchResponse(movie="Heat", slug="heat", results=self.results[:top], query_crops=1,
                              whole_image_queries=0, aggregation="max", elapsed_s=0.01, timeline=self.timeline)


async def test_the_bot_answer_has_the_timeline_and_more_does_not_resend_it(tmp_path: Path) -> None:
    engine = TimelineEngine(tmp_path)
    assert [r.low_confidence for r in engine.results].count(True) == 2
    async with bot_harness(engine, tmp_path) as h:
        await h.app.storage.set_movie(USER_ID, "heat", "Heat")
        await h.feed(h.photo(jpeg()))
        [album] = h.srv.calls_of("sendMediaGroup")
        [photo] = h.srv.calls_of("sendPhoto")
        listing = h.srv.calls_of("sendMessage")[-1]
        # In reading order: the thumbnails, the timeline, then the list with its More button last.
        assert h.srv.calls.index(album) < h.srv.calls.index(photo) < h.srv.calls.index(listing)
        [(part, data)] = photo.files.items()
        assert photo.filenames[part] == "timeline.png"
        with Image.open(io.BytesIO(data)) as img:
            assert img.size == (1280, 360)
        caption = photo.result["caption"]  # as Telegram shows it (HTML parsed)
        # 10 confident shots of 10 s and 5 s over the film: 6 × 10 + 4 × 5 = 80 s of 6000.
        assert caption.startswith("🕒 Screen time ≈ 1 min 20 s in 10 shots (1.3 % of the film)")
        assert "First seen 0:01:40 · last 1:00:00" in caption
        assert "Hatched: 2 weak matches, not counted." in caption
        assert photo.params["reply_parameters"]["message_id"] == album.params["reply_parameters"]["message_id"]
        # "More" sends the next page's thumbnails and list, and no second timeline.
        button = listing.params["reply_markup"]["inline_keyboard"][-1][0]["callback_data"]  # More: the last row
        assert MoreResults.unpack(button).offset == 5
        before = len(h.srv.calls_of("sendPhoto"))
        await h.feed(callback_update(h.srv, chat=ALICE_CHAT, from_user=ALICE, message=listing.result, data=button))
        assert "best shots 6–8 of 8" in h.srv.calls_of("sendMessage")[-1].result["text"]
        assert len(h.srv.calls_of("sendMediaGroup")) == 2
        assert len(h.srv.calls_of("sendPhoto")) == before == 1
