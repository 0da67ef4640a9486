"""Whether an index folder's files are those its manifest describes, checked cheaply: what a
listing can afford for every movie, before anything is loaded.

- each channel's FAISS file: a regular file inside the folder, with the FAISS header of the kind,
  metric, dimension and vector count the manifest says, and (for a flat index, whose size is
  exact) the size those make; an ID map's crop ids (the file's last 8 bytes per vector) within
  the crops. This catches a truncated, zeroed or swapped file, or one from another index,
  reading 74 bytes and the ids;
- `meta.sqlite`: a SQLite file as long as its own header says, with the tables the reader uses,
  crop ids 0…n-1, every crop's shot present (one LEFT JOIN that stops at the first miss), and at
  least as many crops as any channel has vectors.

`MovieIndex` (reader.py) checks the rest as it loads: the FAISS indexes as faiss reads them, an
IVF index's ids (in its lists) against the crops. Thumbnails are not checked here: a missing one costs a picture,
not the search (see `MovieIndex.thumbnail`).

Every failure raises `IndexDamage` with the reason in words.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import numpy as np

from .layout import META
from .manifest import ChannelSpec, IndexDamage, Manifest

# FAISS's own names for the index kinds the writer builds (the first 4 bytes of a serialised index).
ID_MAP2 = b"IxM2"  # IndexIDMap2, around a flat or HNSW index
IVF_FLAT = b"IwFl"  # IndexIVFFlat, ids stored in its lists
FLAT_IP = b"IxFI"
HNSW_FLAT = b"IHNf"
# Per manifest "faiss" kind: the outer and (for an ID map) the inner index's fourcc.
FAISS_KINDS: dict[str, tuple[bytes, bytes | None]] = {
    "flat": (ID_MAP2, FLAT_IP), "hnsw": (ID_MAP2, HNSW_FLAT), "ivf": (IVF_FLAT, None),
}
# faiss's index header after the fourcc: d (int32), ntotal (int64), two unused int64,
# is_trained (1 byte), metric_type (int32).
_HEADER = 4 + 4 + 8 + 8 + 8 + 1 + 4
METRIC_INNER_PRODUCT = 0
# A flat ID map's file: two headers, then the codes and the ids, each a size_t count and the data.
_FLAT_OVERHEAD = 2 * _HEADER + 8 + 8

SQLITE_MAGIC = b"SQLite format 3\x00"
# The tables and columns `MovieIndex` reads.
TABLES = {
    "shots": ("id", "number", "scene", "start_frame", "end_frame", "start_s", "end_s", "thumbnail"),
    "crops": ("id", "shot_id", "frame_s", "x1", "y1", "x2", "y2", "track_id"),
    "faces": ("crop_id", "x1", "y1", "x2", "y2"),
}


def check_files(folder: Path, manifest: Manifest) -> int:
    """Check the folder's files against `manifest` (see the module's text); returns the number
    of crops. Raises `IndexDamage`."""
    crops = check_meta(folder / META)
    for name, spec in manifest.channels.items():
        if spec.vectors > crops:
            raise IndexDamage(f"channel {name} has {spec.vectors} vectors but {META} only {crops} crops")
        check_faiss_file(folder, name, spec, crops)
    return crops


def channel_file(folder: Path, channel: str, spec: ChannelSpec) -> Path:
    """The channel's FAISS file: a plain name inside the index folder, never a path out of it."""
    if Path(spec.file).name != spec.file or spec.file in (".", ".."):
        raise IndexDamage(f"channel {channel}'s file {spec.file!r} is not a file name inside the index folder")
    return folder / spec.file


