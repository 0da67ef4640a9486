"""Interrupted index builds resume from their last checkpoint, under the same source and settings
only; the previous index stays usable meanwhile. Synthetic video, random YOLO, tiny DINOv2."""

from __future__ import annotations

import fcntl
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
    (build / "pid").write_text(f"{os.getppid()}\nHeat\n")
    with open(build / "pid") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # alive: another castfinder at work holds the build's lock
        with pytest.raises(BadInputError, match=rf"already being indexed by another process \(pid {os.getppid()}\)"):
            engine.index(video, "Heat")
        tidy_index_dir(engine.settings.index_dir)
    assert (build / CHECKPOINT).is_file() and (build / "pid").is_file()


def test_after_kill_9_the_same_command_resumes_and_says_so(tmp_path: Path, tiny_dinov2: Path) -> None:
    import json
    import signal
    import subprocess
    import sys
    import time

    # 24 shots of a second each: long enough to be killed between two checkpoints.
    colours = [(((200, 30, 40 + 5 * i) if i % 2 else (30, 200, 200 - 5 * i)), 24) for i in range(24)]
    video = make_video(tmp_path / "long.mp4", colours)
    index_dir = tmp_path / "indexes"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASTFINDER_")}
    env.update(HF_HUB_OFFLINE="1", YOLO_OFFLINE="1", CASTFINDER_INDEX_DIR=str(index_dir),
               CASTFINDER_DETECTOR="yolov8n.yaml", CASTFINDER_DINOV2_MODEL=str(tiny_dinov2),
               CASTFINDER_CHANNELS="dinov2", CASTFINDER_DEVICE="cpu", CASTFINDER_DET_CONF="1e-4",
               CASTFINDER_DET_IMGSZ="160", CASTFINDER_MIN_PERSON_PX="4", CASTFINDER_SAMPLE_FPS="4",
               CASTFINDER_CHECKPOINT_S="2")
    cmd = [sys.executable, "-m", "castfinder", "index", str(video), "--movie", "Heat", "--quiet", "--json"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list(index_dir.glob(f"{BUILDING_PREFIX}heat-*/{CHECKPOINT}")):
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.02)  # polling for the file, not waiting for a guess
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    [build] = _builds(index_dir)
    assert (build / "pid").is_file() and not (index_dir / "heat").exists()  # killed: nothing published
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["resumed_at_s"] and 0 < report["resumed_at_s"] < 24
    assert report["shots"] == 24 and not _builds(index_dir)
    db = sqlite3.connect(index_dir / "heat" / "meta.sqlite")
    try:
        shots = [r[0] for r in db.execute("SELECT id FROM shots ORDER BY id")]
        assert shots == list(range(1, 25))  # every shot once, none lost or doubled across the two runs
        crop_ids = [r[0] for r in db.execute("SELECT id FROM crops ORDER BY id")]
        assert crop_ids == list(range(len(crop_ids)))
    finally:
        db.close()
