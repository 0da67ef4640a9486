"""The offline stage: movie → shots → sampled frames → people → embeddings → index on disk."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import sqlite3
import time
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence, runtime_checkable

import numpy as np
from PIL import Image

from .. import cast
from ..errors import BadInputError
from ..geometry import Box, crop_box
from ..models.channels import Channel, Encoded
from ..models.detector import Detection, PersonDetector
from ..naming import clean_name, format_ts, slugify
from ..search import calibration, framesig
from ..settings import Settings
from ..store import FORMAT_VERSION, MANIFEST, Checkpoint, CropRow, IndexWriter, movie_info, read_manifest
from ..store.faults import storage_error
from ..store.manifest import ChannelPlan, Counts, DetectorSpec, ManifestDraft, SourceSpec, StageSeconds
from ..types import IndexReport, Progress, ProgressCallback, Shot
from ..versions import library_versions
from .sources import MovieSource, SampledFrame, in_background, open_source, scene_threshold
from .state import BuildState, ShotState, StageTimer

log = logging.getLogger(__name__)

# "Face/Off" is a title; "../x", "/etc" and "C:\\x" are attempts at paths.
_PATHLIKE = re.compile(r"(^|[\\/])\.\.([\\/]|$)|^[\\/]|^[A-Za-z]:[\\/]")


def run_key(source: Path, build: dict[str, Any]) -> str:
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


Face = tuple[int, Box]  # a kept crop's number in its batch, and its face's box in frame pixels


@runtime_checkable
class FramesEncoder(Protocol):
    """A channel that can find its faces once per frame (FaceChannel with SCRFD or YuNet) rather
    than in every person's crop."""

    @property
    def per_frame(self) -> bool: ...

    def encode_frames(self, frames: Sequence[np.ndarray], people: Sequence[np.ndarray]) -> Encoded: ...


@dataclass(frozen=True)
class _Batch:
    """Frames detected together, and their people: one crop and one row per person, in frame
    order."""

    frames: list[SampledFrame]
    detections: list[list[Detection]]
    crops: list[Image.Image]
    rows: list[CropRow]

    @classmethod
    def cut(cls, frames: list[SampledFrame], detections: list[list[Detection]]) -> _Batch:
        crops: list[Image.Image] = []
        rows: list[CropRow] = []
        for frame, people in zip(frames, detections):
            image = Image.fromarray(frame.image)
            for det in people:
                crops.append(image.crop(crop_box(det.bbox, image.width, image.height)))
                rows.append(CropRow(frame.shot_id, frame.frame_index, frame.time_s, det.bbox, det.score))
        return cls(frames, detections, crops, rows)

    def frames_people(self) -> Iterator[tuple[SampledFrame, list[Detection], slice]]:
        """Each frame, its people, and where their crops and rows are in the batch's."""
        start = 0
        for frame, people in zip(self.frames, self.detections):
            yield frame, people, slice(start, start + len(people))
            start += len(people)

    def people(self, kept: np.ndarray) -> list[np.ndarray]:
        """Each frame's kept people's boxes (n×4), in `kept` order."""
        kept_set = set(kept.tolist())
        return [np.array([self.rows[i].bbox for i in range(span.start, span.stop) if i in kept_set],
                         dtype=np.float64).reshape(-1, 4)
                for _, _, span in self.frames_people()]


Models = tuple[PersonDetector, list[Channel]]


@dataclass(frozen=True)
class ModelFacts:
    """What the manifest records of the models an index was built with: known to a driver that
    loads no model itself from its workers' reports (core/indexing/distributed.py)."""

    embedder: str  # the primary channel's name (the first body channel, else the first)
    channels: dict[str, tuple[str, str]]  # name -> (model, kind), in build order
    dims: dict[str, int]
    runtime: str  # the detector's

    @classmethod
    def of(cls, detector: PersonDetector, channels: list[Channel], primary: Channel | None) -> ModelFacts:
        return cls(embedder=(primary or channels[0]).name,
                   channels={c.name: (c.model_name, c.kind) for c in channels},
                   dims={c.name: c.dim for c in channels}, runtime=detector.runtime)

    @property
    def face(self) -> str | None:
        return next((name for name, (_, kind) in self.channels.items() if kind == "face"), None)


