"""Disk faults while indexing: a full disk (a real small tmpfs), a file-size limit (a real RLIMIT_FSIZE on
a CLI process), and I/O, permission and read-only errors injected where no real one can be had as
root. Each: one line that says what happened and what to do, exit 1, the existing index byte for
byte as it was, and the build either gone or kept for the same command to resume."""

from __future__ import annotations

import errno
import json
import sqlite3
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from castfinder.cli import main
from core import Shot
from core.store import IndexWriter
from core.store.layout import BUILDING_PREFIX, CHECKPOINT
from tests import fs_faults
from tests.hostile import no_traceback, run_cli, snapshot, tiny_cli_env
from tests.media import make_video

SEGMENTS = [((30, 10, 10), 30), ((40, 230, 240), 20), ((0, 0, 160), 40)]  # cuts at 1.25 s and 2.08 s
TIMEOUT = 180

tmpfs = fs_faults.tmpfs  # a fixture


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_dinov2: Path) -> dict[str, str]:
    """The CLI's settings, for `main` here and `run_cli` in another process; a checkpoint every
    half second of film, so that the three-shot video is checkpointed after shots 1 and 2."""
    return tiny_cli_env(monkeypatch, tmp_path / "indexes", tiny_dinov2, SAMPLE_FPS="4", CHECKPOINT_S="0.5")


@pytest.fixture
def index_dir(cli_env: dict[str, str]) -> Path:
    return Path(cli_env["CASTFINDER_INDEX_DIR"])


@pytest.fixture
def video(tmp_path: Path) -> Path:
    return make_video(tmp_path / "heat.mp4", SEGMENTS)


def _index(source: Path, movie: str, capsys: pytest.CaptureFixture[str], *flags: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["index", str(source), "--movie", movie, "--quiet", *flags])
    out, err = capsys.readouterr()
    return code, out, err


def _builds(index_dir: Path) -> list[Path]:
    return sorted(index_dir.glob(f"{BUILDING_PREFIX}*"))


def _error_line(err: str) -> str:
    """The one line castfinder wrote (libraries may say things of their own before it)."""
    [line] = [line for line in err.splitlines() if line.startswith("castfinder: error: ")]
    return line


def _left_as_said(err: str, index_dir: Path) -> bool:
    """What the message says of the build is what is on disk: kept with its checkpoint, or gone."""
    if "goes on from its last checkpoint" in err:
        return [(b / CHECKPOINT).is_file() for b in _builds(index_dir)] == [True]
    return "nothing of this run was left behind" in err and not _builds(index_dir)


@pytest.mark.parametrize("existing", [False, True], ids=["new-movie", "re-index"])
def test_a_full_disk_is_a_message_and_the_same_command_goes_on_once_there_is_space(
        index_dir: Path, video: Path, tmp_path: Path, tmpfs, capsys, monkeypatch: pytest.MonkeyPatch,
        existing: bool) -> None:
    if existing:  # the index folder is one folder of the full disk, beside other files
        disk = tmpfs(tmp_path / "disk", "4m")
        index_dir = disk / "indexes"
        monkeypatch.setenv("CASTFINDER_INDEX_DIR", str(index_dir))
        assert _index(video, "Heat", capsys, "--fps", "2")[0] == 0
        before = snapshot(index_dir / "heat")
        filler = fs_faults.fill(disk, leave=48 * 1024)
        where = f"{disk} (which holds {index_dir}; "
    else:  # the index folder is the disk, as small as a few files
        disk = tmpfs(index_dir, "48k")
        where = f"{disk} ("
    code, out, err = _index(video, "Heat", capsys)
    assert code == 1 and "Traceback" not in err
    err = _error_line(err)
    assert f"castfinder: error: The disk is full: no space left on {where}" in err and " free now). " in err
    assert "Free some space there, or index into another folder with --index-dir (CASTFINDER_INDEX_DIR)." in err
    assert ("The index of 'Heat' is unchanged" if existing else "'Heat' was not indexed") in err
    assert _left_as_said(err, index_dir)
    if existing:
        assert snapshot(index_dir / "heat") == before
        filler.unlink()
    else:
        assert not (index_dir / "heat").exists()
        fs_faults.remount(disk, "size=4m")
    kept = bool(_builds(index_dir))
    code, out, err = _index(video, "Heat", capsys)
    assert code == 0, err
    assert ("resumed from a checkpoint" in out) == kept
    assert not _builds(index_dir) and sorted(p.name for p in index_dir.iterdir()) == ["heat"]


def _noise_video(path: Path) -> Path:
    """One still frame of noise: its thumbnail is a JPEG of ~60 kB, more than a 32 kB file-size
    limit. (The same frame throughout: later frames of changing noise would be blurred by the codec.)"""
    noise = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 24, (320, 240))
    for _ in range(12):
        writer.write(noise)
    writer.release()
    return path


