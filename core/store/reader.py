"""Reading indexes: the folder's movies and damaged indexes (`IndexCatalog`, `list_indexes`), and
`MovieIndex`, one loaded index."""

from __future__ import annotations

import logging
import os
import shlex
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from ..errors import DamagedIndexError, IndexCorruptError
from ..search.calibration import Calibration
from ..types import CastMember, DamagedMovie, MovieInfo, Shot
from .health import check_files, regular_size
from .layout import META
from .locks import index_dir_lock
from .manifest import ChannelSpec, IndexDamage, Manifest, movie_info, read_manifest, read_manifest_json

log = logging.getLogger(__name__)

HNSW_EF_SEARCH_MIN = 64
# A JPEG begins with SOI and ends with EOI: a thumbnail cut short (or zeroed) lacks one of them.
_JPEG_START, _JPEG_END = b"\xff\xd8", b"\xff\xd9"


@dataclass(frozen=True)
class Listing:
    """What an index folder holds: the movies that can be searched, and the damaged indexes."""

    movies: list[MovieInfo]
    damaged: list[DamagedMovie]


# A folder's verdict is kept while none of its top-level files changed (name, size, time, inode).
_Signature = tuple[tuple[str, int, int, int], ...]


class IndexCatalog:
    """The movies of one index folder, each checked (manifest and files, see health.py) once per
    version of its files: listing again costs a few `stat`s per movie. Thread-safe."""

    def __init__(self, index_dir: Path) -> None:
        self.index_dir = index_dir
        self._lock = threading.Lock()
        self._verdicts: dict[str, tuple[_Signature, MovieInfo | DamagedMovie | None]] = {}

    def scan(self) -> Listing:
        with index_dir_lock(self.index_dir, shared=True):  # no index missing for the moment of a swap
            return self._scan()

    def _scan(self) -> Listing:
        try:
            entries = sorted(e for e in self.index_dir.iterdir() if not e.name.startswith(".") and e.is_dir())
        except FileNotFoundError:
            return Listing([], [])
        except OSError as exc:
            raise IndexCorruptError(f"The index folder {self.index_dir} cannot be read ({exc.strerror or exc}); "
                                    "check CASTFINDER_INDEX_DIR (or --index-dir) and its permissions.") from None
        movies: list[MovieInfo] = []
        damaged: list[DamagedMovie] = []
        verdicts = {}
        for entry in entries:
            verdict = self._verdict(entry)
            verdicts[entry.name] = verdict
            if isinstance(verdict[1], MovieInfo):
                movies.append(verdict[1])
            elif isinstance(verdict[1], DamagedMovie):
                damaged.append(verdict[1])
        with self._lock:
            self._verdicts = verdicts  # folders gone since the last scan are forgotten
        return Listing(movies, damaged)

    def _verdict(self, folder: Path) -> tuple[_Signature, MovieInfo | DamagedMovie | None]:
        signature = _signature(folder)
        with self._lock:
            known = self._verdicts.get(folder.name)
        if known is not None and known[0] == signature:
            return known
        return signature, inspect_folder(folder)

    def mark_damaged(self, movie: DamagedMovie) -> None:
        """Record what a load found that the listing's cheap checks did not, until the files change."""
        with self._lock:
            self._verdicts[movie.path.name] = (_signature(movie.path), movie)


def _signature(folder: Path) -> _Signature:
    out = []
    try:
        with os.scandir(folder) as it:
            for entry in it:
                try:
                    st = entry.stat(follow_symlinks=True)
                except OSError:
                    continue
                out.append((entry.name, st.st_size, st.st_mtime_ns, st.st_ino))
    except OSError:
        return ()
    return tuple(sorted(out))


def inspect_folder(folder: Path) -> MovieInfo | DamagedMovie | None:
    """A folder of the index folder: a movie, a damaged index, or nothing (no manifest, or an
    incomplete build: a leftover, not a movie). One folder's damage never reaches another's."""
    try:
        manifest = read_manifest(folder)
        if manifest is None:
            return None
        check_files(folder, manifest)
        return movie_info(folder, manifest)
    except IndexDamage as exc:
        return damaged_movie(folder, str(exc))
    except Exception as exc:  # a listing survives whatever one folder holds
        log.debug("checking %s failed", folder, exc_info=True)
        return damaged_movie(folder, f"it could not be checked ({type(exc).__name__}: {exc})")


def damaged_movie(folder: Path, reason: str) -> DamagedMovie:
    """`folder` as a damaged movie, named as its manifest still says where it can (for users to
    recognise it, and for the command that rebuilds it in place)."""
    name, source = folder.name, ""
    try:
        data = read_manifest_json(folder)
    except IndexDamage:
        data = None
    if isinstance(data, dict):
        if _printable(data.get("name")) and _slug_of(data["name"]) == folder.name:
            name = data["name"]
        src = data.get("source")
        if isinstance(src, dict) and _printable(src.get("path")):
            source = src["path"]
    return DamagedMovie(slug=folder.name, name=name, path=folder, reason=reason, source=source)


