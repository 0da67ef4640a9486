"""The offline stage: movie → shots → sampled frames → people → embeddings → index on disk."""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import re
import time
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
from PIL import Image

from ..errors import BadInputError
from ..geometry import crop_box
from ..models.channels import Channel
from ..models.detector import PersonDetector
from ..naming import clean_name, format_ts, slugify
from ..search import calibration
from ..settings import Settings
from ..store import FORMAT_VERSION, Checkpoint, CropRow, IndexWriter, movie_info, read_manifest, tidy_index_dir
from ..store.manifest import ChannelPlan, Counts, DetectorSpec, ManifestDraft, SourceSpec, StageSeconds
from ..types import IndexReport, Progress, ProgressCallback, Shot
from ..versions import library_versions
from .sources import MovieSource, SampledFrame, in_background, open_source, scene_threshold
from .tracks import ShotTracker

log = logging.getLogger(__name__)

# "Face/Off" is a title; "../x", "/etc" and "C:\\x" are attempts at paths.
_PATHLIKE = re.compile(r"(^|[\\/])\.\.([\\/]|$)|^[\\/]|^[A-Za-z]:[\\/]")


@dataclass
class _ShotState:
    """What the indexer remembers about the shot being processed."""

    shot_id: int
    start_s: float
    tracker: ShotTracker
    kept: list[np.ndarray] = field(default_factory=list)  # embeddings kept, for de-duplication
    persons: int = 0
    thumb: np.ndarray | None = None
    thumb_score: float = -1.0
    thumb_time: float = 0.0
    last_look: np.ndarray | None = None  # the last processed frame, tiny, for skipping still frames
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_SHOT_COUNTS, 0))


# What each shot adds to an index's counts (the manifest's, and the report's).
_SHOT_COUNTS = ("frames_sampled", "frames_still", "persons_detected", "crops_kept", "duplicates_dropped")
_COUNTS = (*_SHOT_COUNTS, "shots_without_people", "shots_done")


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


class _Timer:
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


class _Pace:
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