def regular_size(path: Path) -> int:
    """The size of a regular file; `IndexDamage` when it is missing or something else."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise IndexDamage(f"{path.name} is missing") from None
    except OSError as exc:
        raise IndexDamage(f"{path.name} cannot be read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise IndexDamage(f"{path.name} is not a regular file")
    return st.st_size


def _head(path: Path, n: int) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(n)
    except OSError as exc:
        raise IndexDamage(f"{path.name} cannot be read ({exc.strerror or exc})") from None


def check_faiss_file(folder: Path, channel: str, spec: ChannelSpec, crops: int) -> None:
    path = channel_file(folder, channel, spec)
    size = regular_size(path)
    head = _head(path, 2 * _HEADER)
    outer, inner = FAISS_KINDS.get(spec.faiss, (None, None))
    fourcc = head[:4]
    if fourcc not in (ID_MAP2, IVF_FLAT) or len(head) < _HEADER:
        what = "is empty" if not head else f"is not a FAISS index of castfinder's (it starts with {head[:4].hex()})"
        raise IndexDamage(f"{path.name} {what}")
    if outer is not None and fourcc != outer:
        raise IndexDamage(f"{path.name} holds another kind of FAISS index than the manifest's {spec.faiss!r}")
    dim = int.from_bytes(head[4:8], "little", signed=True)
    ntotal = int.from_bytes(head[8:16], "little", signed=True)
    metric = int.from_bytes(head[33:37], "little", signed=True)
    if dim != spec.dim:
        raise IndexDamage(f"{path.name} holds {dim}-d vectors, but channel {channel} is {spec.dim}-d "
                          "(a file of another channel or index)")
    if ntotal != spec.vectors:
        raise IndexDamage(f"{path.name} holds {ntotal} vectors, but channel {channel} has {spec.vectors} "
                          "(a file of another index)")
    if metric != METRIC_INNER_PRODUCT:
        raise IndexDamage(f"{path.name} is not an inner-product index")
    if fourcc == ID_MAP2:
        sub = head[_HEADER:_HEADER + 4]
        if sub not in (FLAT_IP, HNSW_FLAT) or (inner is not None and sub != inner):
            raise IndexDamage(f"{path.name} holds another kind of FAISS index than the manifest's {spec.faiss!r}")
        if sub == FLAT_IP:
            expected = _FLAT_OVERHEAD + spec.vectors * (4 * spec.dim + 8)
            if size != expected:
                raise IndexDamage(f"{path.name} is {size} bytes, not the {expected} its {spec.vectors} vectors "
                                  f"of {spec.dim} dimensions make ({'truncated' if size < expected else 'altered'})")
    if size < 2 * _HEADER + (4 * spec.dim + 8) * spec.vectors:
        raise IndexDamage(f"{path.name} is {size} bytes, too short for {spec.vectors} vectors of {spec.dim} "
                          "dimensions (truncated)")
    if fourcc == ID_MAP2:
        _check_ids(path, size, spec.vectors, crops)


def _check_ids(path: Path, size: int, vectors: int, crops: int) -> None:
    """An ID map's file ends with its ids: a count, then one int64 per vector, each a crop id."""
    tail = 8 + 8 * vectors
    try:
        ids = np.fromfile(path, dtype="<i8", count=1 + vectors, offset=size - tail)
    except (OSError, ValueError) as exc:
        raise IndexDamage(f"{path.name} cannot be read ({exc})") from None
    if len(ids) != 1 + vectors or ids[0] != vectors:
        raise IndexDamage(f"{path.name} does not end with its {vectors} crop ids")
    ids = ids[1:]
    if vectors and (ids.min() < 0 or ids.max() >= crops):
        bad = int(ids.min() if ids.min() < 0 else ids.max())
        raise IndexDamage(f"{path.name} holds a vector of crop {bad}, but {META} has crops 0 to {crops - 1}")


def check_meta(path: Path) -> int:
    """Check `meta.sqlite`; returns its number of crops."""
    size = regular_size(path)
    head = _head(path, 100)
    if head[:16] != SQLITE_MAGIC:
        raise IndexDamage(f"{META} is not a SQLite database" + (" (it is empty)" if not head else ""))
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(head[28:32], "big")
    # The header's page count is valid when its change counter matches "version-valid-for".
    if head[24:28] == head[92:96] and size < page_size * pages:
        raise IndexDamage(f"{META} is truncated ({size} of {page_size * pages} bytes)")
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise IndexDamage(f"{META} cannot be opened ({exc})") from None
    try:
        return _check_tables(db)
    except sqlite3.Error as exc:
        raise IndexDamage(f"{META} cannot be read ({exc})") from None
    finally:
        db.close()


def _check_tables(db: sqlite3.Connection) -> int:
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    for table, columns in TABLES.items():
        if table not in tables:
            raise IndexDamage(f"{META} has no table {table}")
        have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        missing = [c for c in columns if c not in have]
        if missing:
            raise IndexDamage(f"{META}'s table {table} lacks the column {missing[0]}")
    count, low, high = db.execute("SELECT count(*), min(id), max(id) FROM crops").fetchone()
    if count and (low != 0 or high != count - 1):
        raise IndexDamage(f"{META}'s crop ids are not 0 to {count - 1}")
    dangling = db.execute("SELECT c.id, c.shot_id FROM crops c LEFT JOIN shots s ON s.id = c.shot_id "
                          "WHERE s.id IS NULL LIMIT 1").fetchone()
    if dangling is not None:
        raise IndexDamage(f"{META}: crop {dangling[0]} belongs to shot {dangling[1]}, which does not exist")
    return int(count)
