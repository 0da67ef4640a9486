"""Disk faults while indexing, said to the person indexing: an OSError or SQLite error that reaches
the indexing boundary (core.indexing.indexer) becomes one `StorageError` line with the cause, the
place, the fix and what became of the build."""

from __future__ import annotations

import errno
import os
import resource
import shutil
import sqlite3
from pathlib import Path

from ..errors import StorageError
from .layout import BUILDING_PREFIX

_ELSEWHERE = "or index into another folder with --index-dir (CASTFINDER_INDEX_DIR)"


def storage_error(exc: OSError | sqlite3.Error, index_dir: Path, outcome: str) -> StorageError:
    """The message for `exc`, raised while indexing into `index_dir`; `outcome` (a sentence) says
    what became of the previous index and of the build."""
    return StorageError(f"{_cause(exc, index_dir)} {outcome}")


def _cause(exc: OSError | sqlite3.Error, index_dir: Path) -> str:
    kind = _kind(exc, index_dir)
    filename = Path(os.fsdecode(exc.filename)) if isinstance(exc, OSError) and exc.filename else None
    # The fault's place: the file named, else the index folder (SQLite names none: its files are
    # there). A hidden build folder means nothing to the user: its index folder is named instead.
    place = filename if filename is not None and not filename.name.startswith(BUILDING_PREFIX) else index_dir
    ours = _inside(place, index_dir)
    mount = _mount_point(place)
    fix = f", {_ELSEWHERE}" if ours else ""
    if kind == "full":
        holds = f"which holds {index_dir}; " if ours and mount != index_dir.absolute() else ""
        return (f"The disk is full: no space left on {mount} ({holds}{_free(place)} free now). "
                f"Free some space there{fix}.")
    if kind == "too-big":
        limit = _file_size_limit()
        what = f"Writing {place}" if filename else f"A file written in {place}"
        if limit is not None:
            return (f"{what} went past this process's file-size limit ({_size(limit)}, `ulimit -f`). "
                    f"Raise it (ulimit -f unlimited){fix}.")
        return (f"{what} went past the largest file that the file system at {mount} allows (FAT32 "
                f"stops at 4 GB){fix}.")
    if kind == "read-only":
        return (f"{index_dir if ours else place} is on a read-only file system (mounted at {mount}). "
                f"Remount it read-write{fix}.")
    if kind == "denied":
        return (f"Permission denied on {place}: this user may not write there. Give it write access{fix}."
                if ours else f"Permission denied on {place}: give this user access to it.")
    if kind == "io":
        return f"The disk failed on {place} (input/output error). Check the disk holding {mount} (`dmesg`){fix}."
    detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return f"Indexing stopped on a file error on {place}: {detail}."


def _inside(path: Path, folder: Path) -> bool:
    try:
        return path.absolute().is_relative_to(folder.absolute())
    except OSError:
        return False


def _kind(exc: OSError | sqlite3.Error, index_dir: Path) -> str:
    """full, too-big, read-only, denied, io, or other."""
    if isinstance(exc, OSError):
        code = exc.errno
        if code in (errno.ENOSPC, errno.EDQUOT):
            return "full"
        if code == errno.EFBIG:
            return "too-big"
        if code == errno.EROFS:
            return "read-only"
        if code in (errno.EACCES, errno.EPERM):
            place = Path(os.fsdecode(exc.filename)) if exc.filename else index_dir
            return "read-only" if _read_only(place) else "denied"
        if code == errno.EIO:
            return "io"
        return "other"
    # SQLite says which, not why: "database or disk is full", "disk I/O error" (EFBIG and EIO
    # alike), "attempt to write a readonly database", "unable to open database file".
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc).lower()
    if name.startswith("SQLITE_FULL") or "disk is full" in text:
        return "full"
    if name.startswith("SQLITE_IOERR") or "disk i/o error" in text:
        return "too-big" if _file_size_limit() is not None else "io"
    if name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM")) or "readonly" in text \
            or "unable to open" in text:
        return "read-only" if _read_only(index_dir) else "denied"
    return "other"


def _read_only(path: Path) -> bool:
    for folder in (path, *path.parents):
        try:
            return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
        except OSError:
            continue
    return False


def _mount_point(path: Path) -> Path:
    path = path.absolute()
    for folder in (path, *path.parents):
        if folder.exists() and os.path.ismount(folder):
            return folder
    return path


def _free(path: Path) -> str:
    for folder in (path, *path.parents):
        try:
            return _size(shutil.disk_usage(folder).free)
        except OSError:
            continue
    return "?"


def _file_size_limit() -> int | None:
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else soft


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"