class Indexer:
    """Builds one index. `models` is the detector and channels, or a future of them, or a function
    that starts loading them and returns that future: it is called once the build is claimed, so
    a run that is refused (a busy or taken slug, a read-only folder) answers at once instead of
    after the models load; they load while the film's first frames are read."""

    def __init__(self, settings: Settings, models: Models | Future[Models] | Callable[[], Future[Models]]) -> None:
        self.settings = settings
        self._models = models
        self._detector: PersonDetector | None = None
        self.channels: list[Channel] = []
        self.primary: Channel | None = None

    @property
    def detector(self) -> PersonDetector:
        if self._detector is None:
            raise RuntimeError("the models are not loaded yet")
        return self._detector

    def _start_loading(self) -> Models | Future[Models]:
        if callable(self._models):
            self._models = self._models()
        return self._models

    def open(self, source_path: Path) -> MovieSource:
        """The film at `source_path`, read as these settings say."""
        s = self.settings
        return open_source(source_path, frames_fps=s.frames_fps, scene_threshold=s.scene_threshold,
                           min_shot_frames=s.min_shot_frames, shot_detector=s.shot_detector,
                           min_shot_s=s.min_shot_s, max_pixels=s.max_image_pixels)

    def _claimed(self, source: MovieSource) -> None:
        """The build is claimed: the models start loading (a driver that runs the film in parts on
        workers hands them the parts here instead)."""
        self._start_loading()

    def _load(self) -> None:
        models = self._start_loading()
        detector, channels = models.result() if isinstance(models, Future) else models
        if not channels:
            raise ValueError("an index needs at least one channel")
        self._detector, self.channels = detector, channels
        # The first body channel de-duplicates crops and helps link tracks; a face-only index
        # keeps every crop and links tracks by box overlap alone.
        self.primary = next((c for c in channels if c.kind == "body"), None)

    def run(self, source_path: Path, movie: str, progress: ProgressCallback, *, replace: bool = False) -> IndexReport:
        """Index `movie` from `source_path`. `replace`: replace the index of another movie whose
        name has the same slug (see IndexWriter). A disk fault (full, read-only, not permitted, a
        file-size limit, an I/O error) becomes a StorageError that says what to do; the previous
        index is left as it was, and a build with a checkpoint is kept for the same command to
        resume."""
        s = self.settings
        name = clean_name(movie)
        if not name:
            raise BadInputError("The movie name is empty; give one with --movie.")
        if _PATHLIKE.search(name):
            raise BadInputError(
                f"The movie name {name!r} looks like a file path; give the movie's title, e.g. --movie \"Heat (1995)\"."
            )
        slug = slugify(name)
        timer = StageTimer()
        started = time.perf_counter()
        writer: IndexWriter | None = None
        try:
            with timer("open"):
                source = self.open(source_path)
            build = self._build_settings()
            # Leftovers of crashes are tidied by the writer, under the index folder's lock.
            writer = IndexWriter(s.index_dir, slug, key=run_key(Path(source_path), build), name=name,
                                 replace=replace)
            self._claimed(source)
            resumed = writer.resumed
            if resumed is not None:
                for stage, seconds in resumed.seconds.items():
                    timer.seconds[stage] = seconds
                log.info("resuming the index of %r at %s", name, format_ts(resumed.film_s))
                # (`replace` is the flag here, hence dataclasses.replace)
                checkpoint = dataclasses.replace(resumed, resumed=resumed.resumed + 1)
            else:
                checkpoint = Checkpoint(writer.key or "", [], warnings=list(source.warnings))
            shots, counts = self._process(source, writer, checkpoint, timer, progress)
            warnings = list(dict.fromkeys([*checkpoint.warnings, *source.warnings]))
            facts = self.facts()  # known once _process has run
            draft = ManifestDraft(
                name=name,
                source=SourceSpec(kind=source.kind, path=str(Path(source_path).resolve()),
                                  size=_size_of(Path(source_path))),
                duration_s=float(source.duration_s),
                embedder=facts.embedder,
                channels={name: ChannelPlan(model=model, kind=kind) for name, (model, kind) in facts.channels.items()},
                detector=DetectorSpec(**build["detector"], runtime=facts.runtime),
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
                face = facts.face
                if face is not None:  # without faces there is no cast (core/cast.py says why)
                    writer.write_cast(face, s.cast_threshold)
                final = writer.commit(draft, s.faiss_index)
                progress(Progress("write", 1, 1, "index"))
        except BaseException as exc:
            # Ctrl-C included: the previous index stays; a build with a checkpoint waits to be resumed.
            kept = writer.abort() if writer is not None else None
            if isinstance(exc, (OSError, sqlite3.Error)):
                # The one place where the disk's faults become a message (core/store/faults.py).
                raise storage_error(exc, s.index_dir, _outcome(s.index_dir / slug, name, kept)) from exc
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

    def facts(self) -> ModelFacts:
        """The models' facts for the manifest (once they are loaded)."""
        return ModelFacts.of(self.detector, self.channels, self.primary)

    def _build_settings(self) -> dict[str, Any]:
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

    def _process(self, source: MovieSource, writer: IndexWriter, checkpoint: Checkpoint, timer: StageTimer,
                 progress: ProgressCallback) -> tuple[list[Shot], dict[str, int]]:
        """Read the film (in a thread: decoding, shots, sampling) while detecting, embedding and
        writing every shot after the checkpoint's; checkpoints the build at the first shot
        boundary after every `checkpoint_s` of film. Returns the film's shots and the counts."""
        s = self.settings
        build = self._begin(source, writer, checkpoint, timer, progress)
        # The film is read a few frames ahead, in its own thread, while the models finish loading.
        items = in_background(source.stream(s.sample_fps, lambda _: None, after_shot=checkpoint.done_shot,
                                            short_s=s.short_shot_s),
                              maxsize=2 * s.det_batch, busy=lambda dt: timer.add("decode", dt))
        try:
            with timer("load"):  # what model loading took beyond the reading ahead
                self._load()
            writer.start({c.name: c.dim for c in self.channels})
            build.report()
            while True:
                with timer("wait"):
                    item = next(items, None)
                if isinstance(item, Shot):
                    build.shot_ended(item)
                elif item is None:
                    self._finish_open_shots(build)
                    break
                else:
                    if build.checkpoint_due(item):
                        self._finish_open_shots(build)
                        build.save_checkpoint()
                    self._take(build, item)
        finally:
            items.close()
        build.report()
        if build.shots_left_out:
            log.warning("%d shot(s) had no decodable frame and are left out", build.shots_left_out)
        return build.shots, build.counts.totals()

    def _begin(self, source: MovieSource, writer: IndexWriter, checkpoint: Checkpoint, timer: StageTimer,
               progress: ProgressCallback) -> BuildState:
        """The run's state (a part of a film run by a worker keeps a little more: core/indexing/parts.py)."""
        return BuildState.begin(self.settings, source, writer, checkpoint, timer, progress)

    def _take(self, build: BuildState, frame: SampledFrame) -> None:
        """A sampled frame: queued for detection unless it repeats its shot's last one; a full
        batch is processed at once."""
        if not build.state_for(frame).repeats(frame, self.settings.still_diff):
            build.batch.append(frame)
        if len(build.batch) >= self.settings.det_batch:
            self._detect(build)
            build.report()

    def _finish_open_shots(self, build: BuildState) -> None:
        """Process the frames waiting and write every open shot: at a checkpoint, and at the end."""
        if build.batch:
            self._detect(build)
        build.finish_all()

    def _detect(self, build: BuildState) -> None:
        """Detect, embed and store the batch's people, then write the shots before its last
        frame's: frames arrive in shot order, so those are complete."""
        frames = build.batch
        with build.timer("detect"):
            detections = self.detector.detect([f.image for f in frames])
        for frame, people in zip(frames, detections):
            build.states[frame.shot_id].saw(frame, people)
        with build.timer("describe"):  # a tiny thumbnail per frame: milliseconds
            build.writer.add_frames([(f.shot_id, f.frame_index, f.time_s) for f in frames],
                                    framesig.DESCRIPTOR_VERSION, framesig.describe_many([f.image for f in frames]))
        batch = _Batch.cut(frames, detections)
        if batch.rows:
            keep = self._embed_and_store(build, batch)
            for row, kept in zip(batch.rows, keep):
                build.states[row.shot_id].stored(bool(kept))
        build.finish_before(frames[-1].shot_id)
        build.batch = []

    def _embed_and_store(self, build: BuildState, batch: _Batch) -> np.ndarray:
        """Track, de-duplicate and embed one batch's crops, and write the kept ones; returns
        which crops were kept."""
        primary = self._encode_primary(build.timer, batch.crops)
        # Tracks are linked on every detection, before de-duplication thins them out.
        track_ids = self._link_tracks(build.states, batch, primary)
        keep = self._dedup(build.states, batch.rows, primary)
        kept = np.flatnonzero(keep)
        vectors, faces = self._encode_kept(build.timer, batch, kept, primary)
        rows = [replace(batch.rows[i], track_id=track_ids[i]) for i in kept]
        ids = build.writer.add_crops(rows, vectors, faces)
        self._keep_portraits(build.writer, batch, kept, rows, ids, faces)
        return keep

    @staticmethod
    def _keep_portraits(writer: IndexWriter, batch: _Batch, kept: np.ndarray, rows: list[CropRow],
                        ids: np.ndarray, faces: list[Face]) -> None:
        """Each face track's largest face, kept as a portrait for the cast (encoded only when it
        beats the track's portrait so far: a few per track)."""
        if not faces:
            return
        frames = {(f.shot_id, f.frame_index): f.image for f in batch.frames}
        for local, box in faces:
            row = rows[local]
            area = float((box[2] - box[0]) * (box[3] - box[1]))
            frame = frames.get((row.shot_id, row.frame_index))
            if frame is not None and writer.wants_portrait(row.track_id, area):
                writer.add_portrait(row.track_id, int(ids[local]), area, cast.portrait(frame, box))

    def _encode_primary(self, timer: StageTimer, crops: list[Image.Image]) -> np.ndarray | None:
        """Every crop's vector in the primary channel (None without one)."""
        if self.primary is None:
            return None
        with timer(f"embed_{self.primary.name}"):
            return self.primary.encode(crops).vectors

    @staticmethod
    def _link_tracks(states: dict[int, ShotState], batch: _Batch, primary: np.ndarray | None) -> list[int]:
        """A track id for every crop of the batch, from its shot's tracker."""
        track_ids: list[int] = []
        for frame, people, span in batch.frames_people():
            if people:
                boxes = np.array([d.bbox for d in people], dtype=np.float64)
                track_ids += states[frame.shot_id].tracker.update(boxes, None if primary is None else primary[span])
        return track_ids

    def _dedup(self, states: dict[int, ShotState], rows: list[CropRow], primary: np.ndarray | None) -> np.ndarray:
        """Which crops to keep: all of them, but for near-duplicates of kept crops of their shot
        in the primary channel when de-duplication is on."""
        keep = np.ones(len(rows), dtype=bool)
        if self.settings.dedup and primary is not None:
            for sid in {r.shot_id for r in rows}:
                idx = np.array([i for i, r in enumerate(rows) if r.shot_id == sid])
                keep[idx] = dedup_mask(primary[idx], states[sid].kept, self.settings.dedup_threshold)
        return keep

    def _encode_kept(self, timer: StageTimer, batch: _Batch, kept: np.ndarray,
                     primary: np.ndarray | None) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[Face]]:
        """The kept crops in every channel: per channel, the vectors and which kept crop each
        belongs to (a face channel covers only the crops with a face); and the faces' boxes in
        frame pixels, by kept crop."""
        kept_crops = [batch.crops[i] for i in kept]
        vectors: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        faces: list[Face] = []
        for channel in self.channels:
            if channel is self.primary and primary is not None:
                vectors[channel.name] = (primary[kept], np.arange(len(kept)))
                continue
            origins: list[tuple[int, int]] | None = None  # where each kept crop was cut from its frame
            with timer(f"embed_{channel.name}"):
                if isinstance(channel, FramesEncoder) and channel.per_frame:
                    # Faces once per frame, given to the frame's kept people (in `kept` order).
                    enc = channel.encode_frames([f.image for f in batch.frames], batch.people(kept))
                else:
                    enc = channel.encode(kept_crops)
                    origins = [(int(batch.rows[i].bbox[0]), int(batch.rows[i].bbox[1])) for i in kept]
            vectors[channel.name] = (enc.vectors, enc.rows)
            if channel.kind == "face" and enc.boxes:
                for local, (fx1, fy1, fx2, fy2) in zip(enc.rows, enc.boxes):
                    # Per-crop boxes are in crop pixels: shift them by where the crop was cut.
                    x1, y1 = (0, 0) if origins is None else origins[local]
                    faces.append((int(local), (x1 + fx1, y1 + fy1, x1 + fx2, y1 + fy2)))
        return vectors, faces


def _outcome(final: Path, name: str, kept: Checkpoint | None) -> str:
    """What a failed run left: the previous index (untouched) and the build (kept to resume, or gone)."""
    before = f"The index of {name!r} is unchanged" if (final / MANIFEST).is_file() else f"{name!r} was not indexed"
    if kept is not None:
        return (f"{before}; the build so far is kept: once that is fixed, the same command goes on from its "
                f"last checkpoint ({format_ts(kept.film_s, decimals=1)} of film).")
    return f"{before}, and nothing of this run was left behind."


def _size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


