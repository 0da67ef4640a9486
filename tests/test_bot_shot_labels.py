"""Shots as the bot names them: a frames-folder index numbers shots per scene, so its results say
`scene/shot` (as the CLI does); a video's shots are numbered through the film and stay plain.
Real indexes of synthetic media, built with the random detector and the tiny DINOv2."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from core import Engine
from tests.bot_support import USER_ID, Harness, bot_harness, jpeg
from tests.media import make_frames_folder, make_video

# A random YOLO's head starts with class probabilities near 1e-4: below that it proposes boxes.
RANDOM_YOLO = dict(det_conf=1e-4, det_imgsz=160, min_person_px=4, sample_fps=4.0)
CAPTION = re.compile(r"^#\d+ · shot (\S+) · ")


@pytest.fixture
def engine(make_settings, tmp_path: Path) -> Engine:
    import torch

    torch.manual_seed(0)  # the random detector's boxes, hence every shot's crops, are the same each run
    engine = Engine(make_settings(**RANDOM_YOLO))
    video = make_video(tmp_path / "clip.mp4", [((30, 10, 10), 30), ((40, 230, 240), 20), ((0, 0, 160), 40)])
    engine.index(video, "Clip")
    # Shot 3 of scene 1 and shot 3 of scene 2 are different shots.
    frames = make_frames_folder(tmp_path / "frames", "dump", {(1, 3): 2, (2, 3): 2, (2, 4): 2})
    engine.index(frames, "Dump")
    return engine


async def ask(h: Harness, movie: str) -> tuple[list[str], str]:
    """Set the chat's movie, send an album of two screenshots (each searched for its main person:
    no picker), and return the shot labels of the album's captions and the list's text."""
    await h.feed(h.text(f"/movie {movie}"))
    before = len(h.srv.calls_of("sendMediaGroup"))
    parts = [h.photo(jpeg(colour, (160, 96)), media_group_id=f"album-{movie}") for colour in ("navy", "olive")]
    scheduled = len(h.timer.handles) + len(parts)  # each part (re-)arms the album's timer

    async def release_when_collected() -> None:
        await h.timer.wait_scheduled(scheduled)
        h.timer.fire()

    await asyncio.gather(*(h.feed(p) for p in parts), release_when_collected())
    album = h.srv.calls_of("sendMediaGroup")[before:]
    assert len(album) == 1
    labels = []
    for media in album[0].params["media"]:
        match = CAPTION.match(media["caption"])
        assert match, media["caption"]
        labels.append(match[1])
    listing = h.srv.calls_of("sendMessage")[-1].result["text"]  # as Telegram renders it
    return labels, listing


async def test_frames_folder_results_say_scene_and_shot_and_video_results_the_shot(engine, tmp_path: Path) -> None:
    async with bot_harness(engine, tmp_path) as h:
        labels, listing = await ask(h, "Dump")
        assert sorted(labels) == ["1/3", "2/3", "2/4"]
        for label in labels:
            assert f" · shot {label} · " in listing

        labels, listing = await ask(h, "Clip")
        assert sorted(labels) == ["1", "2", "3"]
        for label in labels:
            assert f" · shot {label} · " in listing
        assert "/" not in " ".join(line.split(" · ")[1] for line in listing.splitlines() if line.startswith("#"))
        assert [r["outcome"] for r in await h.app.storage.recent_queries()] == ["ok", "ok"]
        assert (await h.app.storage.chat(USER_ID)).movie_slug == "clip"
