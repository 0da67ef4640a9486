"""The catalogue: one index over every indexed movie, for "which movie is this?".

A per-movie index answers "where in *this* movie"; identifying a screenshot must look at all of
them without loading each. The catalogue keeps, for every movie, its frames' whole-frame
descriptors (core/search/framesig.py) and its people's vectors (one collection per channel and
model: vectors of different models cannot be compared), each row tagged with the movie's slug,
its build id, the shot, the frame time and the crop.

The store is Milvus: Milvus Lite, a local file beside the indexes (`<index_dir>/.catalog.db`),
or a Milvus server (`CASTFINDER_MILVUS_URI=http://…`), with the same client code. The
catalogue is derived data: `sync` brings it in line with the index folder (a movie indexed or
re-indexed since, by build id, is re-read from its index; a movie gone is removed), so a
catalogue that is missing, stale, or was busy while a movie was indexed (Milvus Lite lets one
process open its file at a time) catches up on its own. `Engine.index` updates it at the end of a
build; `castfinder catalog rebuild` builds it afresh.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

import numpy as np

from .errors import StorageError
from .search import framesig
from .settings import Settings
from .store import MovieIndex
from .store.layout import META
from .store.locks import file_lock
from .store.reader import _faiss_ids
from .types import MovieInfo

log = logging.getLogger(__name__)

PREFIX = "castfinder_"
MOVIES = PREFIX + "movies"
FRAMES = PREFIX + "frames"
LOCAL_NAME = ".catalog.db"  # hidden: the index folder's listing skips names starting with "."
# Held (flock) by the process changing the catalogue: processes sharing a Milvus server must not
# interleave one movie's delete and insert (its rows would be written twice).
LOCK_NAME = ".catalog.lock"
_INSERT_ROWS = 2000  # rows per insert call: Milvus caps a request's size
_OPEN_TRIES = 10  # Milvus Lite's file is open in another process (an `index` finishing): wait ...
_OPEN_WAIT_S = 0.5  # ... this long between tries
_SERVER_TRIES = 3  # a server refusing connections: restarting, or down (then say so soon)
_MAX_LIMIT = 16_384  # Milvus' largest top-k and query limit


@dataclass(frozen=True)
class Hit:
    """One catalogue row near a query vector."""

    slug: str
    shot_id: int
    frame_s: float
    crop: int  # the crop id in its movie's index; -1 for a whole frame
    similarity: float


@dataclass
class Entry:
    """What the catalogue holds of one movie."""

    slug: str
    name: str
    build_id: str
    descriptors: bool  # whether its index had frame descriptors (older indexes do not)
    people: dict[str, str] = field(default_factory=dict)  # channel → model (see people_collection)


@dataclass
class SyncReport:
    added: list[str] = field(default_factory=list)  # names of movies (re-)read from their indexes
    removed: list[str] = field(default_factory=list)  # slugs of movies no longer indexed
    without_descriptors: list[str] = field(default_factory=list)  # found by people only
    failed: list[str] = field(default_factory=list)  # movies whose index could not be read: why


F = TypeVar("F", bound=Callable[..., Any])


def _guarded(method: F) -> F:
    """The store's own errors (a server gone, a damaged file) as one StorageError that says what
    to do; nested calls pass it on as it is."""
    @functools.wraps(method)
    def wrapper(self: Catalog, *args: Any, **kwargs: Any) -> Any:
        from pymilvus.exceptions import MilvusException

        try:
            return method(self, *args, **kwargs)
        except MilvusException as exc:
            raise StorageError(f"The catalogue {self.uri} failed ({exc.message}); run castfinder catalog rebuild, "
                               "or check CASTFINDER_MILVUS_URI.") from None

    return wrapper  # type: ignore[return-value]


def people_collection(channel: str, model: str) -> str:
    """The collection of one channel's vectors made by one model (a name Milvus accepts)."""
    digest = hashlib.sha1(model.encode()).hexdigest()[:10]
    return f"{PREFIX}people_{channel}_{digest}"


