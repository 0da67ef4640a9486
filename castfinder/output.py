"""Files the CLI writes where the user says (`people --save`): the target is checked before any
work, and written so that a failure leaves what was there before.

A missing folder is not created: a typo in a path should not leave a tree of new folders behind,
and the message says which folder is missing. A regular file is written beside its target and
renamed over it, so a full disk leaves the old file whole; an existing device (`/dev/stdout`) is
written in place. Named pipes are refused (opening one blocks until someone reads it).
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

from core.inputs import describe, short


class OutputError(Exception):
    """The output cannot be written; the message says why and what to do."""


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on the disk; free some space or save elsewhere"
    if exc.errno == errno.EDQUOT:
        return "the disk quota is used up; free some space or save elsewhere"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{exc.strerror or 'not allowed'}; save somewhere you can write"
    if exc.errno == errno.ENAMETOOLONG:
        return "the name is too long for the file system; give a shorter one"
    return exc.strerror or str(exc)


def check_target(path: Path, flag: str) -> None:
    """Raise OutputError unless `path` can be written as a file: its folder exists, and it is a new
    name, a regular file or a device."""
    label = f"{flag} {short(path)}"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise OutputError(f"{label}: {_reason(exc)}.") from None
    except ValueError as exc:
        raise OutputError(f"{label}: not a valid file name ({exc}).") from None
    if st is not None:
        if stat.S_ISREG(st.st_mode) or stat.S_ISCHR(st.st_mode):
            return
        raise OutputError(f"{label}: {describe(st.st_mode)}; give a file name such as people.jpg.")
    folder = path.parent
    try:
        folder_st = os.stat(folder)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise OutputError(f"{label}: the folder {short(folder)} does not exist; create it first, "
                              "or save elsewhere.") from None
        raise OutputError(f"{label}: {_reason(exc)}.") from None
    if not stat.S_ISDIR(folder_st.st_mode):
        raise OutputError(f"{label}: {short(folder)} is not a folder.")


def _mode_for(target: Path) -> int:
    """The permissions the written file gets: the old file's, or what the umask gives a new one
    (mkstemp's own are owner-only)."""
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_file(path: Path, data: bytes, flag: str) -> None:
    """Write `data` to `path` (checked by `check_target` first), or raise OutputError."""
    check_target(path, flag)
    label = f"{flag} {short(path)}"
    try:
        if path.exists() and stat.S_ISCHR(os.stat(path).st_mode):
            with open(path, "wb") as out:  # a device: there is nothing to keep whole
                out.write(data)
            return
        target = path.resolve()  # through a link: replace the file it points to, not the link
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name[:32]}.", suffix=".part", dir=target.parent)
        try:
            os.fchmod(fd, _mode_for(target))
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise OutputError(f"{label}: could not write it: {_reason(exc)}.") from None