def _printable(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 500 and value.isprintable()


def _slug_of(name: str) -> str:
    from ..naming import slugify

    return slugify(name)


def list_indexes(index_dir: Path) -> list[MovieInfo]:
    """The movies in `index_dir` that can be searched (damaged indexes: `IndexCatalog.scan`)."""
    listing = IndexCatalog(index_dir).scan()
    for movie in listing.damaged:
        log.warning("skipping %s: %s", movie.path, movie.reason)
    return listing.movies


class MovieIndex:
    """A loaded, read-only index: FAISS in memory and crop metadata as numpy arrays.
    Safe to search from several threads at once."""

    def __init__(self, path: Path) -> None:
        # Under the index folder's shared lock, so that a re-index cannot swap the folder while its
        # files are read: what loads is all the old index or all the new one.
        with index_dir_lock(path.parent, shared=True):
            self._load(path)

    def _load(self, path: Path) -> None:
        self.path = path
        try:
            manifest = read_manifest(path)
            if manifest is None:
                raise IndexCorruptError(f"{path} holds no index (no complete manifest); build it with "
                                        f"castfinder index VIDEO --movie {shlex.quote(path.name)}.")
            self.manifest: Manifest = manifest
            self.info = movie_info(path, manifest)
            crops = check_files(path, manifest)
            self.faiss: dict[str, faiss.Index] = {}
            self.calibration: dict[str, Calibration] = {}
            for channel, spec in manifest.channels.items():
                self.faiss[channel] = _load_faiss(path, spec, crops)
                self.calibration[channel] = Calibration.from_json(spec.calibration)
            self._load_meta(path / META)
        except IndexDamage as exc:
            raise DamagedIndexError(damaged_movie(path, str(exc))) from None
        except (OSError, sqlite3.Error, ValueError, TypeError, KeyError, RuntimeError, MemoryError) as exc:
            # What the cheap checks let through and loading met: damage all the same.
            raise DamagedIndexError(damaged_movie(path, f"it cannot be loaded ({exc})")) from None

    def _load_meta(self, db_path: Path) -> None:
        db = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True)
        root = self.path.resolve()
        try:
            self.shots: dict[int, Shot] = {}
            self.thumbnails: dict[int, Path | None] = {}  # as the index records them; see `thumbnail`
            for row in db.execute(
                "SELECT id, number, scene, start_frame, end_frame, start_s, end_s, thumbnail FROM shots ORDER BY id"
            ):
                shot = Shot(*row[:7])
                self.shots[shot.id] = shot
                thumb = (root / row[7]).resolve() if isinstance(row[7], str) else None
                # A thumbnail outside the index folder is none of the index's.
                self.thumbnails[shot.id] = thumb if thumb is not None and thumb.is_relative_to(root) else None
            rows = db.execute("SELECT id, shot_id, frame_s, x1, y1, x2, y2, track_id FROM crops ORDER BY id").fetchall()
            faces = db.execute("SELECT crop_id, x1, y1, x2, y2 FROM faces").fetchall()
            self._load_cast(db, root)
        finally:
            db.close()
        table = np.asarray(rows, dtype=np.float64).reshape(-1, 8)
        if len(table) and not np.array_equal(table[:, 0], np.arange(len(table))):
            raise IndexDamage(f"{META}'s crop ids are not contiguous")
        self.crop_shot = table[:, 1].astype(np.int64)
        self.crop_time = table[:, 2]
        self.crop_bbox = table[:, 3:7]
        self.crop_track = table[:, 7].astype(np.int64)
        if not np.isin(self.crop_shot, np.fromiter(self.shots, np.int64, len(self.shots))).all():
            raise IndexDamage(f"{META}: a crop belongs to a shot that does not exist")
        self.face_box = {int(r[0]): tuple(r[1:]) for r in faces}

    def _load_cast(self, db: sqlite3.Connection, root: Path) -> None:
        """The cast's rows (core/cast.py), or None for an index built before casts existed or
        without a face channel. A cast that does not hold together is damage, like any table."""
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        self.cast_rows: list[tuple[int, float, float, Path | None]] | None = None
        self.track_identity: dict[int, int] = {}
        if not {"cast_members", "cast_tracks"} <= tables:
            return
        rows = []
        for ident, screen, first, portrait in db.execute(
                "SELECT id, screen_s, first_s, portrait FROM cast_members ORDER BY id"):
            path = (root / portrait).resolve() if isinstance(portrait, str) else None
            rows.append((int(ident), float(screen), float(first),
                         path if path is not None and path.is_relative_to(root) else None))
        self.cast_rows = rows
        known = {r[0] for r in rows}
        for track, ident in db.execute("SELECT track_id, identity_id FROM cast_tracks"):
            if ident not in known:
                raise IndexDamage(f"{META}: a cast track belongs to a member that does not exist")
            self.track_identity[int(track)] = int(ident)

    def cast(self) -> list[CastMember] | None:
        """The cast, the most screen time first (ties: who is seen first); None when the index
        has none (see `_load_cast`)."""
        if self.cast_rows is None:
            return None
        # The crops with a face vector: what a search from a member starts with.
        face = next((name for name, spec in self.manifest.channels.items() if spec.kind == "face"), None)
        held = _faiss_ids(self.faiss[face]) if face is not None else None
        face_crops = np.unique(held) if held is not None else np.zeros(0, np.int64)
        duration = max(self.info.duration_s, 1e-9)
        members = []
        for ident, screen, first, portrait in self.cast_rows:
            tracks = [t for t, i in self.track_identity.items() if i == ident]
            mine = np.isin(self.crop_track, tracks)
            shots = tuple(int(s) for s in np.unique(self.crop_shot[mine]))
            crops = tuple(int(c) for c in face_crops[mine[face_crops]]) if len(face_crops) else ()
            members.append((ident, screen, first, shots, len(tracks), crops, portrait))
        members.sort(key=lambda m: (-m[1], m[2], m[0]))
        return [CastMember(number=n, identity=ident, screen_s=screen, share=min(1.0, screen / duration),
                           shots=shots, first_s=first, tracks=tracks, crops=crops,
                           portrait=_whole_jpeg(portrait))
                for n, (ident, screen, first, shots, tracks, crops, portrait) in enumerate(members, start=1)]

    def thumbnail(self, shot_id: int) -> str | None:
        """The shot's thumbnail, or None when its file is missing, outside the index or not a
        whole JPEG (it must begin with SOI and end with EOI: 2 reads of 2 bytes, no decoding)."""
        return _whole_jpeg(self.thumbnails.get(shot_id))

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