def catalog_uri(settings: Settings) -> str:
    return settings.catalog_uri or str(Path(settings.index_dir).expanduser().resolve() / LOCAL_NAME)


class Catalog:
    """The catalogue of one index folder. Thread-safe (one lock around the client)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.uri = catalog_uri(settings)
        self._lock = threading.RLock()
        self._client: Any = None
        self._writing = False  # this process holds the catalogue's file lock (see `_writer`)

    @property
    def exists(self) -> bool:
        """Whether there is a catalogue to keep up to date: a server's is always there; a local one
        once `identify` or `catalog rebuild` made it (until then indexing does not pay for it)."""
        return "://" in self.uri or Path(self.uri).exists()

    # -- the store ------------------------------------------------------------------------
    def _open(self) -> Any:
        if self._client is not None:
            return self._client
        # gRPC's C core logs fork notes at INFO, and Milvus Lite's in-process server logs the calls it
        # does not implement as errors; castfinder says itself what went wrong.
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
        for name in ("grpc._server", "pymilvus"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        from pymilvus import MilvusClient  # heavy (pandas, grpc): only where the catalogue is used
        from pymilvus.exceptions import MilvusException

        local = "://" not in self.uri
        if local:
            Path(self.uri).parent.mkdir(parents=True, exist_ok=True)
        client: Any = None
        tries = _OPEN_TRIES if local else _SERVER_TRIES
        for attempt in range(tries):
            try:
                client = MilvusClient(self.uri)
                break
            except MilvusException as exc:
                if attempt + 1 == tries:
                    where = (f"{self.uri} is open in another castfinder process (Milvus Lite lets one process "
                             "use it at a time); try again when it is done" if local
                             else f"the Milvus server at {self.uri} cannot be reached; check "
                                  "CASTFINDER_MILVUS_URI")
                    raise StorageError(f"The catalogue cannot be opened: {where} ({exc.message}).") from None
                time.sleep(_OPEN_WAIT_S)
        self._client = client
        try:
            self._ensure(MOVIES, 2, movies=True)
            for name in client.list_collections():
                if name.startswith(PREFIX):
                    client.load_collection(name)  # a fresh process finds them released
        except MilvusException as exc:
            self.close()
            raise StorageError(f"The catalogue {self.uri} cannot be used ({exc.message}); move it aside and run "
                               "castfinder catalog rebuild.") from None
        return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                try:
                    self._client.close()
                finally:
                    self._client = None

    def _ensure(self, name: str, dim: int, *, movies: bool = False) -> None:
        from pymilvus import DataType, MilvusClient

        client = self._client
        if client.has_collection(name):
            return
        schema = MilvusClient.create_schema(auto_id=not movies, enable_dynamic_field=False)
        if movies:
            # One row per movie; Milvus wants a vector in every collection, so it gets a dummy one.
            schema.add_field("slug", DataType.VARCHAR, is_primary=True, max_length=512)
            schema.add_field("entry", DataType.VARCHAR, max_length=65_535)
        else:
            schema.add_field("id", DataType.INT64, is_primary=True)
            schema.add_field("slug", DataType.VARCHAR, max_length=512)
            schema.add_field("shot", DataType.INT64)
            schema.add_field("frame_s", DataType.DOUBLE)
            schema.add_field("crop", DataType.INT64)
        schema.add_field("vec", DataType.FLOAT_VECTOR, dim=dim)
        params = client.prepare_index_params()
        # FLAT: exact, and fast enough for millions of rows of a few hundred dimensions on a
        # server; a very large catalogue can switch to HNSW here.
        params.add_index("vec", index_type="FLAT", metric_type="IP" if not movies else "L2")
        client.create_collection(name, schema=schema, index_params=params)

    @_guarded
    def entries(self) -> dict[str, Entry]:
        with self._lock:
            client = self._open()
            rows = client.query(MOVIES, filter='slug != ""', output_fields=["entry"], limit=_MAX_LIMIT)
        out = {}
        for row in rows:
            try:
                data = json.loads(row["entry"])
                out[data["slug"]] = Entry(**data)
            except (ValueError, TypeError, KeyError):
                log.warning("the catalogue holds an unreadable entry for %r; it is read again", row.get("slug"))
        return out

    @_guarded
    def remove(self, slug: str) -> None:
        """Every row of `slug`: its entry first, so that a crash midway leaves rows no entry
        claims (removed again by the next sync), never an entry with rows missing."""
        with self._lock:
            client = self._open()
            client.delete(MOVIES, filter=f"slug == {_quote(slug)}")
            for name in client.list_collections():
                if name.startswith(PREFIX) and name != MOVIES:
                    client.delete(name, filter=f"slug == {_quote(slug)}")

    @_guarded
    def put(self, info: MovieInfo) -> Entry:
        """(Re-)read one movie from its index into the catalogue."""
        index = MovieIndex(info.path)
        frames = read_descriptors(info.path)
        with self._lock:
            client = self._open()
            self.remove(info.slug)
            entry = Entry(slug=info.slug, name=info.name, build_id=info.build_id, descriptors=frames is not None)
            if frames is not None:
                shots, times, vecs = frames
                self._ensure(FRAMES, framesig.DIM)
                self._insert(FRAMES, info.slug, shots, times, np.full(len(shots), -1), vecs)
            for channel, spec in index.manifest.channels.items():
                name = people_collection(channel, spec.model)
                ids = _stored_ids(index, channel)
                vectors = index.vectors(channel, ids) if len(ids) else np.zeros((0, spec.dim), np.float32)
                if vectors is None:
                    log.warning("%s: its %s vectors cannot be read back; found by its frames only", info.name, channel)
                    continue
                self._ensure(name, spec.dim)
                self._insert(name, info.slug, index.crop_shot[ids], index.crop_time[ids], ids, vectors)
                entry.people[channel] = spec.model
            # The entry last: a movie is in the catalogue once all its rows are.
            client.upsert(MOVIES, [{"slug": info.slug, "entry": json.dumps(entry.__dict__), "vec": [0.0, 0.0]}])
        return entry

    def _insert(self, name: str, slug: str, shots: np.ndarray, times: np.ndarray, crops: np.ndarray,
                vectors: np.ndarray) -> None:
        rows = [{"slug": slug, "shot": int(s), "frame_s": float(t), "crop": int(c), "vec": v.tolist()}
                for s, t, c, v in zip(shots, times, crops, np.asarray(vectors, dtype=np.float32))]
        for start in range(0, len(rows), _INSERT_ROWS):
            self._client.insert(name, rows[start:start + _INSERT_ROWS])

    # -- keeping in step with the index folder --------------------------------------------
    @contextlib.contextmanager
    def _writer(self) -> Iterator[None]:
        """The one process (and thread) changing the catalogue: this lock and the index folder's
        catalogue lock file, which every process sharing a Milvus server takes too."""
        with self._lock:
            if self._writing:  # rebuild → sync: already held (a second flock would wait on itself)
                yield
                return
            # No index folder, or one this process may not write: unlocked, as before there were locks.
            with file_lock(Path(self.settings.index_dir).expanduser() / LOCK_NAME):
                self._writing = True
                try:
                    yield
                finally:
                    self._writing = False

    @_guarded
    def sync(self, movies: Iterable[MovieInfo], progress: Callable[[str], None] | None = None) -> SyncReport:
        """Bring the catalogue in line with `movies` (the index folder's searchable movies)."""
        report = SyncReport()
        wanted = {m.slug: m for m in movies}
        with self._writer():
            have = self.entries()
            for slug in sorted(set(have) - set(wanted)):
                self.remove(slug)
                report.removed.append(slug)
            stale = [s for s, info in wanted.items() if s not in have or have[s].build_id != info.build_id]
            if report.removed or stale:
                # Rows of a crashed update that no entry claims (checked only when something changed:
                # a delete over every collection is no cost to pay per identify).
                self._drop_orphans(set(wanted) & set(have))
            for slug, info in wanted.items():
                entry = have.get(slug)
                if entry is None or entry.build_id != info.build_id:
                    if progress is not None:
                        progress(info.name)
                    try:
                        entry = self.put(info)
                    except (OSError, sqlite3.Error, ValueError, RuntimeError) as exc:
                        report.failed.append(f"{info.name}: {exc}")
                        continue
                    except Exception as exc:  # a damaged index (DamagedIndexError) is skipped, not fatal
                        report.failed.append(f"{info.name}: {exc}")
                        continue
                    report.added.append(info.name)
                if not entry.descriptors:
                    report.without_descriptors.append(info.name)
        return report

    def _drop_orphans(self, known: set[str]) -> None:
        client = self._client
        kept = ", ".join(_quote(s) for s in sorted(known))
        for name in client.list_collections():
            if name.startswith(PREFIX) and name != MOVIES:
                client.delete(name, filter=f"slug not in [{kept}]")

    @_guarded
    def rebuild(self, movies: Iterable[MovieInfo], progress: Callable[[str], None] | None = None) -> SyncReport:
        """Drop everything and read every movie again."""
        with self._writer():
            client = self._open()
            for name in client.list_collections():
                if name.startswith(PREFIX):
                    client.drop_collection(name)
            self._ensure(MOVIES, 2, movies=True)
            return self.sync(movies, progress)

    # -- searching ------------------------------------------------------------------------
    @_guarded
    def search(self, collection: str, vectors: np.ndarray, k: int) -> list[list[Hit]]:
        """Per query vector, its `k` nearest rows of `collection` (none when it does not exist)."""
        with self._lock:
            client = self._open()
            if not len(vectors) or not client.has_collection(collection):
                return [[] for _ in range(len(vectors))]
            found = client.search(collection, data=[np.asarray(v, np.float32).tolist() for v in vectors],
                                  limit=min(k, _MAX_LIMIT), output_fields=["slug", "shot", "frame_s", "crop"],
                                  search_params={"metric_type": "IP"})
        return [[Hit(h["entity"]["slug"], int(h["entity"]["shot"]), float(h["entity"]["frame_s"]),
                     int(h["entity"]["crop"]), float(h["distance"])) for h in row] for row in found]


def read_descriptors(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """An index's frame descriptors (shot ids, times, vectors) of the current version, or None
    when it has none (built before they existed, or with another descriptor version)."""
    db = sqlite3.connect(f"{(path / META).resolve().as_uri()}?mode=ro", uri=True)
    try:
        has = db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='frame_descriptors'").fetchone()
        if not has:
            return None
        rows = db.execute("SELECT shot_id, frame_s, vec FROM frame_descriptors WHERE kind = ? ORDER BY id",
                          (framesig.DESCRIPTOR_VERSION,)).fetchall()
    finally:
        db.close()
    if not rows:
        return None
    vecs = np.stack([np.frombuffer(r[2], dtype=np.float32) for r in rows if len(r[2]) == 4 * framesig.DIM])
    keep = [r for r in rows if len(r[2]) == 4 * framesig.DIM]
    return (np.array([r[0] for r in keep], np.int64), np.array([r[1] for r in keep], np.float64), vecs)


def _stored_ids(index: MovieIndex, channel: str) -> np.ndarray:
    """The crop ids a channel holds vectors of (a face channel: only the crops with a face)."""
    ids = _faiss_ids(index.faiss[channel])
    return np.zeros(0, np.int64) if ids is None else np.sort(ids.astype(np.int64))


def _quote(value: str) -> str:
    return json.dumps(value)  # a Milvus string literal: double quotes, backslash escapes
