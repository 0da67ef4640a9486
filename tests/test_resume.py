"""Interrupted index builds resume from their last checkpoint, under the same source and settings
only; the previous index stays usable meanwhile. Synthetic video, random YOLO, tiny DINOv2."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from core import BadInputError, Engine, Progress
from core.store import BUILDING_PREFIX, CHECKPOINT, tidy_index_dir
from tests.media import make_video
from tests.test_indexing import RANDOM_YOLO, SEGMENTS

# Shots end at 1.25 s, 2.08 s and 3.75 s: checkpoints at 0.5 s of film fall after shots 1 and 2.
CHECKPOINT_EVERY = dict(RANDOM_YOLO, checkpoint_s=0.5)


@pytest.fixture(autouse=True)
def _seeded() -> None:
    import torch

    torch.manual_seed(0)


@pytest.fixture
def video(tmp_path: Path) -> Path:
    return make_video(tmp_path / "synthetic.mp4", SEGMENTS)


def _interrupt_at(film_s: float):
    def progress(p: Progress) -> None:
        if p.stage == "index" and p.done >= film_s:
            raise KeyboardInterrupt
    return progress


def _crops(path: Path) -> list[tuple]:
    db = sqlite3.connect(path / "meta.sqlite")
    try:
        return db.execute("SELECT shot_id, frame_index, round(x1, 2), round(y1, 2), round(x2, 2), round(y2, 2) "
                          "FROM crops ORDER BY id").fetchall()
    finally:
        db.close()


def _builds(index_dir: Path) -> list[Path]:
    return sorted(index_dir.glob(f"{BUILDING_PREFIX}*"))


def test_an_interrupted_build_resumes_where_it_stopped_and_matches_a_full_build(make_settings, video: Path) -> None:
    engine = Engine(make_settings(**CHECKPOINT_EVERY))
    full = engine.index(video, "Reference")
    with pytest.raises(KeyboardInterrupt):
        engine.index(video, "Heat", progress=_interrupt_at(2.5))  # inside shot 3, after the second checkpoint
    [build] = _builds(engine.settings.index_dir)
    assert (build / CHECKPOINT).is_file() and not (build / "pid").exists()
    assert engine.movies() and [m.slug for m in engine.movies()] == ["reference"]  # nothing half-built loads
    tidy_index_dir(engine.settings.index_dir)  # a start-up tidy keeps what can be resumed
    assert _builds(engine.settings.index_dir) == [build]

    seen: list[Progress] = []
    resumed = engine.index(video, "Heat", progress=seen.append)
    assert resumed.resumed_at_s == pytest.approx(SEGMENTS[0][1] / 24 + SEGMENTS[1][1] / 24, abs=0.01)
    first = [p for p in seen if p.stage == "index"][0]
    assert first.done == pytest.approx(resumed.resumed_at_s, abs=0.1) and "resumed at" in first.message
    assert not [p for p in seen if p.stage == "shots"]  # the shots came from the checkpoint
    assert not _builds(engine.settings.index_dir)
    # The same index as one uninterrupted build: shots, crops, vectors, counts.
    assert _crops(resumed.movie.path) == _crops(full.movie.path)
    assert (resumed.movie.shots, resumed.movie.vectors) == (full.movie.shots, full.movie.vectors)
    assert (resumed.frames_sampled, resumed.persons_detected, resumed.crops_kept, resumed.duplicates_dropped) == \
        (full.frames_sampled, full.persons_detected, full.crops_kept, full.duplicates_dropped)
    hits = engine.search("heat", [np.full((60, 60, 3), 90, np.uint8)], top=3).results
    assert hits and {h.shot for h in hits} <= {1, 2, 3}


def test_rows_written_after_the_checkpoint_are_dropped_on_resume(make_settings, video: Path) -> None:
    """As after kill -9: the vector files hold more rows than the checkpoint, the database does not."""
    engine = Engine(make_settings(**CHECKPOINT_EVERY))
    full = engine.index(video, "Reference")
    with pytest.raises(KeyboardInterrupt):
        engine.index(video, "Heat", progress=_interrupt_at(2.5))
    [build] = _builds(engine.settings.index_dir)
    for f in (build / "vectors").glob("*.f32"):
        with open(f, "ab") as fh:
            fh.write(np.ones((3, 32), np.float32).tobytes())  # a torn write past the checkpoint
    (build / "pid").write_text("999999999")  # a process that is gone
    resumed = engine.index(video, "Heat")
    assert resumed.resumed_at_s is not None
    assert _crops(resumed.movie.path) == _crops(full.movie.path)
    assert resumed.movie.vectors == full.movie.vectors


@pytest.mark.parametrize("change", ["settings", "file"])
def test_a_checkpoint_is_never_reused_for_other_settings_or_another_file(make_settings, video: Path,
                                                                        change: str) -> None:
    engine = Engine(make_settings(**CHECKPOINT_EVERY))
    with pytest.raises(KeyboardInterrupt):
        engine.index(video, "Heat", progress=_interrupt_at(2.5))
    [old_build] = _builds(engine.settings.index_dir)
    if change == "settings":
        engine = Engine(make_settings(**dict(CHECKPOINT_EVERY, dedup_threshold=0.9)))
    else:
        make_video(video, SEGMENTS[:2])  # the file was replaced by another cut
        os.utime(video, ns=(1, 1))
    report = engine.index(video, "Heat")
    assert report.resumed_at_s is None
    assert not old_build.exists() and not _builds(engine.settings.index_dir)


def test_a_build_owned_by_a_live_process_is_not_touched(make_settings, video: Path) -> None:
    engine = Engine(make_settings(**CHECKPOINT_EVERY))
    with pytest.raises(KeyboardInterrupt):
        engine.index(video, "Heat", progress=_interrupt_at(2.5))
    [build] = _builds(engine.settings.index_dir)
    (build / "pid").write_text(str(os.getppid()))  # alive: another castfinder at work
    with pytest.raises(BadInputError, match="already being indexed"):
        engine.index(video, "Heat")
    assert (build / CHECKPOINT).is_file()
