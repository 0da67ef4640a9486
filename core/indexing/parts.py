"""A film indexed in parts: each part (the shots that start inside a window of film time) is run
by a worker through the same Indexer steps as a whole film, into a `PartRecorder` instead of an
index; the driver then writes the parts, in shot order, through the one IndexWriter
(`PartAssembler`), so that the index is the one a single process would have written: the same
shots, crops, vectors, track ids, checkpoints and manifest.

Nothing here imports Ray: core/indexing/distributed.py runs these on a Ray cluster.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Iterator, Sequence, cast

import numpy as np
from PIL import Image

from ..settings import Settings
from ..store import Checkpoint, CropRow, IndexWriter
from ..types import BBox, Progress, ProgressCallback, Shot, no_progress
from .indexer import Indexer, ModelFacts, Models
from .sources import MovieSource, SampledFrame
from .state import BuildCounts, BuildState, ShotCounts, ShotState, StageTimer


@dataclass(frozen=True)
class Window:
    """The shots of a part: those whose start (the previous shot's end) is in [start_s, end_s)."""

    number: int  # 1-based, in film order
    start_s: float
    end_s: float  # math.inf for the film's last part

    def holds(self, start_s: float) -> bool:
        return self.start_s <= start_s < self.end_s


def windows(duration_s: float, part_s: float) -> list[Window]:
    """The parts of a film of about `duration_s` (the container's estimate: the first and the last
    part are open-ended, so every shot falls in exactly one whatever the true length)."""
    n = max(1, math.ceil(duration_s / part_s - 1e-9)) if duration_s > 0 else 1
    bounds = [-math.inf, *(k * part_s for k in range(1, n)), math.inf]
    return [Window(k + 1, bounds[k], bounds[k + 1]) for k in range(n)]


class WindowSource(MovieSource):
    """A source seen through a window: the stream of the whole film (decoded from its start, so
    that cuts and samples are exactly those of a whole-film run), cut down to the window's shots,
    and stopped once past it."""

    def __init__(self, inner: MovieSource, window: Window) -> None:
        super().__init__(inner.path)
        self.inner = inner
        self.kind = inner.kind
        self.window = window

    @property
    def warnings(self) -> list[str]:
        return self.inner.warnings

    @property
    def estimated_duration_s(self) -> float:
        return self.inner.estimated_duration_s

    def stream(self, fps: float, progress: ProgressCallback, after_shot: int = 0,
               short_s: float = 0.0) -> Iterator[SampledFrame | Shot]:
        next_start = 0.0  # where the next shot starts: where the last one told of ended
        current, inside = -1, False
        items = self.inner.stream(fps, progress, after_shot, short_s)
        try:
            for item in items:
                if isinstance(item, Shot):
                    if item.id != current:  # a shot without a sampled frame
                        current, inside = item.id, self.window.holds(next_start)
                    if inside:
                        yield item
                    next_start = item.end_s
                    if next_start >= self.window.end_s:
                        return  # the rest of the film is other parts'
                else:
                    if item.shot_id != current:
                        current, inside = item.shot_id, self.window.holds(next_start)
                    if inside:
                        yield item
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()
        self.duration_s = self.inner.duration_s


@dataclass
class ShotRecord:
    """What one shot with sampled frames adds to an index, with its part's own crop numbers and
    track ids (the driver renumbers both)."""

    shot_id: int
    frames: list[tuple[int, int, float]] = field(default_factory=list)  # (shot id, frame index, time)
    descriptors: list[np.ndarray] = field(default_factory=list)
    kind: str = ""  # the descriptors' version
    rows: list[CropRow] = field(default_factory=list)
    vectors: dict[str, list[tuple[int, np.ndarray]]] = field(default_factory=dict)  # channel -> (row, vector)
    faces: list[tuple[int, BBox]] = field(default_factory=list)  # (row, face box in frame pixels)
    portraits: dict[int, tuple[int, float, bytes]] = field(default_factory=dict)  # track -> (row, area, jpeg)
    thumb: np.ndarray | None = None  # already shrunk to the thumbnail's size
    thumb_s: float = 0.0
    persons: int = 0
    counts: ShotCounts = field(default_factory=ShotCounts)


class PartRecorder:
    """Stands in for IndexWriter in a worker: what the Indexer writes, kept per shot."""

    def __init__(self) -> None:
        self.dims: dict[str, int] = {}
        self.shots: dict[int, ShotRecord] = {}
        self._crops: list[tuple[int, int]] = []  # part crop id -> (shot id, row in its shot)
        self._area: dict[int, float] = {}

    def _shot(self, shot_id: int) -> ShotRecord:
        return self.shots.setdefault(shot_id, ShotRecord(shot_id))

    def start(self, dims: dict[str, int]) -> None:
        self.dims = dict(dims)

    def add_frames(self, frames: list[tuple[int, int, float]], kind: str, vectors: np.ndarray) -> None:
        for frame, vec in zip(frames, vectors):
            record = self._shot(frame[0])
            record.frames.append(frame)
            record.descriptors.append(np.asarray(vec, dtype=np.float32))
            record.kind = kind

    def add_crops(self, rows: list[CropRow], vectors: dict[str, tuple[np.ndarray, np.ndarray]],
                  faces: Sequence[tuple[int, BBox]] = ()) -> np.ndarray:
        ids = np.arange(len(self._crops), len(self._crops) + len(rows), dtype=np.int64)
        where: list[tuple[int, int]] = []
        for row in rows:
            record = self._shot(row.shot_id)
            where.append((row.shot_id, len(record.rows)))
            record.rows.append(row)
        self._crops += where
        for channel, (vecs, which) in vectors.items():
            for vec, w in zip(vecs, np.asarray(which, dtype=np.int64)):
                sid, at = where[int(w)]
                self._shot(sid).vectors.setdefault(channel, []).append((at, np.asarray(vec, dtype=np.float32)))
        for w, box in faces:
            sid, at = where[int(w)]
            self._shot(sid).faces.append((at, box))
        return ids

    def wants_portrait(self, track_id: int, area: float) -> bool:
        return area > self._area.get(track_id, 0.0)

    def add_portrait(self, track_id: int, crop_id: int, area: float, jpeg: bytes) -> None:
        self._area[track_id] = area
        sid, at = self._crops[crop_id]
        self._shot(sid).portraits[track_id] = (at, area, jpeg)

    def add_shot(self, shot: Shot, thumbnail: np.ndarray, thumb_frame_s: float, persons: int, thumb_px: int) -> None:
        # Shrunk here as IndexWriter.add_shot shrinks it (shrinking again there changes nothing):
        # what travels to the driver is the thumbnail, not the frame.
        image = Image.fromarray(thumbnail)
        image.thumbnail((thumb_px, thumb_px), Image.Resampling.LANCZOS)
        record = self._shot(shot.id)
        record.thumb, record.thumb_s, record.persons = np.asarray(image), thumb_frame_s, persons

    def checkpoint(self, checkpoint: Checkpoint) -> None:
        raise RuntimeError("a part is never checkpointed: the driver checkpoints the whole film")


class _RecordingIds:
    """A shot's tracker's track ids, noting the first one it draws."""

    def __init__(self, ids: Iterator[int], first: dict[int, int], shot_id: int) -> None:
        self.ids, self.first, self.shot_id = ids, first, shot_id

    def __iter__(self) -> _RecordingIds:
        return self

    def __next__(self) -> int:
        value = next(self.ids)
        self.first.setdefault(self.shot_id, value)
        return value


@dataclass
class PartBuildState(BuildState):
    """A part's run: also notes each shot's counts and the first track id each shot drew."""

    first_ids: dict[int, int] = field(default_factory=dict)

    def state_for(self, frame: SampledFrame) -> ShotState:
        fresh = frame.shot_id not in self.states
        state = super().state_for(frame)
        if fresh:
            state.tracker.ids = _RecordingIds(self.track_ids, self.first_ids, frame.shot_id)
        return state

    def _finish(self, state: ShotState) -> None:
        super()._finish(state)
        cast(PartRecorder, self.writer)._shot(state.shot_id).counts = state.counts


@dataclass
class PartResult:
    """One part of a film, as a worker indexed it."""

    window: Window
    shots: list[Shot]  # every shot of the window, in order (with or without sampled frames)
    records: dict[int, ShotRecord]  # the shots with sampled frames
    first_ids: dict[int, int]  # shot id -> the first track id (of the part's own numbering) it drew
    drawn: int  # track ids the part drew: 1..drawn
    dims: dict[str, int]
    facts: ModelFacts
    duration_s: float  # the film's length, known to the last part
    warnings: list[str]
    seconds: dict[str, float]
    worker: str = ""  # which worker ran it (host:pid)

    def ids_before(self, shot_id: int) -> int:
        """Track ids the part drew before `shot_id`'s first frame (its shots are tracked in order)."""
        later = [first for sid, first in self.first_ids.items() if sid >= shot_id]
        return min(later) - 1 if later else self.drawn


class PartIndexer(Indexer):
    """The Indexer's steps over one window of a film, into a PartRecorder (in a worker, with the
    models it loaded once; checkpoints off: the driver checkpoints the film as a whole)."""

    def __init__(self, settings: Settings, models: Models) -> None:
        super().__init__(settings.model_copy(update={"checkpoint_s": math.inf}), models)
        self._build: PartBuildState | None = None

    def _begin(self, source: MovieSource, writer: IndexWriter, checkpoint: Checkpoint, timer: StageTimer,
               progress: ProgressCallback) -> BuildState:
        built = PartBuildState.begin(self.settings, source, writer, checkpoint, timer, progress)
        assert isinstance(built, PartBuildState)
        self._build = built
        return built

    def part(self, source: MovieSource, window: Window) -> PartResult:
        recorder = PartRecorder()
        part = WindowSource(source, window)
        timer = StageTimer()
        # The recorder has the writer's methods the steps call (duck-typed: it claims no folder).
        shots, _ = self._process(part, cast(IndexWriter, recorder), Checkpoint("", []), timer, no_progress)
        build = self._build
        assert build is not None
        return PartResult(
            window=window, shots=shots, records=recorder.shots, first_ids=build.first_ids,
            drawn=next(build.track_ids) - 1, dims=recorder.dims, facts=self.facts(),
            duration_s=part.duration_s, warnings=list(source.warnings), seconds=dict(timer.seconds),
        )


class PartAssembler:
    """Writes a film's parts, in order, through its IndexWriter exactly as a single process would
    have: crop numbers from the writer, track ids renumbered into the film's one sequence, and a
    checkpoint wherever a single process would have taken one (each consumes a track id, as there)."""

    def __init__(self, settings: Settings, writer: IndexWriter, checkpoint: Checkpoint, timer: StageTimer,
                 warnings: list[str], progress: ProgressCallback) -> None:
        self.settings, self.writer, self.checkpoint, self.timer = settings, writer, checkpoint, timer
        self.warnings = warnings  # the source's, in the driver: the parts' are added
        self.progress = progress
        self.shots = [Shot(**shot) for shot in checkpoint.shots if shot["id"] <= checkpoint.done_shot]
        self.counts = BuildCounts.of(checkpoint.counts)
        self.next_id = checkpoint.next_track
        self.last_checkpoint_s = checkpoint.film_s
        self.previous: Shot | None = None  # the last shot with sampled frames written by this run
        self.started = False

    def add(self, part: PartResult) -> None:
        cp = self.checkpoint
        if not self.started:
            self.writer.start(part.dims)
            self.started = True
        self.warnings.extend(w for w in part.warnings if w not in self.warnings)
        for stage, seconds in part.seconds.items():
            self.timer.add(stage, seconds)
        fresh = [shot for shot in part.shots if shot.id > cp.done_shot]
        if not fresh:
            return
        # The part's own ids 1, 2, ... continue the film's sequence, past those of shots done before a resume.
        base = self.next_id - 1 - part.ids_before(fresh[0].id)
        shift = 0
        for shot in fresh:
            self.shots.append(shot)
            record = part.records.get(shot.id)
            if record is None:
                continue  # no frame of it decoded: left out, as in a single process
            if self.previous is not None and self.previous.end_s - self.last_checkpoint_s >= self.settings.checkpoint_s:
                self._checkpoint(next_track=base + shift + part.ids_before(shot.id) + 1)
                shift += 1
            self._write(shot, record, base + shift)
            self.previous = shot
        self.next_id = base + shift + part.drawn + 1

    def _write(self, shot: Shot, record: ShotRecord, offset: int) -> None:
        writer = self.writer
        if record.frames:
            writer.add_frames(record.frames, record.kind, np.stack(record.descriptors))
        if record.rows:
            rows = [CropRow(r.shot_id, r.frame_index, r.frame_s, r.bbox, r.det_score, r.track_id + offset)
                    for r in record.rows]
            vectors = {channel: (np.stack([v for _, v in found]), np.array([at for at, _ in found], dtype=np.int64))
                       for channel, found in record.vectors.items() if found}
            ids = writer.add_crops(rows, vectors, record.faces)
            for track, (at, area, jpeg) in record.portraits.items():
                writer.add_portrait(track + offset, int(ids[at]), area, jpeg)
        assert record.thumb is not None  # every shot with a sampled frame has one (BuildState._finish)
        writer.add_shot(shot, record.thumb, record.thumb_s, record.persons, self.settings.thumbnail_px)
        self.counts.add(record.counts, record.persons)
        self.checkpoint.done_shot = shot.id
        self.checkpoint.film_s = shot.end_s

    def _checkpoint(self, next_track: int) -> None:
        """BuildState.save_checkpoint's, at the same shot boundary."""
        cp = self.checkpoint
        cp.shots = [asdict(shot) for shot in self.shots if shot.id <= cp.done_shot]
        cp.counts = self.counts.for_checkpoint()
        cp.seconds = dict(self.timer.seconds)
        cp.next_track = next_track
        cp.warnings = list(dict.fromkeys([*cp.warnings, *self.warnings]))
        self.writer.checkpoint(cp)
        self.last_checkpoint_s = cp.film_s

    def report(self, done: int, total: int) -> None:
        self.progress(Progress("parts", done, total, "part"))
