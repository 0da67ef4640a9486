"""Reading indexes: listing the folder's movies, and `MovieIndex`, one loaded index."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import faiss
import numpy as np

from ..errors import IndexCorruptError
from ..search.calibration import Calibration
from ..types import MovieInfo, Shot
from .layout import MANIFEST, META
from .locks import index_dir_lock
from .manifest import ChannelSpec, Manifest, movie_info, read_manifest

log = logging.getLogger(__name__)

HNSW_EF_SEARCH_MIN = 64


def list_indexes(index_dir: Path) -> list[MovieInfo]:
    if not index_dir.is_dir():
        return []
    with index_dir_lock(index_dir, shared=True):  # no index missing for the moment of a swap
        return _list_indexes(index_dir)


def _list_indexes(index_dir: Path) -> list[MovieInfo]:
    found = []
    for entry in sorted(index_dir.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        manifest = read_manifest(entry)
        if manifest is not None:
            found.append(movie_info(entry, manifest))
        elif (entry / MANIFEST).exists():
            log.warning("skipping %s: its manifest is not that of a complete index of this version "
                        "(rebuild it with `castfinder index`)", entry)
    return found


class MovieIndex:
    """A loaded, read-only index: FAISS in memory and crop metadata as numpy arrays.
    Safe to search from several threads at once."""

    def __init__(self, path: Path) -> None:
        # Under the index folder's shared lock, so that a re-index cannot swap the folder while its
        # files are read: what loads is all the old index or all the new one.
        with index_dir_lock(path.parent, shared=True):
            self._load(path)

    def _load(self, path: Path) -> None:
        manifest = read_manifest(path)
        if manifest is None:
            raise IndexCorruptError(f"{path} is not a complete index; rebuild it with `castfinder index`.")
        self.path = path
        self.manifest: Manifest = manifest
        try:
            self.info = movie_info(path, manifest)
            self.faiss: dict[str, faiss.Index] = {}
            self.calibration: dict[str, Calibration] = {}
            for channel, spec in manifest.channels.items():
                data = np.fromfile(path / spec.file, dtype=np.uint8)
                self.faiss[channel] = faiss.deserialize_index(data)
                if isinstance(faiss.downcast_index(self.faiss[channel]), faiss.IndexIVF):
                    # Propagation reads stored vectors back by crop id. (faiss's bundled stubs lack DirectMap.)
                    hashtable = faiss.DirectMap.Hashtable  # type: ignore[attr-defined]
                    faiss.extract_index_ivf(self.faiss[channel]).set_direct_map_type(hashtable)
                self.calibration[channel] = Calibration.from_json(spec.calibration)
            self._load_meta(path / META)
        except (OSError, KeyError, RuntimeError, sqlite3.Error, ValueError) as exc:
            raise IndexCorruptError(
                f"The index of {manifest.name!r} is damaged ({exc}); rebuild it with `castfinder index`."
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

    def channel(self, name: str) -> ChannelSpec:
        """What the manifest says of channel `name` (its model, kind, dim, …); KeyError if the index lacks it."""
        return self.manifest.channels[name]

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
            # (faiss's bundled stubs lack SearchParametersHNSW.)
            params = faiss.SearchParametersHNSW(efSearch=max(k, HNSW_EF_SEARCH_MIN))  # type: ignore[attr-defined]
            return index.search(np.ascontiguousarray(queries, dtype=np.float32), k, params=params)
        return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
