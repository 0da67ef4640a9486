"""Undoing what a crash leaves in the index folder."""

from __future__ import annotations

import errno
import logging
import os
import shutil
from pathlib import Path

from .layout import BUILDING_PREFIX, CHECKPOINT, MANIFEST, OLD_PREFIX
from .locks import build_holder, index_dir_lock

log = logging.getLogger(__name__)

# A folder castfinder may not change (read-only file system, another user's folder): tidy-up is
# left for a run that can, and says nothing.
_NOT_OURS_TO_CHANGE = (errno.EROFS, errno.EACCES, errno.EPERM)


def tidy_index_dir(index_dir: Path) -> None:
    """Undo what a crash can leave: an old index renamed aside but not replaced is put back;
    building folders that no live process holds are removed, unless they can be resumed.
    Best effort: where the folder cannot be changed, it is left as it is."""
    if not index_dir.is_dir():
        return
    with index_dir_lock(index_dir):
        tidy_locked(index_dir)


def tidy_locked(index_dir: Path) -> None:
    """`tidy_index_dir` for a caller that holds the index folder's exclusive lock. Under it, an
    `.old-*` folder is never a swap in progress (swaps hold the lock too) but a crash's."""
    try:
        entries = list(index_dir.iterdir())
    except OSError as exc:
        _skipped(index_dir, exc)
        return
    for entry in entries:
        try:
            if entry.name.startswith(OLD_PREFIX):
                slug = entry.name[len(OLD_PREFIX):].rsplit("-", 1)[0]
                target = index_dir / slug
                if not target.exists() and (entry / MANIFEST).is_file():
                    os.rename(entry, target)
                else:
                    shutil.rmtree(entry)  # raises on the first failure: see below
            elif entry.name.startswith(BUILDING_PREFIX):
                # A stopped build with a checkpoint waits to be resumed by `castfinder index`.
                if build_holder(entry) is None and not (entry / CHECKPOINT).is_file():
                    shutil.rmtree(entry)  # raises on the first failure: see below
        except OSError as exc:
            _skipped(entry, exc)


def _skipped(path: Path, exc: OSError) -> None:
    if exc.errno in _NOT_OURS_TO_CHANGE:
        log.debug("tidy-up leaves %s: %s", path, exc.strerror)
    else:
        log.warning("tidy-up could not clean %s: %s", path, exc.strerror or exc)
