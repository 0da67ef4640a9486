"""On-disk indexes: `<index_dir>/<slug>/` holds

- `manifest.json`: what was built, how, with which models; written last, so its presence with
  `"complete": true` is what makes an index loadable;
- `meta.sqlite`: shots and crops (every vector's shot, frame time, box, detection score);
- `<channel>.faiss`: one FAISS index per embedding channel, vector ids = crop ids;
- `thumbs/shot_<id>.jpg`: one thumbnail per shot.

Indexes are built in a hidden sibling folder and swapped in with renames at the end, so an
interrupted run leaves the previous index untouched and never a half index that loads. Vectors
stream to raw files there (`vectors/<channel>.f32` and `.ids`), so memory does not grow with
the film. Every few minutes of film the build folder is checkpointed (`checkpoint.json`, written
after the database commit and the vector files' fsync): a run interrupted by Ctrl-C, kill -9 or
a power cut resumes from the last checkpoint when the same source is indexed with the same
settings (the folder's name and the checkpoint carry a key of both), and starts afresh otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import faiss
import numpy as np
from PIL import Image

from .calibration import Calibration
from .errors import BadInputError, IndexCorruptError
from .types import MovieInfo, Shot

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
MANIFEST = "manifest.json"
META = "meta.sqlite"
BUILDING_PREFIX = ".building-"
CHECKPOINT = "checkpoint.json"
VECTORS = "vectors"
OLD_PREFIX = ".old-"
HNSW_M = 32
IVF_MIN_POINTS_PER_LIST = 39  # FAISS warns below this many training points per list

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


@dataclass(frozen=True)
class CropRow:
    shot_id: int
    frame_index: int
    frame_s: float
    bbox: tuple[float, float, float, float]
    det_score: float
    track_id: int = -1  # assigned by the tracker


def build_faiss(vectors: np.ndarray, ids: np.ndarray, kind: str) -> tuple[faiss.Index, str]:
    """An inner-product index over L2-normalised vectors; returns it and the kind actually built."""
    n, dim = vectors.shape
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if kind == "ivf":
        nlist = int(min(4 * np.sqrt(max(n, 1)), n // IVF_MIN_POINTS_PER_LIST))
        if nlist >= 2:
            quantizer = faiss.IndexFlatIP(dim)
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
            index.train(vectors)
            index.add_with_ids(vectors, ids)
            index.nprobe = max(1, nlist // 8)
            return index, "ivf"
        log.info("only %d vectors: too few for IVF, building a flat index", n)
        kind = "flat"
    if kind == "hnsw":
        base = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        base.hnsw.efConstruction = 80
    else:
        base = faiss.IndexFlatIP(dim)
    index = faiss.IndexIDMap2(base)
    if n:
        index.add_with_ids(vectors, ids)
    return index, kind


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
    channels' vector files (known once the models are loaded) before anything is added."""

    def __init__(self, index_dir: Path, slug: str, key: str | None = None) -> None:
        self.index_dir = index_dir
        self.slug = slug
        self.key = key
        index_dir.mkdir(parents=True, exist_ok=True)
        suffix = key[:16] if key else uuid.uuid4().hex[:8]
        self.tmp = index_dir / f"{BUILDING_PREFIX}{slug}-{suffix}"
        self.resumed: Checkpoint | None = None
        if key:
            self._claim_or_clear()
        fresh = not self.tmp.exists()
        if fresh:
            self.tmp.mkdir()
            (self.tmp / "thumbs").mkdir()
            (self.tmp / VECTORS).mkdir()
        (self.tmp / "pid").write_text(str(os.getpid()))
        self.db = sqlite3.connect(self.tmp / META)
        if fresh:
            self.db.executescript(_SCHEMA)
        self._files: dict[str, _VectorFile] = {}
        self._next_crop = 0

    def start(self, dims: dict[str, int]) -> None:
        """Open each channel's vector file; a resumed build goes back to its checkpoint first."""
        self._files = {name: _VectorFile(self.tmp / VECTORS, name, dim) for name, dim in dims.items()}
        if self.resumed is not None:
            self._rewind(self.resumed)

    def _claim_or_clear(self) -> None:
        """Resume this key's build when it left a checkpoint; refuse when a live process owns it;
        remove builds of this slug from other keys (other settings, or a changed file)."""
        for entry in self.index_dir.glob(f"{BUILDING_PREFIX}{self.slug}-*"):
            if entry.name.rsplit("-", 1)[0] != f"{BUILDING_PREFIX}{self.slug}":
                continue
            pid = _pid_of(entry)
            if pid is not None and pid != os.getpid() and _pid_alive(pid):
                if entry == self.tmp:
                    raise BadInputError(
                        f"This movie is already being indexed with these settings (process {pid}); "
                        "wait for it to finish, or stop it first.")
                continue
            checkpoint = Checkpoint.read(entry) if entry == self.tmp else None
            if checkpoint is not None and checkpoint.key == self.key:
                self.resumed = checkpoint
            else:
                shutil.rmtree(entry, ignore_errors=True)

    def _rewind(self, checkpoint: Checkpoint) -> None:
        """Back to the checkpoint: what a killed run wrote after it goes."""
        self.db.execute("DELETE FROM faces WHERE crop_id >= ?", (checkpoint.crops,))
        self.db.execute("DELETE FROM crops WHERE id >= ?", (checkpoint.crops,))
        self.db.execute("DELETE FROM shots WHERE id > ?", (checkpoint.done_shot,))
        self.db.commit()
        for name, file in self._files.items():
            file.truncate(checkpoint.vectors.get(name, 0))
        self._next_crop = checkpoint.crops

    def checkpoint(self, checkpoint: Checkpoint) -> None:
        """Make everything written so far durable, then record `checkpoint` (its crop and vector
        counts are filled in here)."""
        self.db.commit()
        for file in self._files.values():
            file.sync()
        checkpoint.crops = self._next_crop
        checkpoint.vectors = {name: file.rows for name, file in self._files.items()}
        _write_json_durably(self.tmp / CHECKPOINT, asdict(checkpoint))

    def add_shot(self, shot: Shot, thumbnail: np.ndarray, thumb_frame_s: float, persons: int, thumb_px: int) -> None:
        name = f"thumbs/shot_{shot.id:05d}.jpg"
        image = Image.fromarray(thumbnail)
        image.thumbnail((thumb_px, thumb_px), Image.Resampling.LANCZOS)
        image.save(self.tmp / name, "JPEG", quality=85)
        self.db.execute(
            "INSERT INTO shots VALUES (?,?,?,?,?,?,?,?,?,?)",
            (shot.id, shot.number, shot.scene, shot.start_frame, shot.end_frame,
             shot.start_s, shot.end_s, name, thumb_frame_s, persons),
        )

    def add_crops(self, rows: list[CropRow], vectors: dict[str, tuple[np.ndarray, np.ndarray]],
                  faces: list[tuple[int, tuple[float, float, float, float]]] = ()) -> None:
        """`vectors`: per channel, the vectors and which of `rows` they belong to (a face channel
        covers only the crops with a face); `faces`: (row, face box in frame pixels)."""
        ids = np.arange(self._next_crop, self._next_crop + len(rows), dtype=np.int64)
        self._next_crop += len(rows)
        self.db.executemany(
            "INSERT INTO crops VALUES (?,?,?,?,?,?,?,?,?,?)",
            [(int(i), r.shot_id, r.frame_index, r.frame_s, *r.bbox, r.det_score, r.track_id) for i, r in zip(ids, rows)],
        )
        self.db.executemany("INSERT INTO faces VALUES (?,?,?,?,?)", [(int(ids[row]), *box) for row, box in faces])
        for channel, (vecs, which) in vectors.items():
            self._files[channel].append(vecs, ids[np.asarray(which, dtype=np.int64)])

    def calibrate(self, fit) -> dict[str, object]:
        """Per channel, `fit(vectors, frames, boxes, shots)` over everything added so far."""
        self.db.commit()
        meta = np.asarray(self.db.execute(
            "SELECT frame_index, shot_id, x1, y1, x2, y2 FROM crops ORDER BY id").fetchall(),
            dtype=np.float64).reshape(-1, 6)
        out = {}
        for channel, file in self._files.items():
            vecs, ids = file.read()
            if len(ids) < 2:
                continue
            out[channel] = fit(vecs, meta[ids, 0].astype(np.int64), meta[ids, 2:6], meta[ids, 1].astype(np.int64))
        return out

    def commit(self, manifest: dict, faiss_kind: str) -> Path:
        self.db.commit()
        self.db.close()
        channels = {}
        for channel, file in self._files.items():
            vecs, ids = file.read()
            file.close()
            index, built = build_faiss(vecs, ids, faiss_kind)
            del vecs
            name = f"{channel}.faiss"
            (self.tmp / name).write_bytes(faiss.serialize_index(index).tobytes())
            del index
            channels[channel] = {**manifest["channels"].get(channel, {}), "dim": file.dim, "file": name,
                                 "vectors": int(len(ids)), "faiss": built}
        shutil.rmtree(self.tmp / VECTORS, ignore_errors=True)
        manifest = {**manifest, "format": FORMAT_VERSION, "complete": True, "channels": channels,
                    "slug": self.slug, "build_id": uuid.uuid4().hex,
                    "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        for leftover in ("pid", CHECKPOINT):
            (self.tmp / leftover).unlink(missing_ok=True)
        _write_json_durably(self.tmp / MANIFEST, manifest)
        return self._swap_in()

    def _swap_in(self) -> Path:
        final = self.index_dir / self.slug
        old = None
        if final.exists():
            old = self.index_dir / f"{OLD_PREFIX}{self.slug}-{uuid.uuid4().hex[:8]}"
            os.rename(final, old)
        os.rename(self.tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def abort(self) -> None:
        """Stop writing. A build with a checkpoint stays (without its pid) for the next run to
        resume; one without goes."""
        try:
            self.db.close()
        except sqlite3.Error:
            pass
        for file in self._files.values():
            file.close()
        if self.key and (self.tmp / CHECKPOINT).is_file():
            (self.tmp / "pid").unlink(missing_ok=True)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def _write_json_durably(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, ensure_ascii=False)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def tidy_index_dir(index_dir: Path) -> None:
    """Undo what a crash can leave: an old index renamed aside but not replaced is put back;
    building folders of processes that are gone are removed, unless they can be resumed."""
    if not index_dir.is_dir():
        return
    for entry in index_dir.iterdir():
        if entry.name.startswith(OLD_PREFIX):
            slug = entry.name[len(OLD_PREFIX):].rsplit("-", 1)[0]
            target = index_dir / slug
            if not target.exists() and (entry / MANIFEST).is_file():
                os.rename(entry, target)
            else:
                shutil.rmtree(entry, ignore_errors=True)
        elif entry.name.startswith(BUILDING_PREFIX):
            pid = _pid_of(entry)
            # A stopped build with a checkpoint waits to be resumed by `castfinder index`.
            if (pid is None or not _pid_alive(pid)) and not (entry / CHECKPOINT).is_file():
                shutil.rmtree(entry, ignore_errors=True)


def _pid_of(folder: Path) -> int | None:
    try:
        return int((folder / "pid").read_text())
    except (OSError, ValueError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_manifest(path: Path) -> dict | None:
    """The manifest of a complete index, or None when `path` is not one."""
    try:
        data = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("complete") is not True or data.get("format") != FORMAT_VERSION:
        return None
    return data


def movie_info(path: Path, manifest: dict) -> MovieInfo:
    channel = manifest["embedder"]
    spec = manifest["channels"][channel]
    counts = manifest.get("counts", {})
    return MovieInfo(
        slug=manifest["slug"],
        name=manifest["name"],
        path=path,
        duration_s=float(manifest.get("duration_s", 0.0)),
        shots=int(counts.get("shots", 0)),
        frames=int(counts.get("frames_sampled", 0)),
        vectors=int(spec.get("vectors", 0)),
        embedder=channel,
        embedder_model=spec.get("model", ""),
        dim=int(spec["dim"]),
        source=manifest.get("source", {}).get("path", ""),
        channels=tuple(manifest["channels"]),
        built_at=manifest.get("built_at", ""),
        build_id=manifest["build_id"],
    )


def list_indexes(index_dir: Path) -> list[MovieInfo]:
    if not index_dir.is_dir():
        return []
    found = []
    for entry in sorted(index_dir.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        manifest = read_manifest(entry)
        if manifest is None:
            continue
        try:
            found.append(movie_info(entry, manifest))
        except (KeyError, TypeError, ValueError):
            log.warning("skipping %s: its manifest is malformed", entry)
    return found


class MovieIndex:
    """A loaded, read-only index: FAISS in memory and crop metadata as numpy arrays.
    Safe to search from several threads at once."""

    def __init__(self, path: Path) -> None:
        manifest = read_manifest(path)
        if manifest is None:
            raise IndexCorruptError(f"{path} is not a complete index; rebuild it with `castfinder index`.")
        self.path = path
        self.manifest = manifest
        try:
            self.info = movie_info(path, manifest)
            self.faiss: dict[str, faiss.Index] = {}
            self.calibration: dict[str, Calibration] = {}
            for channel, spec in manifest["channels"].items():
                data = np.fromfile(path / spec["file"], dtype=np.uint8)
                self.faiss[channel] = faiss.deserialize_index(data)
                if isinstance(faiss.downcast_index(self.faiss[channel]), faiss.IndexIVF):
                    # Propagation reads stored vectors back by crop id.
                    faiss.extract_index_ivf(self.faiss[channel]).set_direct_map_type(faiss.DirectMap.Hashtable)
                self.calibration[channel] = Calibration.from_json(spec.get("calibration"))
            self._load_meta(path / META)
        except (OSError, KeyError, RuntimeError, sqlite3.Error, ValueError) as exc:
            raise IndexCorruptError(
                f"The index of {manifest.get('name', path.name)!r} is damaged ({exc}); rebuild it with `castfinder index`."
            ) from exc

    def _load_meta(self, db_path: Path) -> None:
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        try:
            self.shots: dict[int, Shot] = {}
            self.thumbnails: dict[int, Path] = {}
            for row in db.execute(
                "SELECT id, number, scene, start_frame, end_frame, start_s, end_s, thumbnail FROM shots ORDER BY id"
            ):
                shot = Shot(*row[:7])
                self.shots[shot.id] = shot
                self.thumbnails[shot.id] = (self.path / row[7]).resolve()
            rows = db.execute("SELECT id, shot_id, frame_s, x1, y1, x2, y2, track_id FROM crops ORDER BY id").fetchall()
            faces = db.execute("SELECT crop_id, x1, y1, x2, y2 FROM faces").fetchall()
        finally:
            db.close()
        table = np.asarray(rows, dtype=np.float64).reshape(-1, 8)
        if len(table) and not np.array_equal(table[:, 0], np.arange(len(table))):
            raise ValueError("crop ids are not contiguous")
        self.crop_shot = table[:, 1].astype(np.int64)
        self.crop_time = table[:, 2]
        self.crop_bbox = table[:, 3:7]
        self.crop_track = table[:, 7].astype(np.int64)
        self.face_box = {int(r[0]): tuple(r[1:]) for r in faces}

    def vectors(self, channel: str, crop_ids: np.ndarray) -> np.ndarray | None:
        """The stored vectors of some crops (FAISS ids), or None where the index cannot give them back."""
        index = self.faiss[channel]
        try:
            return np.stack([index.reconstruct(int(i)) for i in crop_ids]).astype(np.float32)
        except RuntimeError:  # an IVF index without a direct map, or an id the channel lacks
            return None

    def search(self, channel: str, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        index = self.faiss[channel]
        k = max(1, min(k, index.ntotal))
        if index.ntotal == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        base = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
        if isinstance(base, faiss.IndexHNSWFlat):
            # A per-call parameter object keeps concurrent searches from racing on efSearch.
            params = faiss.SearchParametersHNSW(efSearch=max(k, 64))
            return index.search(np.ascontiguousarray(queries, dtype=np.float32), k, params=params)
        return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
