"""What one build of an index keeps while it runs: each open shot's state, the counts, the stage
timer and the run state the indexer threads through its steps (core.indexing.indexer)."""

from __future__ import annotations

import itertools
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from typing import Iterator

import cv2
import numpy as np

from ..models.detector import Detection
from ..naming import format_ts
from ..settings import Settings
from ..store import Checkpoint, IndexWriter
from ..types import Progress, ProgressCallback, Shot
from .sources import MovieSource, SampledFrame
from .tracks import ShotTracker

# Still frames are compared at this size: big enough for a turned head, small enough to cost
# nothing beside detection.
_LOOK_SIZE = (64, 36)


def look(image: np.ndarray) -> np.ndarray:
    """A frame reduced to a tiny grey picture for cheap comparison."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, _LOOK_SIZE, interpolation=cv2.INTER_AREA).astype(np.int16)


def still(a: np.ndarray, b: np.ndarray | None, threshold: float) -> bool:
    """Whether two looks differ by less than `threshold` grey levels on average."""
    return b is not None and float(np.mean(np.abs(a - b))) < threshold


@dataclass
class ShotCounts:
    """What one shot adds to an index's counts (the manifest's, and the report's)."""

    frames_sampled: int = 0
    frames_still: int = 0  # skipped before detection: like the shot's last processed frame
    persons_detected: int = 0
    crops_kept: int = 0
    duplicates_dropped: int = 0


@dataclass
class BuildCounts(ShotCounts):
    """The counts of the shots written so far. The field order is the order of the keys in a
    checkpoint and in the manifest."""

    shots_without_people: int = 0
    shots_done: int = 0  # the checkpoint's alone: a shot without a decodable frame is never done

    @classmethod
    def of(cls, counts: dict[str, int]) -> BuildCounts:
        """The counts a checkpoint saved (any it lacks are 0)."""
        return cls(**{f.name: counts.get(f.name, 0) for f in fields(cls)})

    def add(self, shot: ShotCounts, persons: int) -> None:
        for f in fields(ShotCounts):
            setattr(self, f.name, getattr(self, f.name) + getattr(shot, f.name))
        self.shots_without_people += persons == 0
        self.shots_done += 1

    def for_checkpoint(self) -> dict[str, int]:
        return asdict(self)

    def totals(self) -> dict[str, int]:
        """The counts an index records and reports."""
        return {key: value for key, value in asdict(self).items() if key != "shots_done"}


@dataclass
class ShotState:
    """What the indexer remembers about a shot being processed."""

    shot_id: int
    start_s: float
    tracker: ShotTracker
    kept: list[np.ndarray] = field(default_factory=list)  # embeddings kept, for de-duplication
    persons: int = 0
    thumb: np.ndarray | None = None  # the frame with the most confident person so far
    thumb_score: float = -1.0
    thumb_time: float = 0.0
    last_look: np.ndarray | None = None  # the last processed frame, tiny, for skipping still frames
    counts: ShotCounts = field(default_factory=ShotCounts)

    def repeats(self, frame: SampledFrame, still_diff: float) -> bool:
        """Whether `frame` barely differs from the last frame processed in this shot: then it is
        skipped before detection, which would find the same people in the same places. Counts it."""
        if still_diff <= 0:
            return False
        tiny = look(frame.image)
        if still(tiny, self.last_look, still_diff):
            self.counts.frames_still += 1
            return True
        self.last_look = tiny
        return False

    def saw(self, frame: SampledFrame, people: list[Detection]) -> None:
        """The people detected in one of the shot's frames (not yet embedded)."""
        self.counts.frames_sampled += 1
        best = max((d.score for d in people), default=0.0)
        if self.thumb is None or best > self.thumb_score:
            self.thumb, self.thumb_score, self.thumb_time = frame.image, best, frame.time_s
        self.persons += len(people)
        self.counts.persons_detected += len(people)

    def stored(self, kept: bool) -> None:
        """One of the shot's crops was written, or dropped as a near-duplicate of one that was."""
        if kept:
            self.counts.crops_kept += 1
        else:
            self.counts.duplicates_dropped += 1


