"""Writing an index: shots, crops and vectors stream into a hidden build folder, checkpointed
as they go; `commit` builds the FAISS indexes and swaps the folder into place."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import sqlite3
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence, TypeVar

import faiss
import numpy as np
from PIL import Image
from pydantic import JsonValue

from ..errors import BadInputError
from ..naming import same_movie_name
from ..types import BBox, Shot
from .layout import BUILDING_PREFIX, CAST, CHECKPOINT, FORMAT_VERSION, MANIFEST, META, OLD_PREFIX, PID, THUMBS, VECTORS
from .locks import BuildLock, build_holder, index_dir_lock
from .manifest import IndexDamage, Manifest, ManifestDraft, read_manifest, read_manifest_json, write_json_durably
from .recovery import tidy_locked

if TYPE_CHECKING:
    from ..cast import Identity

log = logging.getLogger(__name__)

T = TypeVar("T")

HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
IVF_MIN_POINTS_PER_LIST = 39  # FAISS warns below this many training points per list
IVF_LISTS_PER_SQRT_N = 4  # nlist = 4·√n, the usual rule of thumb
IVF_PROBE_FRACTION = 8  # nprobe = nlist / 8
THUMB_JPEG_QUALITY = 85

_SCHEMA = """
CREATE TABLE shots (
    id INTEGER PRIMARY KEY,
    number INTEGER NOT NULL,
    scene INTEGER,
    start_frame INTEGER NOT NULL,
    end_frame INTEGER NOT NULL,
    start_s REAL NOT NULL,
    end_s REAL NOT NULL,
    thumbnail TEXT NOT NULL,
    thumb_frame_s REAL NOT NULL,
    persons INTEGER NOT NULL
);
CREATE TABLE crops (
    id INTEGER PRIMARY KEY,
    shot_id INTEGER NOT NULL REFERENCES shots(id),
    frame_index INTEGER NOT NULL,
    frame_s REAL NOT NULL,
    x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
    det_score REAL NOT NULL,
    track_id INTEGER NOT NULL
);
CREATE INDEX crops_shot ON crops(shot_id);
CREATE TABLE faces (
    crop_id INTEGER PRIMARY KEY REFERENCES crops(id),
    x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL
);
"""
# Optional (indexes written before it lack it, and still load): each detected frame's whole-frame
# descriptor (core/search/framesig.py), which lets `castfinder identify` find a screenshot's movie.
# `kind` is the descriptor's version; `vec` its float32 values.
FRAMES_SCHEMA = """
CREATE TABLE IF NOT EXISTS frame_descriptors (
    id INTEGER PRIMARY KEY,
    shot_id INTEGER NOT NULL,
    frame_index INTEGER NOT NULL,
    frame_s REAL NOT NULL,
    kind TEXT NOT NULL,
    vec BLOB NOT NULL
);
"""

# While building: each face track's largest face so far, as a portrait JPEG (core/cast.py), kept in
# the database so that it is checkpointed with the crops. Dropped at the end, once the cast's
# portraits are written as files. (IF NOT EXISTS: a build resumed from older code lacks it.)
_BUILD_SCHEMA = """
CREATE TABLE IF NOT EXISTS track_faces (
    track_id INTEGER PRIMARY KEY,
    crop_id INTEGER NOT NULL,
    area REAL NOT NULL,
    jpeg BLOB NOT NULL
);
"""

# The cast (core/cast.py), written at the end of a build with a face channel. Optional: an index
# without these tables has no cast ("re-index this movie to get its cast").
_CAST_SCHEMA = """
CREATE TABLE cast_members (
    id INTEGER PRIMARY KEY,
    screen_s REAL NOT NULL,
    first_s REAL NOT NULL,
    portrait TEXT
);
CREATE TABLE cast_tracks (
    track_id INTEGER PRIMARY KEY,
    identity_id INTEGER NOT NULL REFERENCES cast_members(id)
);
"""


@dataclass(frozen=True)
class CropRow:
    shot_id: int
    frame_index: int
    frame_s: float
    bbox: tuple[float, float, float, float]
    det_score: float
    track_id: int = -1  # assigned by the tracker


def _pick_portrait(identity: "Identity", portraits: dict[int, tuple[float, bytes]], crop_track: np.ndarray,
                   vecs: np.ndarray, vec_of: dict[int, int]) -> int | None:
    """The track whose portrait shows the identity: among its tracks with a portrait whose face is
    at least half as large as its largest, the one whose faces are nearest the identity's centroid
    (a big face of a look-alike or a blur is not the one to show)."""
    have = [t for t in identity.tracks if t in portraits]
    if not have:
        return None
    largest = max(portraits[t][0] for t in have)
    big = [t for t in have if portraits[t][0] >= largest / 2]

    def closeness(track: int) -> float:
        rows = [vec_of[int(c)] for c in identity.face_crops if crop_track[int(c)] == track and int(c) in vec_of]
        return float(np.mean(vecs[rows] @ identity.centroid)) if rows else -1.0

    return max(big, key=lambda t: (closeness(t), portraits[t][0]))


def _busy_message(name: str, slug: str, pid: int | None, other: str | None) -> str:
    who = f"another process (pid {pid})" if pid is not None else "another process"
    if other is None or same_movie_name(other, name):
        return (f"{name!r} is already being indexed by {who}; wait for it to finish or stop it, "
                "then run this command again.")
    return (f"{other!r} is already being indexed by {who} into {slug!r}, the folder {name!r} would use; "
            "wait for it to finish or stop it, or give this movie another --movie name.")


def _indexed_name(folder: Path) -> str | None:
    """The name of the movie indexed in `folder`: from its manifest, read leniently (an index of
    another version or a damaged one still says whose it is), or None when it cannot be read."""
    try:
        manifest = read_manifest(folder)
    except IndexDamage:
        manifest = None
    if manifest is not None:
        return manifest.name
    try:
        data = read_manifest_json(folder)  # bounded in size and depth, like every manifest read
    except IndexDamage:
        return None
    name = data.get("name") if isinstance(data, dict) else None
    return name if isinstance(name, str) and name.strip() else None


# Test seam: tests put a callable here to hold a build at a named point of its commit
# ("before_swap": complete, not yet published; "swapped_aside": under the index folder's lock, the
# previous index renamed aside, the new one not yet in place) while another thread or process acts.
# Never set outside tests.
COMMIT_HOOK: Callable[[str], None] | None = None


def _reached(point: str) -> None:
    if COMMIT_HOOK is not None:
        COMMIT_HOOK(point)


def build_faiss(vectors: np.ndarray, ids: np.ndarray, kind: str) -> tuple[faiss.Index, str]:
    """An inner-product index over L2-normalised vectors; returns it and the kind actually built."""
    n, dim = vectors.shape
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if kind == "ivf":
        nlist = int(min(IVF_LISTS_PER_SQRT_N * np.sqrt(max(n, 1)), n // IVF_MIN_POINTS_PER_LIST))
        if nlist >= 2:
            quantizer = faiss.IndexFlatIP(dim)
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
            index.train(vectors)
            index.add_with_ids(vectors, ids)
            index.nprobe = max(1, nlist // IVF_PROBE_FRACTION)
            return index, "ivf"
        log.info("only %d vectors: too few for IVF, building a flat index", n)
        kind = "flat"
    base: faiss.Index
    if kind == "hnsw":
        hnsw = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        base = hnsw
    else:
        base = faiss.IndexFlatIP(dim)
    mapped = faiss.IndexIDMap2(base)
    if n:
        mapped.add_with_ids(vectors, ids)
    return mapped, kind


@dataclass
class Checkpoint:
    """What a build folder holds at its last checkpoint: enough to go on from there."""

    key: str  # the source and the settings it was built from (see indexer.run_key)
    shots: list[dict]  # the movie's shots, so that a resumed run skips shot detection
    done_shot: int = 0  # every shot up to this id is written; none after it
    film_s: float = 0.0  # film time done
    crops: int = 0  # crop rows written
    vectors: dict[str, int] = field(default_factory=dict)  # rows in each channel's vector file
    counts: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    next_track: int = 1
    warnings: list[str] = field(default_factory=list)
    resumed: int = 0  # how many times this build was resumed

    @classmethod
    def read(cls, folder: Path) -> "Checkpoint | None":
        try:
            data = json.loads((folder / CHECKPOINT).read_text(encoding="utf-8"))
            return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
        except (OSError, ValueError, TypeError, KeyError):
            return None


class _VectorFile:
    """One channel's vectors and crop ids, appended to raw files and read back at the end."""

    def __init__(self, folder: Path, channel: str, dim: int) -> None:
        self.dim = dim
        self.vec_path = folder / f"{channel}.f32"
        self.ids_path = folder / f"{channel}.ids"
        self.rows = self.ids_path.stat().st_size // 8 if self.ids_path.exists() else 0
        self._vec = open(self.vec_path, "ab")
        self._ids = open(self.ids_path, "ab")

    def append(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        self._vec.write(vectors.tobytes())
        self._ids.write(np.ascontiguousarray(ids, dtype=np.int64).tobytes())
        self.rows += len(ids)

    def sync(self) -> None:
        for fh in (self._vec, self._ids):
            fh.flush()
            os.fsync(fh.fileno())

    def truncate(self, rows: int) -> None:
        """Drop what was written after a checkpoint of `rows` rows."""
        self.sync()
        for fh, width in ((self._vec, 4 * self.dim), (self._ids, 8)):
            fh.truncate(rows * width)
        self.rows = rows

    def read(self) -> tuple[np.ndarray, np.ndarray]:
        self.sync()
        vecs = np.fromfile(self.vec_path, dtype=np.float32).reshape(-1, self.dim)
        ids = np.fromfile(self.ids_path, dtype=np.int64)
        return vecs[: len(ids)], ids[: len(vecs)]

    def close(self) -> None:
        self._vec.close()
        self._ids.close()


class IndexWriter:
    """Streams shots, crops and vectors into a hidden folder; `commit` swaps it into place.

    With a `key`, the folder is named by it and resumes from its checkpoint when one was left
    by the same key; `resumed` is that checkpoint then, else None. `start(dims)` opens the
    channels' vector files (known once the models are loaded) before anything is added.

    The build holds its lock (`BuildLock`) from here to `commit` or `abort`: no other run builds
    this slug meanwhile, and tidy-up leaves the folder alone. `name` is the movie's: an index of
    another movie in the slug's folder is replaced only with `replace` (see `_check_slug`)."""

    def __init__(self, index_dir: Path, slug: str, key: str | None = None, *, name: str,
                 replace: bool = False) -> None:
        self.index_dir = index_dir
        self.slug = slug
        self.key = key
        self.name = name
        suffix = key[:16] if key else uuid.uuid4().hex[:8]
        self.tmp = index_dir / f"{BUILDING_PREFIX}{slug}-{suffix}"
        self.resumed: Checkpoint | None = None
        self._files: dict[str, _VectorFile] = {}
        self._next_crop = 0
        self._portrait_area: dict[int, float] = {}  # track id -> area of its portrait's face so far
        self._lock = BuildLock(self.tmp)
        self.db: sqlite3.Connection | None = None
        index_dir.mkdir(parents=True, exist_ok=True)
        with index_dir_lock(index_dir):
            # Under the lock, the check that nobody builds this slug and the claim are one step.
            tidy_locked(index_dir)
            self._claim_or_clear(replace)
            fresh = not self.tmp.exists()
            try:
                if fresh:
                    self.tmp.mkdir()
                    (self.tmp / THUMBS).mkdir()
                    (self.tmp / VECTORS).mkdir()
                self._lock.acquire(name)
            except BaseException:
                self._lock.release()
                if fresh:
                    shutil.rmtree(self.tmp, ignore_errors=True)
                raise
        try:
            self.db = sqlite3.connect(self.tmp / META)
            if fresh:
                self.db.executescript(_SCHEMA)
            self.db.executescript(_BUILD_SCHEMA)
            self.db.executescript(FRAMES_SCHEMA)  # also into a resumed build of older code
        except BaseException:
            self.abort()
            raise

    def _conn(self) -> sqlite3.Connection:
        if self.db is None:
            raise RuntimeError("the build's database is closed")
        return self.db

    def start(self, dims: dict[str, int]) -> None:
        """Open each channel's vector file; a resumed build goes back to its checkpoint first."""
        self._files = {name: _VectorFile(self.tmp / VECTORS, name, dim) for name, dim in dims.items()}
        if self.resumed is not None:
            self._rewind(self.resumed)
        self._portrait_area = dict(self._conn().execute("SELECT track_id, area FROM track_faces").fetchall())

    def _claim_or_clear(self, replace: bool) -> None:
        """Refuse when a live process builds this slug, or when the slug's folder holds another
        movie (without `replace`); resume this key's build when it left a checkpoint; remove
        stopped builds of this slug from other keys (other settings, or a changed file)."""
        builds = [entry for entry in self.index_dir.glob(f"{BUILDING_PREFIX}{self.slug}-*")
                  if entry.name.rsplit("-", 1)[0] == f"{BUILDING_PREFIX}{self.slug}"]
        for entry in builds:
            holder = build_holder(entry)
            if holder is not None:
                raise BadInputError(_busy_message(self.name, self.slug, *holder))
        self._check_slug(replace)
        for entry in builds:
            checkpoint = Checkpoint.read(entry) if entry == self.tmp else None
            if checkpoint is not None and self.key and checkpoint.key == self.key:
                self.resumed = checkpoint
            else:
                shutil.rmtree(entry, ignore_errors=True)

    def _check_slug(self, replace: bool) -> None:
        """Two names can share a slug ("Titanic", "Titanic!", "Titánic"): re-indexing the same
        movie (`same_movie_name`) replaces its index, another movie's is replaced only when asked.
        A folder castfinder did not write is never replaced."""
        final = self.index_dir / self.slug
        if not (final.exists() or final.is_symlink()):
            return
        if final.is_symlink() or not final.is_dir() or not ((final / MANIFEST).exists() or (final / META).exists()):
            # Not even with --replace: with --index-dir ~, "Documents" would otherwise replace ~/Documents.
            raise BadInputError(
                f"{final} is in the way of the index of {self.name!r} and is not an index castfinder wrote; "
                f"move it out of {self.index_dir}, or give this movie another --movie name.")
        existing = _indexed_name(final)
        if existing is None or same_movie_name(existing, self.name) or replace:
            return  # the same movie, or a damaged index whose name cannot be read, or asked for
        raise BadInputError(
            f"{self.name!r} would be stored as {self.slug!r}, where {existing!r} is already indexed; "
            f"add --replace to replace {existing!r} with it, or give this movie another --movie name.")

    def _rewind(self, checkpoint: Checkpoint) -> None:
        """Back to the checkpoint: what a killed run wrote after it goes."""
        db = self._conn()
        db.execute("DELETE FROM faces WHERE crop_id >= ?", (checkpoint.crops,))
        db.execute("DELETE FROM track_faces WHERE crop_id >= ?", (checkpoint.crops,))
        db.execute("DELETE FROM crops WHERE id >= ?", (checkpoint.crops,))
        db.execute("DELETE FROM shots WHERE id > ?", (checkpoint.done_shot,))
        db.execute("DELETE FROM frame_descriptors WHERE shot_id > ?", (checkpoint.done_shot,))
        db.commit()
        for name, file in self._files.items():
            file.truncate(checkpoint.vectors.get(name, 0))
        self._next_crop = checkpoint.crops

    def checkpoint(self, checkpoint: Checkpoint) -> None:
        """Make everything written so far durable, then record `checkpoint` (its crop and vector
        counts are filled in here)."""
        self._conn().commit()
        for file in self._files.values():
            file.sync()
        checkpoint.crops = self._next_crop
        checkpoint.vectors = {name: file.rows for name, file in self._files.items()}
        write_json_durably(self.tmp / CHECKPOINT, asdict(checkpoint))

    def add_shot(self, shot: Shot, thumbnail: np.ndarray, thumb_frame_s: float, persons: int, thumb_px: int) -> None:
        name = f"{THUMBS}/shot_{shot.id:05d}.jpg"
        image = Image.fromarray(thumbnail)
        image.thumbnail((thumb_px, thumb_px), Image.Resampling.LANCZOS)
        # Encoded in memory and written by Python: PIL's encoder writing to the file itself ignores a
        # short write, so a full disk or a file-size limit left a truncated JPEG without an error.
        jpeg = io.BytesIO()
        image.save(jpeg, "JPEG", quality=THUMB_JPEG_QUALITY)
        (self.tmp / name).write_bytes(jpeg.getvalue())
        self._conn().execute(
            "INSERT INTO shots VALUES (?,?,?,?,?,?,?,?,?,?)",
            (shot.id, shot.number, shot.scene, shot.start_frame, shot.end_frame,
             shot.start_s, shot.end_s, name, thumb_frame_s, persons),
        )

    def add_crops(self, rows: list[CropRow], vectors: dict[str, tuple[np.ndarray, np.ndarray]],
                  faces: Sequence[tuple[int, BBox]] = ()) -> np.ndarray:
        """`vectors`: per channel, the vectors and which of `rows` they belong to (a face channel
        covers only the crops with a face); `faces`: (row, face box in frame pixels)."""
        ids = np.arange(self._next_crop, self._next_crop + len(rows), dtype=np.int64)
        self._next_crop += len(rows)
        db = self._conn()
        db.executemany(
            "INSERT INTO crops VALUES (?,?,?,?,?,?,?,?,?,?)",
            [(int(i), r.shot_id, r.frame_index, r.frame_s, *r.bbox, r.det_score, r.track_id)
             for i, r in zip(ids, rows)],
        )
        db.executemany("INSERT INTO faces VALUES (?,?,?,?,?)", [(int(ids[row]), *box) for row, box in faces])
        for channel, (vecs, which) in vectors.items():
            self._files[channel].append(vecs, ids[np.asarray(which, dtype=np.int64)])
        return ids

    def wants_portrait(self, track_id: int, area: float) -> bool:
        """Whether a face of `area` px² beats the track's portrait so far (encode it only then)."""
        return area > self._portrait_area.get(track_id, 0.0)

    def add_portrait(self, track_id: int, crop_id: int, area: float, jpeg: bytes) -> None:
        """The track's portrait, replacing a smaller one."""
        self._portrait_area[track_id] = area
        self._conn().execute("INSERT OR REPLACE INTO track_faces VALUES (?,?,?,?)", (track_id, crop_id, area, jpeg))

    def write_cast(self, channel: str, threshold: float) -> int:
        """Cluster the face tracks of `channel` into the cast (core/cast.py) and store it: the
        tables `cast_members` and `cast_tracks`, and a portrait per member in cast/. Returns how
        many members were found."""
        from ..cast import find_identities

        db = self._conn()
        db.commit()
        crops = np.asarray(db.execute("SELECT shot_id, frame_s, track_id FROM crops ORDER BY id").fetchall(),
                           dtype=np.float64).reshape(-1, 3)
        durations = dict(db.execute("SELECT id, end_s - start_s FROM shots").fetchall())
        vecs, ids = self._files[channel].read()
        crop_track = crops[:, 2].astype(np.int64)
        identities = find_identities(vecs, ids, crop_track, threshold)
        portraits = {int(t): (float(area), bytes(jpeg)) for t, area, jpeg in
                     db.execute("SELECT track_id, area, jpeg FROM track_faces")}
        db.executescript(_CAST_SCHEMA)
        (self.tmp / CAST).mkdir(exist_ok=True)
        vec_of = dict(zip(ids.tolist(), range(len(ids))))
        for number, identity in enumerate(identities, start=1):
            in_tracks = np.isin(crop_track, identity.tracks)
            shots = np.unique(crops[in_tracks, 0].astype(np.int64))
            screen = float(sum(durations.get(int(s), 0.0) for s in shots))
            first = float(crops[in_tracks, 1].min())
            name = _pick_portrait(identity, portraits, crop_track, vecs, vec_of)
            path = None
            if name is not None:
                path = f"{CAST}/member_{number:04d}.jpg"
                (self.tmp / path).write_bytes(portraits[name][1])
            db.execute("INSERT INTO cast_members VALUES (?,?,?,?)", (number, screen, first, path))
            db.executemany("INSERT INTO cast_tracks VALUES (?,?)", [(t, number) for t in identity.tracks])
        db.commit()
        return len(identities)

    def add_frames(self, frames: Sequence[tuple[int, int, float]], kind: str, vectors: np.ndarray) -> None:
        """Whole-frame descriptors: (shot id, frame index, time) per row of `vectors`."""
        self._conn().executemany(
            "INSERT INTO frame_descriptors (shot_id, frame_index, frame_s, kind, vec) VALUES (?,?,?,?,?)",
            [(sid, fi, fs, kind, np.ascontiguousarray(v, dtype=np.float32).tobytes())
             for (sid, fi, fs), v in zip(frames, vectors)])

    def calibrate(self, fit: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], T]) -> dict[str, T]:
        """Per channel, `fit(vectors, frames, boxes, shots)` over everything added so far."""
        db = self._conn()
        db.commit()
        meta = np.asarray(db.execute(
            "SELECT frame_index, shot_id, x1, y1, x2, y2 FROM crops ORDER BY id").fetchall(),
            dtype=np.float64).reshape(-1, 6)
        out: dict[str, T] = {}
        for channel, file in self._files.items():
            vecs, ids = file.read()
            if len(ids) < 2:
                continue
            out[channel] = fit(vecs, meta[ids, 0].astype(np.int64), meta[ids, 2:6], meta[ids, 1].astype(np.int64))
        return out

    def commit(self, draft: ManifestDraft, faiss_kind: str) -> Path:
        """Build each channel's FAISS index, write the manifest (`draft` completed with what only
        the writer knows) and swap the folder into place; returns the index's folder. Until the
        manifest is written the checkpoint stays, so a disk fault here leaves a build to resume."""
        db = self._conn()
        # The portraits were for the cast: written as files by now, or never needed.
        db.execute("DROP TABLE IF EXISTS track_faces")
        db.commit()
        db.execute("VACUUM")
        db.close()
        self.db = None
        channels: dict[str, JsonValue] = {}
        for channel, file in self._files.items():
            vecs, ids = file.read()
            file.close()
            index, built = build_faiss(vecs, ids, faiss_kind)
            del vecs
            name = f"{channel}.faiss"
            (self.tmp / name).write_bytes(faiss.serialize_index(index).tobytes())
            del index
            plan = draft.channels.get(channel)
            channels[channel] = {**(plan.to_json() if plan is not None else {}), "dim": file.dim, "file": name,
                                 "vectors": int(len(ids)), "faiss": built}
        # Validated as any manifest is when read: what is written here is what loads.
        manifest = Manifest.model_validate({
            **draft.to_json(), "channels": channels, "format": FORMAT_VERSION, "complete": True, "slug": self.slug,
            "build_id": uuid.uuid4().hex, "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        })
        write_json_durably(self.tmp / MANIFEST, manifest.to_json())
        # Complete: what was kept for resuming goes.
        (self.tmp / CHECKPOINT).unlink(missing_ok=True)
        shutil.rmtree(self.tmp / VECTORS, ignore_errors=True)
        _reached("before_swap")
        return self._swap_in()

    def _swap_in(self) -> Path:
        """Rename the build into place, the previous index aside and away, under the index folder's
        lock: readers see the old index or the new one, and tidy-up never meets the swap midway."""
        final = self.index_dir / self.slug
        with index_dir_lock(self.index_dir):
            (self.tmp / PID).unlink(missing_ok=True)  # not published; the open descriptor keeps the lock
            old = None
            if final.exists():
                old = self.index_dir / f"{OLD_PREFIX}{self.slug}-{uuid.uuid4().hex[:8]}"
                os.rename(final, old)
            try:
                _reached("swapped_aside" if old is not None else "swapping")
                os.rename(self.tmp, final)
            except BaseException:
                if old is not None and not final.exists():
                    os.rename(old, final)  # the previous index back where it was
                raise
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        self._lock.release()
        return final

    def abort(self) -> Checkpoint | None:
        """Stop writing. A build with a checkpoint stays (without its lock file) for the next run
        to resume, and its checkpoint is returned; one without goes. Never raises an OSError: it
        runs while another error (a full disk, say) is on its way to the user."""
        try:
            if self.db is not None:
                self.db.close()
        except sqlite3.Error:
            pass
        self.db = None
        for file in self._files.values():
            try:
                file.close()
            except OSError:
                pass  # the buffered rows past the checkpoint: dropped on resume anyway
        kept = Checkpoint.read(self.tmp) if self.key else None
        if kept is not None and kept.key != self.key:
            kept = None
        # Under the folder's lock: a run claiming this build waits until it is kept or gone.
        with index_dir_lock(self.index_dir):
            if kept is not None:
                try:
                    (self.tmp / PID).unlink(missing_ok=True)
                except OSError:
                    pass  # the lock itself goes with this process's descriptor
            else:
                shutil.rmtree(self.tmp, ignore_errors=True)
            self._lock.release()
        return kept


