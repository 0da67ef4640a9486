"""On-disk indexes: `<index_dir>/<slug>/` holds

- `manifest.json`: what was built, how, with which models; written last, so its presence with
  `"complete": true` is what makes an index loadable;
- `meta.sqlite`: shots and crops (every vector's shot, frame time, box, detection score);
- `<channel>.faiss`: one FAISS index per embedding channel, vector ids = crop ids;
- `thumbs/shot_<id>.jpg`: one thumbnail per shot.

Indexes are built in a hidden sibling folder and swapped in with renames at the end, so an
interrupted run leaves the previous index untouched and never a half index that loads.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import faiss
import numpy as np
from PIL import Image

from .calibration import Calibration
from .errors import IndexCorruptError
from .types import MovieInfo, Shot

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
MANIFEST = "manifest.json"
META = "meta.sqlite"
BUILDING_PREFIX = ".building-"
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


class IndexWriter:
    """Streams shots, crops and vectors into a hidden folder; `commit` swaps it into place."""

    def __init__(self, index_dir: Path, slug: str) -> None:
        self.index_dir = index_dir
        self.slug = slug
        index_dir.mkdir(parents=True, exist_ok=True)
        self.tmp = index_dir / f"{BUILDING_PREFIX}{slug}-{uuid.uuid4().hex[:8]}"
        self.tmp.mkdir()
        (self.tmp / "pid").write_text(str(os.getpid()))
        (self.tmp / "thumbs").mkdir()
        self.db = sqlite3.connect(self.tmp / META)
        self.db.executescript(_SCHEMA)
        self._vectors: dict[str, list[np.ndarray]] = {}
        self._ids: dict[str, list[np.ndarray]] = {}
        self._crop_meta: list[tuple] = []  # frame index, shot id, box per crop
        self._next_crop = 0

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
            self._vectors.setdefault(channel, []).append(np.asarray(vecs, dtype=np.float32))
            self._ids.setdefault(channel, []).append(ids[np.asarray(which, dtype=np.int64)])
        self._crop_meta.extend((r.frame_index, r.shot_id, *r.bbox) for r in rows)

    def calibrate(self, fit) -> dict[str, object]:
        """Per channel, `fit(vectors, frames, boxes, shots)` over everything added so far."""
        meta = np.asarray(self._crop_meta, dtype=np.float64).reshape(-1, 6)
        out = {}
        for channel, parts in self._vectors.items():
            ids = np.concatenate(self._ids[channel])
            if len(ids) < 2:
                continue
            out[channel] = fit(np.concatenate(parts), meta[ids, 0].astype(np.int64), meta[ids, 2:6],
                               meta[ids, 1].astype(np.int64))
        return out

    def commit(self, manifest: dict, faiss_kind: str, dims: dict[str, int]) -> Path:
        self.db.commit()
        self.db.close()
        channels = {}
        for channel, dim in dims.items():
            parts = self._vectors.get(channel, [])
            vecs = np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)
            ids = np.concatenate(self._ids[channel]) if parts else np.zeros((0,), np.int64)
            index, built = build_faiss(vecs, ids, faiss_kind)
            file = f"{channel}.faiss"
            (self.tmp / file).write_bytes(faiss.serialize_index(index).tobytes())
            channels[channel] = {**manifest["channels"].get(channel, {}), "dim": dim, "file": file,
                                 "vectors": int(len(ids)), "faiss": built}
        manifest = {**manifest, "format": FORMAT_VERSION, "complete": True, "channels": channels,
                    "slug": self.slug, "build_id": uuid.uuid4().hex,
                    "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        (self.tmp / "pid").unlink()
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
        try:
            self.db.close()
        except sqlite3.Error:
            pass
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
    building folders of processes that are gone are removed."""
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
            pid_file = entry / "pid"
            try:
                pid = int(pid_file.read_text())
            except (OSError, ValueError):
                pid = None
            if pid is None or not _pid_alive(pid):
                shutil.rmtree(entry, ignore_errors=True)


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
