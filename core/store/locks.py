"""Locks between castfinder processes (and threads) that share an index folder.

Both kinds are flock(2) locks, which the kernel drops when their holder dies (Ctrl-C, kill -9, a
power cut): no stale lock outlives a crash, and no pid has to be trusted.

- The index folder's lock (`index_dir_lock`), on the folder's own directory descriptor (see
  layout.INDEX_DIR_LOCK): exclusive for the short moments that change what is published (tidy-up,
  claiming a build, the swap), shared while indexes are listed or loaded. A reader therefore sees
  the old index or the new one, never a folder half swapped, and tidy-up never meets a swap
  half done.
- A build's lock (`BuildLock`), on the `pid` file in its `.building-*` folder, held by the indexing
  process for the build's whole life: tidy-up and other runs leave a held build alone.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from ..errors import StorageError
from .layout import PID

log = logging.getLogger(__name__)

# The index folder's lock is held for moments (a swap, a tidy-up, loading one index); a wait this
# long means a holder is stopped (Ctrl-Z) or hung, and a message beats hanging for ever.
LOCK_WAIT_S = 300.0
_POLL_S = 0.05

# Test seam: called (with the index folder) when a wait for the index folder's lock begins, so that
# a test knows another thread or process is blocked on it without guessing with sleeps. Never set
# outside tests.
WAIT_HOOK: Callable[[Path], None] | None = None


@contextmanager
def index_dir_lock(index_dir: Path, *, shared: bool = False) -> Iterator[bool]:
    """Hold the index folder's lock (exclusive, or `shared`) inside the block; yields whether it
    is held. A folder that does not exist, or a file system without flock, yields False: the
    caller goes on unlocked, as castfinder did before it had locks."""
    try:
        fd = os.open(index_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        log.debug("cannot open %s to lock it: %s", index_dir, exc)
        yield False
        return
    try:
        yield _acquire(fd, index_dir, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
    finally:
        os.close(fd)  # releases the lock


@contextmanager
def file_lock(path: Path) -> Iterator[bool]:
    """Hold an exclusive lock on the file `path` (made if missing) inside the block; yields whether
    it is held (False where the folder cannot be written or the file system has no flock)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        log.debug("cannot open %s to lock it: %s", path, exc)
        yield False
        return
    try:
        yield _acquire(fd, path, fcntl.LOCK_EX)
    finally:
        os.close(fd)  # releases the lock


def _acquire(fd: int, index_dir: Path, mode: int) -> bool:
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        pass
    except OSError as exc:  # ENOLCK, EOPNOTSUPP: some network file systems
        log.warning("cannot lock %s (%s); going on without the lock", index_dir, exc.strerror)
        return False
    if WAIT_HOOK is not None:
        WAIT_HOOK(index_dir)
    deadline = time.monotonic() + LOCK_WAIT_S
    while time.monotonic() < deadline:
        time.sleep(_POLL_S)  # flock has no timeout: poll, so that a stopped holder cannot hang us
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            continue
    raise StorageError(
        f"Another castfinder process has kept {index_dir} locked for {LOCK_WAIT_S:g} s (a stopped "
        "`castfinder index`, e.g. by Ctrl-Z?); let it go on or end it, then run this command again.")


class BuildLock:
    """The lock on a build folder's `pid` file, held by the indexing process for the build's whole
    life. Acquire it only under the index folder's exclusive lock (see IndexWriter)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / PID
        self._fd: int | None = None

    def acquire(self, name: str) -> None:
        """Take the lock and record who holds it; raises BlockingIOError if another holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n{name}\n".encode())
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def build_holder(folder: Path) -> tuple[int | None, str | None] | None:
    """Who holds the build in `folder`: (pid, movie name) as it recorded them (either may be None
    when unreadable), or None when no live process holds it."""
    try:
        fd = os.open(folder / PID, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None  # no lock file: nobody holds it (a stopped build keeps none)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return _who(fd)
    except OSError as exc:
        if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
            return None
        raise
    finally:
        os.close(fd)
    return None


def _who(fd: int) -> tuple[int | None, str | None]:
    try:
        lines = os.pread(fd, 4096, 0).decode("utf-8", "replace").splitlines()
    except OSError:
        return None, None
    pid = int(lines[0]) if lines and lines[0].strip().isdigit() else None
    return pid, (lines[1] if len(lines) > 1 and lines[1] else None)

