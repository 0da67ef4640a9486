"""The offline stage: movie → shots → sampled frames → people → embeddings → index on disk."""

from __future__ import annotations

import itertools
import logging
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from . import calibration
from .channels import Channel
from .detector import PersonDetector
from .errors import BadInputError
from .naming import clean_name, slugify
from .settings import Settings
from .sources import SampledFrame, open_source, scene_threshold, shot_targets
from .store import CropRow, IndexWriter, movie_info, read_manifest, tidy_index_dir
from .tracks import ShotTracker
from .types import IndexReport, Progress, ProgressCallback, Shot
from .versions import library_versions

log = logging.getLogger(__name__)

# "Face/Off" is a title; "../x", "/etc" and "C:\\x" are attempts at paths.
_PATHLIKE = re.compile(r"(^|[\\/])\.\.([\\/]|$)|^[\\/]|^[A-Za-z]:[\\/]")


@dataclass
class _ShotState:
    """What the indexer remembers about the shot being processed."""

    shot: Shot
    tracker: ShotTracker
    kept: list[np.ndarray] = field(default_factory=list)  # embeddings kept, for de-duplication
    persons: int = 0
    thumb: np.ndarray | None = None
    thumb_score: float = -1.0
    thumb_time: float = 0.0


class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


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


class Indexer:
    def __init__(self, settings: Settings, detector: PersonDetector, channels: list[Channel]) -> None:
        if not channels:
            raise ValueError("an index needs at least one channel")
        self.settings = settings
        self.detector = detector
        self.channels = channels
        # The first body channel de-duplicates crops and helps link tracks; a face-only index
        # keeps every crop and links tracks by box overlap alone.
        self.primary = next((c for c in channels if c.kind == "body"), None)
        self._track_ids = itertools.count(1)  # shared by every shot's tracker: ids unique in the movie

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
        with timer("shots"):
            shots = source.shots(progress)
        planned = sum(len(shot_targets(shot, s.sample_fps)) for shot in shots)
        writer = IndexWriter(s.index_dir, slug)
        try:
            counts = self._process(source.sample(shots, s.sample_fps, lambda _: None), shots, planned,
                                   writer, timer, progress)
            manifest = {
                "name": name,
                "source": {"kind": source.kind, "path": str(Path(source_path).resolve()),
                           "size": _size_of(Path(source_path))},
                "duration_s": float(source.duration_s),
                "embedder": (self.primary or self.channels[0]).name,
                "channels": {c.name: {"model": c.model_name, "kind": c.kind} for c in self.channels},
                "detector": {"model": self.detector.name, "classes": self.detector.classes,
                             "conf": self.detector.conf, "imgsz": self.detector.imgsz},
                "settings": {"sample_fps": s.sample_fps, "frames_fps": s.frames_fps,
                             "shot_detector": s.shot_detector,
                             "scene_threshold": scene_threshold(s.shot_detector, s.scene_threshold),
                             "min_shot_s": s.min_shot_s, "min_shot_frames": s.min_shot_frames,
                             "dedup": s.dedup, "dedup_threshold": s.dedup_threshold,
                             "faiss_index": s.faiss_index, "track_iou": s.track_iou,
                             "min_person_px": s.min_person_px, "min_face_px": s.min_face_px},
                "counts": {"shots": len(shots), **counts},
                "warnings": source.warnings,
                "versions": library_versions(),
            }
            with timer("write"):
                progress(Progress("write", 0, 1, "index"))
                manifest["seconds"] = dict(timer.seconds)
                manifest["elapsed_s"] = time.perf_counter() - started
                for channel, calib in writer.calibrate(calibration.fit).items():
                    kind = manifest["channels"][channel]["kind"]
                    manifest["channels"][channel]["calibration"] = calibration.with_link(calib, kind).to_json()
                final = writer.commit(manifest, s.faiss_index, {c.name: c.dim for c in self.channels})
                progress(Progress("write", 1, 1, "index"))
        except BaseException:
            # Ctrl-C included: the half-built folder goes, the previous index stays.
            writer.abort()
            raise
        manifest = read_manifest(final)
        assert manifest is not None
        return IndexReport(
            movie=movie_info(final, manifest),
            shots=len(shots),
            frames_sampled=counts["frames_sampled"],
            persons_detected=counts["persons_detected"],
            crops_kept=counts["crops_kept"],
            duplicates_dropped=counts["duplicates_dropped"],
            shots_without_people=counts["shots_without_people"],
            seconds=dict(timer.seconds),
            warnings=list(source.warnings),
        )

    def _process(self, frames: Iterator[SampledFrame], shots: list[Shot], planned: int,
                 writer: IndexWriter, timer: _Timer, progress: ProgressCallback) -> dict[str, int]:
        s = self.settings
        by_id = {shot.id: shot for shot in shots}
        states: dict[int, _ShotState] = {}
        counts = {"frames_sampled": 0, "persons_detected": 0, "crops_kept": 0, "duplicates_dropped": 0,
                  "shots_without_people": 0}
        finished: set[int] = set()

        def finish_shot(state: _ShotState) -> None:
            writer.add_shot(state.shot, state.thumb, state.thumb_time, state.persons, s.thumbnail_px)
            if state.persons == 0:
                counts["shots_without_people"] += 1
            finished.add(state.shot.id)

        batch: list[SampledFrame] = []
        frame_iter = iter(frames)
        while True:
            with timer("decode"):
                frame = next(frame_iter, None)
            if frame is not None:
                batch.append(frame)
            if batch and (frame is None or len(batch) >= s.det_batch):
                self._process_batch(batch, by_id, states, writer, timer, counts, finish_shot)
                counts["frames_sampled"] += len(batch)
                progress(Progress("index", counts["frames_sampled"], planned, "frame",
                                  f"{counts['crops_kept']} people kept"))
                batch = []
            if frame is None:
                break
        for state in sorted(states.values(), key=lambda st: st.shot.id):
            finish_shot(state)
        missing = len(shots) - len(finished)
        if missing:
            log.warning("%d shot(s) had no decodable frame and are left out", missing)
        return counts

    def _process_batch(self, batch, by_id, states, writer, timer, counts, finish_shot) -> None:
        s = self.settings
        with timer("detect"):
            detections = self.detector.detect([f.image for f in batch])
        crops: list[Image.Image] = []
        rows: list[CropRow] = []
        for frame, dets in zip(batch, detections):
            if frame.shot_id not in states:
                tracker = ShotTracker(self._track_ids, iou_min=s.track_iou)
                states[frame.shot_id] = _ShotState(by_id[frame.shot_id], tracker)
            state = states[frame.shot_id]
            best = max((d.score for d in dets), default=0.0)
            if state.thumb is None or best > state.thumb_score:
                state.thumb, state.thumb_score, state.thumb_time = frame.image, best, frame.time_s
            state.persons += len(dets)
            counts["persons_detected"] += len(dets)
            image = Image.fromarray(frame.image)
            for det in dets:
                x1, y1, x2, y2 = det.bbox
                crops.append(image.crop((int(x1), int(y1), int(np.ceil(x2)), int(np.ceil(y2)))))
                rows.append(CropRow(frame.shot_id, frame.frame_index, frame.time_s, det.bbox, det.score))
        if crops:
            keep = self._embed_and_store(batch, detections, crops, rows, states, writer, timer)
            counts["duplicates_dropped"] += int((~keep).sum())
            counts["crops_kept"] += int(keep.sum())
        # Frames arrive in shot order: shots before the batch's last one are complete.
        for sid in [sid for sid in states if sid < batch[-1].shot_id]:
            finish_shot(states.pop(sid))

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


