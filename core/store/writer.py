"""Writing an index: shots, crops and vectors stream into a hidden build folder, checkpointed
as they go; `commit` builds the FAISS indexes and swaps the folder into place."""

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
from typing import Callable, Sequence, TypeVar

import faiss
import numpy as np
from PIL import Image
from pydantic import JsonValue

from ..errors import BadInputError
from ..types import BBox, Shot
from .layout import BUILDING_PREFIX, CHECKPOINT, FORMAT_VERSION, MANIFEST, META, OLD_PREFIX, PID, THUMBS, VECTORS
from .manifest import Manifest, ManifestDraft, write_json_durably
from .recovery import pid_alive, pid_of

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
            (self.tmp / THUMBS).mkdir()
            (self.tmp / VECTORS).mkdir()
        (self.tmp / PID).write_text(str(os.getpid()))
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
            pid = pid_of(entry)
            if pid is not None and pid != os.getpid() and pid_alive(pid):
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
        write_json_durably(self.tmp / CHECKPOINT, asdict(checkpoint))

    def add_shot(self, shot: Shot, thumbnail: np.ndarray, thumb_frame_s: float, persons: int, thumb_px: int) -> None:
        name = f"{THUMBS}/shot_{shot.id:05d}.jpg"
        image = Image.fromarray(thumbnail)
        image.thumbnail((thumb_px, thumb_px), Image.Resampling.LANCZOS)
        image.save(self.tmp / name, "JPEG", quality=THUMB_JPEG_QUALITY)
        self.db.execute(
            "INSERT INTO shots VALUES (?,?,?,?,?,?,?,?,?,?)",
            (shot.id, shot.number, shot.scene, shot.start_frame, shot.end_frame,
             shot.start_s, shot.end_s, name, thumb_frame_s, persons),
        )

    def add_crops(self, rows: list[CropRow], vectors: dict[str, tuple[np.ndarray, np.ndarray]],
                  faces: Sequence[tuple[int, BBox]] = ()) -> None:
        """`vectors`: per channel, the vectors and which of `rows` they belong to (a face channel
        covers only the crops with a face); `faces`: (row, face box in frame pixels)."""
        ids = np.arange(self._next_crop, self._next_crop + len(rows), dtype=np.int64)
        self._next_crop += len(rows)
        self.db.executemany(
            "INSERT INTO crops VALUES (?,?,?,?,?,?,?,?,?,?)",
            [(int(i), r.shot_id, r.frame_index, r.frame_s, *r.bbox, r.det_score, r.track_id)
             for i, r in zip(ids, rows)],
        )
        self.db.executemany("INSERT INTO faces VALUES (?,?,?,?,?)", [(int(ids[row]), *box) for row, box in faces])
        for channel, (vecs, which) in vectors.items():
            self._files[channel].append(vecs, ids[np.asarray(which, dtype=np.int64)])

    def calibrate(self, fit: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], T]) -> dict[str, T]:
        """Per channel, `fit(vectors, frames, boxes, shots)` over everything added so far."""
        self.db.commit()
        meta = np.asarray(self.db.execute(
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
        the writer knows) and swap the folder into place; returns the index's folder."""
        self.db.commit()
        self.db.close()
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
        shutil.rmtree(self.tmp / VECTORS, ignore_errors=True)
        # Validated as any manifest is when read: what is written here is what loads.
        manifest = Manifest.model_validate({
            **draft.to_json(), "channels": channels, "format": FORMAT_VERSION, "complete": True, "slug": self.slug,
            "build_id": uuid.uuid4().hex, "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        })
        for leftover in (PID, CHECKPOINT):
            (self.tmp / leftover).unlink(missing_ok=True)
        write_json_durably(self.tmp / MANIFEST, manifest.to_json())
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
            (self.tmp / PID).unlink(missing_ok=True)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


