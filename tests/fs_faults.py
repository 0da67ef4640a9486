"""Real file-system faults for the hostile tests: a small tmpfs (disk full, read-only remounts) and a
file-size limit for a CLI subprocess. Mounting needs root (as here and in CI); elsewhere the tests
that need it skip and say why."""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

Mount = Callable[[Path, str], Path]


@pytest.fixture
def tmpfs() -> Iterator[Mount]:
    """`tmpfs(folder, size)` mounts a tmpfs of `size` (as mount(8) writes it: "64k", "4m") on
    `folder`; every mount is undone after the test."""
    mounted: list[Path] = []

    def mount(folder: Path, size: str) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        folder.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(folder)],
                              capture_output=True, text=True)
        if proc.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def remount(folder: Path, options: str) -> None:
    """Remount a tmpfs from `tmpfs` with other options: "ro", "rw,size=4m"."""
    subprocess.run(["mount", "-o", f"remount,{options}", str(folder)], check=True, capture_output=True)


def fill(folder: Path, leave: int) -> Path:
    """Fill the file system of `folder` until about `leave` bytes are free; returns the filler file
    (delete it to free the space again)."""
    gap = folder / "gap.bin"
    gap.write_bytes(b"\0" * leave)  # kept free: set aside first, given back at the end
    filler = folder / "filler.bin"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for chunk in (1 << 20, 1 << 16, 1 << 12, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    gap.unlink()
    return filler


def file_size_limit(limit: int) -> Callable[[], None]:
    """A preexec_fn: the child may write no file past `limit` bytes; a write past it fails with
    EFBIG instead of the default SIGXFSZ killing the process."""
    def limit_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return limit_files