class StageTimer:
    """Seconds spent in each stage of a build (the manifest's `seconds`)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - start)


class Pace:
    """Film time per second of work since this run started, and the time left at that pace."""

    def __init__(self, start_s: float) -> None:
        self.start_s = start_s
        self.t0 = time.perf_counter()

    def message(self, film_s: float, kept: int, total_s: float) -> str:
        elapsed = time.perf_counter() - self.t0
        done = film_s - self.start_s
        parts = [f"{format_ts(film_s, decimals=0)} of {format_ts(total_s, decimals=0)}", f"{kept} people kept"]
        if elapsed > 1 and done > 0:
            speed = done / elapsed
            parts += [f"{speed:.2f}× real time", f"ETA {format_ts(max(0.0, total_s - film_s) / speed, decimals=0)}"]
        if self.start_s:
            parts.append(f"resumed at {format_ts(self.start_s, decimals=0)}")
        return ", ".join(parts)


@dataclass
class BuildState:
    """One run of the indexer, between the frames it reads and the index it writes.

    Frames arrive in film order: each shot's sampled frames, then the shot itself (its end). A
    frame opens its shot's state; frames wait in `batch` for detection; a shot is written (its
    row, thumbnail and counts) once a later shot's frames have been detected, or at a checkpoint
    or the film's end, when everything open is written first."""

    settings: Settings
    source: MovieSource
    writer: IndexWriter
    checkpoint: Checkpoint  # what is written so far: saved at every checkpoint
    timer: StageTimer
    progress: ProgressCallback
    shots: list[Shot]  # every shot of the film so far, in order
    counts: BuildCounts  # of the shots written
    track_ids: Iterator[int]  # shared by every shot's tracker: track ids are unique in the movie
    pace: Pace
    total_s: float  # the film's length as known when the run started
    last_checkpoint_s: float
    ended: dict[int, Shot] = field(default_factory=dict)  # shots whose end the source told, not yet written
    states: dict[int, ShotState] = field(default_factory=dict)  # shots with frames taken, not yet written
    batch: list[SampledFrame] = field(default_factory=list)  # frames waiting for detection

    @classmethod
    def begin(cls, settings: Settings, source: MovieSource, writer: IndexWriter, checkpoint: Checkpoint,
              timer: StageTimer, progress: ProgressCallback) -> BuildState:
        """A run from `checkpoint`: the shots it holds are written already."""
        return cls(
            settings, source, writer, checkpoint, timer, progress,
            shots=[Shot(**shot) for shot in checkpoint.shots if shot["id"] <= checkpoint.done_shot],
            counts=BuildCounts.of(checkpoint.counts),
            track_ids=itertools.count(checkpoint.next_track),
            pace=Pace(checkpoint.film_s),
            total_s=max(source.estimated_duration_s, checkpoint.film_s),
            last_checkpoint_s=checkpoint.film_s,
        )

    def shot_ended(self, shot: Shot) -> None:
        if shot.id > self.checkpoint.done_shot:
            self.shots.append(shot)
            self.ended[shot.id] = shot

    def state_for(self, frame: SampledFrame) -> ShotState:
        if frame.shot_id not in self.states:
            tracker = ShotTracker(self.track_ids, iou_min=self.settings.track_iou)
            self.states[frame.shot_id] = ShotState(frame.shot_id, frame.time_s, tracker)
        return self.states[frame.shot_id]

    def checkpoint_due(self, frame: SampledFrame) -> bool:
        """Whether `frame` opens a new shot `checkpoint_s` of film or more after the last
        checkpoint: a checkpoint is taken at shot boundaries alone."""
        if not self.states or frame.shot_id <= max(self.states):
            return False
        return self.ended[max(self.states)].end_s - self.last_checkpoint_s >= self.settings.checkpoint_s

    def finish_before(self, shot_id: int) -> None:
        """Write the shots before `shot_id`: their frames are all detected."""
        for sid in sorted(sid for sid in self.states if sid < shot_id):
            self._finish(self.states.pop(sid))

    def finish_all(self) -> None:
        for state in sorted(self.states.values(), key=lambda st: st.shot_id):
            self._finish(state)
        self.states.clear()

    def _finish(self, state: ShotState) -> None:
        shot = self.ended.pop(state.shot_id)
        # A state opens with a frame that is never still, and every frame taken is detected
        # before its shot is finished: there is a thumbnail.
        assert state.thumb is not None
        self.writer.add_shot(shot, state.thumb, state.thumb_time, state.persons, self.settings.thumbnail_px)
        self.counts.add(state.counts, state.persons)
        self.checkpoint.done_shot = shot.id
        self.checkpoint.film_s = shot.end_s

    def save_checkpoint(self) -> None:
        """Save what is written so far, for a later run to resume from (call with no shot open)."""
        cp = self.checkpoint
        cp.shots = [asdict(shot) for shot in self.shots if shot.id <= cp.done_shot]
        cp.counts = self.counts.for_checkpoint()
        cp.seconds = dict(self.timer.seconds)
        cp.next_track = next(self.track_ids)
        cp.warnings = list(dict.fromkeys([*cp.warnings, *self.source.warnings]))
        self.writer.checkpoint(cp)
        self.last_checkpoint_s = cp.film_s

    def report(self) -> None:
        """Progress in film time."""
        film_s = max([self.checkpoint.film_s, *(st.start_s for st in self.states.values())])
        kept = self.counts.crops_kept + sum(st.counts.crops_kept for st in self.states.values())
        total = max(self.total_s, film_s, self.source.duration_s)
        self.progress(Progress("index", round(film_s, 1), round(total, 1), "s", self.pace.message(film_s, kept, total)))

    @property
    def shots_left_out(self) -> int:
        """Shots the source told of that were never written: none of their frames decoded."""
        return len(self.shots) - self.counts.shots_done