def _whole_jpeg(path: Path | None) -> str | None:
    """`path` as a string when it is a whole JPEG (it begins with SOI and ends with EOI: 2 reads
    of 2 bytes, no decoding), else None: a damaged picture costs the picture, not the answer."""
    if path is None:
        return None
    try:
        size = regular_size(path)
        if size < 4:
            return None
        with open(path, "rb") as fh:
            start = fh.read(2)
            fh.seek(-2, os.SEEK_END)
            end = fh.read(2)
    except (IndexDamage, OSError):
        return None
    return str(path) if (start, end) == (_JPEG_START, _JPEG_END) else None


def _load_faiss(folder: Path, spec: ChannelSpec, crops: int) -> faiss.Index:
    """The channel's FAISS index (its file checked by `check_files`), checked against the manifest
    and the crops as faiss reads it."""
    data = np.fromfile(folder / spec.file, dtype=np.uint8)
    index = faiss.deserialize_index(data)
    del data
    if index.d != spec.dim or index.ntotal != spec.vectors or index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise IndexDamage(f"{spec.file} holds {index.ntotal} {index.d}-d vectors, not the manifest's "
                          f"{spec.vectors} {spec.dim}-d")
    ids = _faiss_ids(index)
    if ids is None:
        raise IndexDamage(f"{spec.file} is not a kind of FAISS index castfinder writes")
    if len(ids) and (ids.min() < 0 or ids.max() >= crops):
        bad = int(ids.min() if ids.min() < 0 else ids.max())
        raise IndexDamage(f"{spec.file} holds a vector of crop {bad}, but {META} has crops 0 to {crops - 1}")
    if isinstance(faiss.downcast_index(index), faiss.IndexIVF):
        # Propagation reads stored vectors back by crop id. (faiss's bundled stubs lack DirectMap.)
        hashtable = faiss.DirectMap.Hashtable  # type: ignore[attr-defined]
        faiss.extract_index_ivf(index).set_direct_map_type(hashtable)
    return index


def _faiss_ids(index: faiss.Index) -> np.ndarray | None:
    """The crop ids a FAISS index holds: an ID map's, or those in an IVF index's lists."""
    if isinstance(index, faiss.IndexIDMap2):
        return faiss.vector_to_array(index.id_map)
    base = faiss.downcast_index(index)
    if not isinstance(base, faiss.IndexIVF):
        return None
    lists = base.invlists
    if lists is None:
        return None
    parts = [np.zeros(0, np.int64)]
    for number in range(base.nlist):
        size = lists.list_size(number)
        if size:
            parts.append(faiss.rev_swig_ptr(lists.get_ids(number), size).copy())
    return np.concatenate(parts)
