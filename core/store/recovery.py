"""Undoing what a crash leaves in the index folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .layout import BUILDING_PREFIX, CHECKPOINT, MANIFEST, OLD_PREFIX, PID


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
            pid = pid_of(entry)
            # A stopped build with a checkpoint waits to be resumed by `castfinder index`.
            if (pid is None or not pid_alive(pid)) and not (entry / CHECKPOINT).is_file():
                shutil.rmtree(entry, ignore_errors=True)


def pid_of(folder: Path) -> int | None:
    try:
        return int((folder / PID).read_text())
    except (OSError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