def run_key(source: Path, build: dict) -> str:
    """A key of the source file (path, size, modification time) and the build settings: a
    checkpoint is resumed only under the same key."""
    source = Path(source).expanduser().resolve()
    files = [source] if source.is_file() else sorted(p for p in source.iterdir() if p.is_file())
    stamp = [(str(p.relative_to(source.parent)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    blob = json.dumps({"format": FORMAT_VERSION, "source": str(source), "files": stamp, "build": build},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def dedup_mask(vectors: np.ndarray, kept: list[np.ndarray], threshold: float) -> np.ndarray:
    """Which rows of `vectors` to keep: a row is dropped when its cosine similarity to a kept
    vector of the same shot (earlier ones, or earlier rows of this batch) exceeds `threshold`."""
    mask = np.ones(len(vectors), dtype=bool)
    for i, vec in enumerate(vectors):
        if kept and float(np.max(np.stack(kept) @ vec)) > threshold:
            mask[i] = False
            continue
        kept.append(vec)
    return mask


Models = tuple[PersonDetector, list[Channel]]


class Indexer:
    """Builds one index. `models` is the detector and channels, or a future of them: they load
    while the film's first frames are read."""

    def __init__(self, settings: Settings, models: Models | Future[Models]) -> None:
        self.settings = settings
        self._models = models
        self.detector: PersonDetector | None = None
        self.channels: list[Channel] = []
        self.primary: Channel | None = None
        self._track_ids = itertools.count(1)  # shared by every shot's tracker: ids unique in the movie

    def _load(self) -> None:
        detector, channels = self._models.result() if isinstance(self._models, Future) else self._models
        if not channels:
            raise ValueError("an index needs at least one channel")
        self.detector, self.channels = detector, channels
        # The first body channel de-duplicates crops and helps link tracks; a face-only index
        # keeps every crop and links tracks by box overlap alone.
        self.primary = next((c for c in channels if c.kind == "body"), None)

    def run(self, source_path: Path, movie: str, progress: ProgressCallback) -> IndexReport:
        s = self.settings
        name = clean_name(movie)
        if not name:
            raise BadInputError("The movie name is empty; give one with --movie.")
        if _PATHLIKE.search(name):
            raise BadInputError(
                f"The movie name {name!r} looks like a file path; give the movie's title, e.g. --movie \"Heat (1995)\"."
            )
        slug = slugify(name)
        tidy_index_dir(s.index_dir)
        timer = _Timer()
        started = time.perf_counter()
        with timer("open"):
            source = open_source(
                source_path, frames_fps=s.frames_fps, scene_threshold=s.scene_threshold,
                min_shot_frames=s.min_shot_frames, shot_detector=s.shot_detector, min_shot_s=s.min_shot_s,
            )
        build = self._build_settings()
        writer = IndexWriter(s.index_dir, slug, key=run_key(Path(source_path), build))
        try:
            resumed = writer.resumed
            if resumed is not None:
                for stage, seconds in resumed.seconds.items():
                    timer.seconds[stage] = seconds
                self._track_ids = itertools.count(resumed.next_track)
                log.info("resuming the index of %r at %s", name, format_ts(resumed.film_s))
                checkpoint = replace(resumed, resumed=resumed.resumed + 1)
            else:
                checkpoint = Checkpoint(writer.key or "", [], warnings=list(source.warnings))
            shots, counts = self._process(source, writer, checkpoint, timer, progress)
            warnings = list(dict.fromkeys([*checkpoint.warnings, *source.warnings]))
            assert self.detector is not None  # loaded by _process
            draft = ManifestDraft(
                name=name,
                source=SourceSpec(kind=source.kind, path=str(Path(source_path).resolve()),
                                  size=_size_of(Path(source_path))),
                duration_s=float(source.duration_s),
                embedder=(self.primary or self.channels[0]).name,
                channels={c.name: ChannelPlan(model=c.model_name, kind=c.kind) for c in self.channels},
                detector=DetectorSpec(**build["detector"], runtime=self.detector.runtime),
                settings=build["settings"],
                counts=Counts(shots=len(shots), **counts),
                warnings=warnings,
                resumed=checkpoint.resumed,
                versions=library_versions(),
            )
            with timer("write"):
                progress(Progress("write", 0, 1, "index"))
                draft.seconds = StageSeconds(dict(timer.seconds))
                draft.elapsed_s = time.perf_counter() - started
                for channel, calib in writer.calibrate(calibration.fit).items():
                    plan = draft.channels[channel]
                    plan.calibration = calibration.with_link(calib, plan.kind).to_json()
                final = writer.commit(draft, s.faiss_index)
                progress(Progress("write", 1, 1, "index"))
        except BaseException:
            # Ctrl-C included: the previous index stays; a build with a checkpoint waits to be resumed.
            writer.abort()
            raise
        manifest = read_manifest(final)
        assert manifest is not None
        return IndexReport(
            movie=movie_info(final, manifest),
            shots=len(shots),
            frames_sampled=counts["frames_sampled"],
            frames_still=counts["frames_still"],
            persons_detected=counts["persons_detected"],
            crops_kept=counts["crops_kept"],
            duplicates_dropped=counts["duplicates_dropped"],
            shots_without_people=counts["shots_without_people"],
            seconds=dict(timer.seconds),
            warnings=warnings,
            resumed_at_s=resumed.film_s if resumed is not None else None,
        )

    def _build_settings(self) -> dict:
        """Everything that shapes what an index holds: recorded in the manifest, and part of
        the key that lets an interrupted build be resumed (never under other settings)."""
        s = self.settings
        return {
            "channels": {name: s.model_for(name) for name in s.index_channels()},
            "detector": {"model": s.detector, "classes": list(s.person_classes), "conf": s.det_conf,
                         "imgsz": s.det_imgsz},
            "settings": {"sample_fps": s.sample_fps, "short_shot_s": s.short_shot_s, "frames_fps": s.frames_fps,
                         "shot_detector": s.shot_detector,
                         "scene_threshold": scene_threshold(s.shot_detector, s.scene_threshold),
                         "min_shot_s": s.min_shot_s, "min_shot_frames": s.min_shot_frames,
                         "dedup": s.dedup, "dedup_threshold": s.dedup_threshold, "still_diff": s.still_diff,
                         "faiss_index": s.faiss_index, "track_iou": s.track_iou,
                         "min_person_px": s.min_person_px, "min_face_px": s.min_face_px,
                         "face_frame_px": s.face_frame_px},
        }

    def _process(self, source: MovieSource, writer: IndexWriter, checkpoint: Checkpoint, timer: _Timer,
                 progress: ProgressCallback) -> tuple[list[Shot], dict[str, int]]:
        """Read the film (in a thread: decoding, shots, sampling) while detecting, embedding and
        writing every shot after the checkpoint's; checkpoints the build at the first shot
        boundary after every `checkpoint_s` of film. Returns the film's shots and the counts."""
        s = self.settings
        # Every shot of the film so far, in order.
        shots = [Shot(**shot) for shot in checkpoint.shots if shot["id"] <= checkpoint.done_shot]
        ended: dict[int, Shot] = {}  # shots whose end the source has told, not yet written
        states: dict[int, _ShotState] = {}
        counts = {key: checkpoint.counts.get(key, 0) for key in _COUNTS}
        total_s = max(source.estimated_duration_s, checkpoint.film_s)
        pace = _Pace(checkpoint.film_s)
        last_checkpoint_s = checkpoint.film_s

        def finish_shot(state: _ShotState) -> None:
            shot = ended.pop(state.shot_id)
            writer.add_shot(shot, state.thumb, state.thumb_time, state.persons, s.thumbnail_px)
            for key, value in state.counts.items():
                counts[key] += value
            counts["shots_without_people"] += state.persons == 0
            counts["shots_done"] += 1
            checkpoint.done_shot = shot.id
            checkpoint.film_s = shot.end_s

        def finish_all() -> None:
            for state in sorted(states.values(), key=lambda st: st.shot_id):
                finish_shot(state)
            states.clear()

        def report() -> None:
            film_s = max([checkpoint.film_s, *(st.start_s for st in states.values())])
            kept = counts["crops_kept"] + sum(st.counts["crops_kept"] for st in states.values())
            total = max(total_s, film_s, source.duration_s)
            progress(Progress("index", round(film_s, 1), round(total, 1), "s", pace.message(film_s, kept, total)))

        batch: list[SampledFrame] = []

        def detect() -> None:
            self._process_batch(batch, states, writer, timer)
            # Frames arrive in shot order: shots before the batch's last one are complete.
            for sid in sorted(sid for sid in states if sid < batch[-1].shot_id):
                finish_shot(states.pop(sid))
            batch.clear()

        # The film is read a few frames ahead, in its own thread, while the models finish loading.
        items = in_background(source.stream(s.sample_fps, lambda _: None, after_shot=checkpoint.done_shot,
                                            short_s=s.short_shot_s),
                              maxsize=2 * s.det_batch, busy=lambda dt: timer.add("decode", dt))
        try:
            with timer("load"):  # what model loading took beyond the reading ahead
                self._load()
            writer.start({c.name: c.dim for c in self.channels})
            report()
            while True:
                with timer("wait"):
                    item = next(items, None)
                if isinstance(item, Shot):
                    if item.id > checkpoint.done_shot:
                        shots.append(item)
                        ended[item.id] = item
                    continue
                frame = item
                boundary = frame is not None and states and frame.shot_id > max(states)
                if frame is None or (boundary and ended[max(states)].end_s - last_checkpoint_s >= s.checkpoint_s):
                    if batch:
                        detect()
                    finish_all()
                    if frame is None:
                        break
                    checkpoint.shots = [asdict(shot) for shot in shots if shot.id <= checkpoint.done_shot]
                    checkpoint.counts = dict(counts)
                    checkpoint.seconds = dict(timer.seconds)
                    checkpoint.next_track = next(self._track_ids)
                    checkpoint.warnings = list(dict.fromkeys([*checkpoint.warnings, *source.warnings]))
                    writer.checkpoint(checkpoint)
                    last_checkpoint_s = checkpoint.film_s
                state = self._state(frame, states)
                if self._is_still(frame, state):
                    state.counts["frames_still"] += 1
                else:
                    batch.append(frame)
                if len(batch) >= s.det_batch:
                    detect()
                    report()
        finally:
            items.close()
        report()
        missing = len(shots) - counts["shots_done"]
        if missing:
            log.warning("%d shot(s) had no decodable frame and are left out", missing)
        return shots, {key: value for key, value in counts.items() if key != "shots_done"}

    def _state(self, frame: SampledFrame, states: dict[int, _ShotState]) -> _ShotState:
        if frame.shot_id not in states:
            states[frame.shot_id] = _ShotState(frame.shot_id, frame.time_s,
                                               ShotTracker(self._track_ids, iou_min=self.settings.track_iou))
        return states[frame.shot_id]

    def _is_still(self, frame: SampledFrame, state: _ShotState) -> bool:
        """Whether `frame` barely differs from the last frame processed in its shot: then it is
        skipped before detection, which would find the same people in the same places."""
        if self.settings.still_diff <= 0:
            return False
        tiny = look(frame.image)
        if still(tiny, state.last_look, self.settings.still_diff):
            return True
        state.last_look = tiny
        return False

    def _process_batch(self, batch: list[SampledFrame], states: dict[int, _ShotState], writer: IndexWriter,
                       timer: _Timer) -> None:
        with timer("detect"):
            detections = self.detector.detect([f.image for f in batch])
        crops: list[Image.Image] = []
        rows: list[CropRow] = []
        for frame, dets in zip(batch, detections):
            state = states[frame.shot_id]
            state.counts["frames_sampled"] += 1
            best = max((d.score for d in dets), default=0.0)
            if state.thumb is None or best > state.thumb_score:
                state.thumb, state.thumb_score, state.thumb_time = frame.image, best, frame.time_s
            state.persons += len(dets)
            state.counts["persons_detected"] += len(dets)
            image = Image.fromarray(frame.image)
            for det in dets:
                crops.append(image.crop(crop_box(det.bbox, image.width, image.height)))
                rows.append(CropRow(frame.shot_id, frame.frame_index, frame.time_s, det.bbox, det.score))
        if crops:
            keep = self._embed_and_store(batch, detections, crops, rows, states, writer, timer)
            for row, kept in zip(rows, keep):
                states[row.shot_id].counts["crops_kept" if kept else "duplicates_dropped"] += 1

    def _embed_and_store(self, batch, detections, crops, rows, states, writer, timer) -> np.ndarray:
        """Track, de-duplicate and embed one batch's crops; returns which crops were kept."""
        s = self.settings
        primary_vecs = None
        if self.primary is not None:
            with timer(f"embed_{self.primary.name}"):
                primary_vecs = self.primary.encode(crops).vectors
        # Tracks are linked on every detection, before de-duplication thins them out.
        start = 0
        track_ids: list[int] = []
        for frame, dets in zip(batch, detections):
            stop = start + len(dets)
            if dets:
                tracker = states[frame.shot_id].tracker
                boxes = np.array([d.bbox for d in dets], dtype=np.float64)
                track_ids += tracker.update(boxes, None if primary_vecs is None else primary_vecs[start:stop])
            start = stop
        keep = np.ones(len(rows), dtype=bool)
        if s.dedup and primary_vecs is not None:
            for sid in {r.shot_id for r in rows}:
                idx = np.array([i for i, r in enumerate(rows) if r.shot_id == sid])
                keep[idx] = dedup_mask(primary_vecs[idx], states[sid].kept, s.dedup_threshold)
        kept = np.flatnonzero(keep)
        kept_crops = [crops[i] for i in kept]
        encoded = {}
        faces: list[tuple[int, tuple[float, float, float, float]]] = []
        for channel in self.channels:
            if channel is self.primary:
                encoded[channel.name] = (primary_vecs[kept], np.arange(len(kept)))
                continue
            per_frame = getattr(channel, "per_frame", False)
            with timer(f"embed_{channel.name}"):
                if per_frame:
                    # Faces once per frame, given to the frame's kept people (in `kept` order).
                    kept_set = set(kept.tolist())
                    people, start = [], 0
                    for dets in detections:
                        ids = [i for i in range(start, start + len(dets)) if i in kept_set]
                        people.append(np.array([rows[i].bbox for i in ids], dtype=np.float64).reshape(-1, 4))
                        start += len(dets)
                    enc = channel.encode_frames([f.image for f in batch], people)
                else:
                    enc = channel.encode(kept_crops)
            encoded[channel.name] = (enc.vectors, enc.rows)
            if channel.kind == "face" and enc.boxes:
                for local, (fx1, fy1, fx2, fy2) in zip(enc.rows, enc.boxes):
                    # Per-crop boxes are in crop pixels: shift them by where the crop was cut.
                    x1, y1 = (0, 0) if per_frame else (int(v) for v in rows[kept[local]].bbox[:2])
                    faces.append((int(local), (x1 + fx1, y1 + fy1, x1 + fx2, y1 + fy2)))
        kept_rows = [CropRow(rows[i].shot_id, rows[i].frame_index, rows[i].frame_s, rows[i].bbox,
                             rows[i].det_score, track_ids[i]) for i in kept]
        writer.add_crops(kept_rows, encoded, faces)
        return keep


def _size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