@pytest.mark.parametrize(("existing", "limit", "fails"), [
    (False, 16_000, "SQLite: 'disk I/O error' when the new database passes 16 kB"),
    (True, 32_000, "Python: EFBIG writing a thumbnail of ~60 kB"),
], ids=["new-movie", "re-index"])
def test_a_file_size_limit_is_a_message_and_leaves_the_index_as_it_was(
        cli_env: dict[str, str], index_dir: Path, video: Path, tmp_path: Path, capsys,
        existing: bool, limit: int, fails: str) -> None:
    assert _index(video, "Heat", capsys)[0] == 0
    before = snapshot(index_dir)
    source, movie = (_noise_video(tmp_path / "noise.mp4"), "Heat") if existing else (video, "Ronin")
    proc = run_cli(["index", str(source), "--movie", movie, "--quiet"], {**cli_env, "PYTHONDONTWRITEBYTECODE": "1"},
                   timeout=TIMEOUT, preexec_fn=fs_faults.file_size_limit(limit))
    assert proc.returncode == 1 and no_traceback(proc), (fails, proc.stderr[-2000:])
    line = _error_line(proc.stderr)
    assert f"past this process's file-size limit ({limit / 1000:.1f} kB, `ulimit -f`). Raise it (ulimit -f " \
           "unlimited), or index into another folder with --index-dir (CASTFINDER_INDEX_DIR)." in line
    assert ("The index of 'Heat' is unchanged" if existing else "'Ronin' was not indexed") in line
    assert "nothing of this run was left behind" in line
    assert snapshot(index_dir) == before  # the build is gone, the index of Heat unchanged


# Faults no root process meets for real on a local disk: injected where a shot is written, after the
# checkpoints of shots 1 and 2, so that the build has something to resume from.
FAULTS = {
    "EIO": (OSError(errno.EIO, "Input/output error"),
            "The disk failed on {index_dir} (input/output error). Check the disk holding"),
    "EACCES": (OSError(errno.EACCES, "Permission denied", "{thumb}"),
               "Permission denied on {thumb}: this user may not write there. Give it write access, or index"),
    "EROFS": (OSError(errno.EROFS, "Read-only file system", "{thumb}"),
              "{index_dir} is on a read-only file system (mounted at "),
    "SQLITE_FULL": (sqlite3.OperationalError("database or disk is full"), "The disk is full: no space left on "),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_an_io_fault_mid_build_keeps_the_index_and_the_same_command_resumes(
        cli_env: dict[str, str], index_dir: Path, video: Path, capsys, monkeypatch: pytest.MonkeyPatch,
        fault: str) -> None:
    assert _index(video, "Heat", capsys, "--fps", "2")[0] == 0
    before = snapshot(index_dir / "heat")
    template, expected = FAULTS[fault]
    add_shot = IndexWriter.add_shot

    def failing(self: IndexWriter, shot: Shot, *args: Any, **kwargs: Any) -> None:
        if shot.id == 3:
            thumb = str(self.tmp / "thumbs" / "shot_00003.jpg")
            if isinstance(template, OSError):
                raise OSError(template.errno, template.strerror, template.filename and thumb)
            raise type(template)(*template.args)
        add_shot(self, shot, *args, **kwargs)

    monkeypatch.setattr(IndexWriter, "add_shot", failing)
    code, _, err = _index(video, "Heat", capsys)
    assert code == 1 and "Traceback" not in err
    err = _error_line(err)
    [build] = _builds(index_dir)
    assert expected.format(index_dir=index_dir, thumb=build / "thumbs" / "shot_00003.jpg") in err
    assert ("The index of 'Heat' is unchanged; the build so far is kept: once that is fixed, the same command "
            "goes on from its last checkpoint (00:00:02.0 of film).") in err
    assert snapshot(index_dir / "heat") == before

    monkeypatch.setattr(IndexWriter, "add_shot", add_shot)  # fixed
    code, out, err = _index(video, "Heat", capsys, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["resumed_at_s"] == pytest.approx(50 / 24, abs=0.01) and report["shots"] == 3
    assert not _builds(index_dir) and sorted(p.name for p in index_dir.iterdir()) == ["heat"]


def test_a_fault_before_any_checkpoint_removes_the_build(
        cli_env: dict[str, str], index_dir: Path, video: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(IndexWriter, "add_shot", failing)
    code, _, err = _index(video, "Heat", capsys)
    assert code == 1 and "'Heat' was not indexed, and nothing of this run was left behind." in err
    assert not any(index_dir.iterdir())
