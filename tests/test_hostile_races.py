"""Hostile timing and naming around the index folder: commands run while `index` commits, two runs
of one movie, a read-only index folder with crash leftovers, names that share a slug. Synthetic
video, random YOLO, tiny DINOv2; the second actor is a real CLI process where it can be."""

from __future__ import annotations

import errno
import json
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from castfinder.cli import main
from core import Engine, Settings
from core.naming import slugify
from core.store import locks, writer
from core.store.layout import BUILDING_PREFIX, CHECKPOINT, OLD_PREFIX
from tests import fs_faults
from tests.hostile import no_traceback, run_cli, snapshot, tiny_cli_env
from tests.media import make_video

SEGMENTS = [((30, 10, 10), 30), ((40, 230, 240), 20), ((0, 0, 160), 40)]  # three shots
TIMEOUT = 120  # seconds; only a hang reaches it

tmpfs = fs_faults.tmpfs  # a fixture


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_dinov2: Path) -> dict[str, str]:
    """The CLI's settings, for `main` in this process and for `run_cli` in another."""
    return tiny_cli_env(monkeypatch, tmp_path / "indexes", tiny_dinov2)


@pytest.fixture
def index_dir(cli_env: dict[str, str]) -> Path:
    return Path(cli_env["CASTFINDER_INDEX_DIR"])


@pytest.fixture
def videos(tmp_path: Path) -> tuple[Path, Path]:
    """A three-shot video and a two-shot one: an index of either tells which it came from."""
    return make_video(tmp_path / "heat.mp4", SEGMENTS), make_video(tmp_path / "short.mp4", SEGMENTS[:2])


@pytest.fixture
def query(tmp_path: Path) -> Path:
    path = tmp_path / "query.png"
    Image.fromarray(np.full((96, 64, 3), (200, 30, 30), np.uint8)).save(path)
    return path


class Held:
    """A commit hook (core.store.writer.COMMIT_HOOK) that holds the build at `point` until `go()`."""

    def __init__(self, point: str) -> None:
        self.point = point
        self.reached = threading.Event()
        self._go = threading.Event()

    def __call__(self, point: str) -> None:
        if point == self.point:
            self.reached.set()
            assert self._go.wait(TIMEOUT), "the test never let the build go on"

    def go(self) -> None:
        self._go.set()


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], Held]]:
    made: list[Held] = []

    def hold(point: str) -> Held:
        hook = Held(point)
        made.append(hook)
        monkeypatch.setattr(writer, "COMMIT_HOOK", hook)
        return hook

    yield hold
    for hook in made:
        hook.go()  # never leave a thread waiting, whatever the test's outcome


def _indexed(index_dir: Path) -> list[str]:
    return sorted(p.name for p in index_dir.iterdir())


def test_movies_search_and_index_while_index_commits_leave_the_build_alone(
        cli_env: dict[str, str], index_dir: Path, videos: tuple[Path, Path], query: Path, held, capsys) -> None:
    video, short = videos
    assert main(["index", str(video), "--movie", "Heat", "--quiet"]) == 0
    old = snapshot(index_dir / "heat")
    hook = held("before_swap")  # complete, its checkpoint gone, not yet published
    with ThreadPoolExecutor(1) as pool:
        reindex = pool.submit(Engine(Settings(_env_file=None), load_models=False).index, short, "Heat")
        assert hook.reached.wait(TIMEOUT), reindex.exception(0) if reindex.done() else "no commit"
        [build] = index_dir.glob(f"{BUILDING_PREFIX}heat-*")

        # Each command tidies the index folder as it starts: the held build is no crash leftover.
        movies = run_cli(["movies", "--json"], cli_env, timeout=TIMEOUT)
        assert movies.returncode == 0, movies.stderr
        [listed] = json.loads(movies.stdout)["movies"]
        assert (listed["name"], listed["shots"]) == ("Heat", 3)  # the old index, whole
        search = run_cli(["search", "--movie", "heat", "--top", "10", "--json", str(query)], cli_env, timeout=TIMEOUT)
        assert search.returncode == 0, search.stderr
        assert {r["shot"] for r in json.loads(search.stdout)["results"]} == {1, 2, 3}

        # A second run of the same movie, and one of another name on the same slug, are refused at once.
        again = run_cli(["index", str(short), "--movie", "Heat", "--quiet"], cli_env, timeout=TIMEOUT)
        assert again.returncode == 1 and no_traceback(again)
        assert (f"'Heat' is already being indexed by another process (pid {os.getpid()}); wait for it to finish "
                "or stop it") in again.stderr
        other = run_cli(["index", str(short), "--movie", "Heat!", "--replace", "--quiet"], cli_env, timeout=TIMEOUT)
        assert other.returncode == 1 and no_traceback(other)
        assert (f"'Heat' is already being indexed by another process (pid {os.getpid()}) into 'heat', the folder "
                "'Heat!' would use") in other.stderr
        assert build.is_dir() and not (build / CHECKPOINT).exists()
        assert snapshot(index_dir / "heat") == old

        hook.go()
        report = reindex.result(timeout=TIMEOUT)
    assert report.shots == 2 and report.movie.path == index_dir / "heat"
    assert _indexed(index_dir) == ["heat"]  # published; nothing left beside it
    capsys.readouterr()
    assert main(["search", "--movie", "heat", "--top", "10", "--json", str(query)]) == 0
    assert {r["shot"] for r in json.loads(capsys.readouterr().out)["results"]} <= {1, 2}


def test_a_search_during_the_swap_waits_and_answers_from_the_new_index(
        cli_env: dict[str, str], index_dir: Path, videos: tuple[Path, Path], held,
        monkeypatch: pytest.MonkeyPatch) -> None:
    video, short = videos
    engine = Engine(Settings(_env_file=None))
    image = np.asarray(Image.new("RGB", (64, 96), (200, 30, 30)))
    engine.index(video, "Heat")
    assert {r.shot for r in engine.search("heat", [image], top=10).results} == {1, 2, 3}  # cached now
    hook = held("swapped_aside")  # the index folder locked, the old index renamed aside, the new not in
    waiting = threading.Event()
    monkeypatch.setattr(locks, "WAIT_HOOK", lambda _folder: waiting.set())
    with ThreadPoolExecutor(2) as pool:
        reindex = pool.submit(engine.index, short, "Heat")
        assert hook.reached.wait(TIMEOUT), reindex.exception(0) if reindex.done() else "no swap"
        assert not (index_dir / "heat").exists()
        search = pool.submit(engine.search, "heat", [image], top=10)
        # Without the lock this search would find no "heat" (or load half of each index).
        assert waiting.wait(TIMEOUT), search.exception(0) if search.done() else "the search never waited"
        assert not search.done()
        hook.go()
        assert reindex.result(timeout=TIMEOUT).shots == 2
        answer = search.result(timeout=TIMEOUT)
    assert answer.results and {r.shot for r in answer.results} <= {1, 2}  # all from the new index
    assert _indexed(index_dir) == ["heat"]


def test_a_read_only_index_dir_with_crash_leftovers_lists_and_searches_but_refuses_to_index(
        cli_env: dict[str, str], index_dir: Path, videos: tuple[Path, Path], query: Path, tmpfs, capsys) -> None:
    video, short = videos
    tmpfs(index_dir, "8m")
    assert main(["index", str(video), "--movie", "Heat", "--quiet"]) == 0
    # What crashes leave: an old index not yet removed after its swap, a dead build that cannot be
    # resumed, and a stopped one that can.
    shutil.copytree(index_dir / "heat", index_dir / f"{OLD_PREFIX}heat-0badf00d")
    dead = index_dir / f"{BUILDING_PREFIX}heat-0123456789abcdef"
    dead.mkdir()
    (dead / "pid").write_text("999999999\nHeat\n")
    stopped = index_dir / f"{BUILDING_PREFIX}ronin-fedcba9876543210"
    stopped.mkdir()
    (stopped / CHECKPOINT).write_text("{}")
    fs_faults.remount(index_dir, "ro")
    before = snapshot(index_dir)
    capsys.readouterr()

    assert main(["movies", "--json"]) == 0
    assert [m["name"] for m in json.loads(capsys.readouterr().out)["movies"]] == ["Heat"]
    assert main(["search", "--movie", "heat", "--top", "3", "--json", str(query)]) == 0
    assert json.loads(capsys.readouterr().out)["results"]
    for movie in ("Heat", "Ronin"):
        assert main(["index", str(short), "--movie", movie, "--quiet"]) == 1
        err = capsys.readouterr().err
        assert f"{index_dir} is on a read-only file system (mounted at {index_dir}). Remount it read-write, or " \
               "index into another folder with --index-dir (CASTFINDER_INDEX_DIR)." in err
        assert ("The index of 'Heat' is unchanged" if movie == "Heat" else "'Ronin' was not indexed") in err
        assert "Traceback" not in err
    assert snapshot(index_dir) == before


def test_an_index_dir_this_user_may_not_write_is_a_message(
        cli_env: dict[str, str], index_dir: Path, videos: tuple[Path, Path], capsys,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """As a user without write access meets it (root, as here, is never refused: the refusal is injected)."""
    video, _ = videos
    assert main(["index", str(video), "--movie", "Heat", "--quiet"]) == 0
    before = snapshot(index_dir)
    mkdir = Path.mkdir

    def denied(self: Path, *args: Any, **kwargs: Any) -> None:
        if self.name.startswith(BUILDING_PREFIX):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", denied)
    capsys.readouterr()
    assert main(["index", str(video), "--movie", "Heat", "--fps", "2", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert (f"castfinder: error: Permission denied on {index_dir}: this user may not write there. Give it write "
            "access, or index into another folder with --index-dir (CASTFINDER_INDEX_DIR). The index of 'Heat' is "
            "unchanged, and nothing of this run was left behind.") in err
    assert snapshot(index_dir) == before


def test_another_movie_on_a_taken_slug_is_refused_unless_replace(
        cli_env: dict[str, str], index_dir: Path, videos: tuple[Path, Path], capsys) -> None:
    video, short = videos

    def index(movie: str, *flags: str) -> tuple[int, str]:
        code = main(["index", str(short), "--movie", movie, "--quiet", *flags])
        return code, capsys.readouterr().err

    assert index("Titanic") == (0, "")
    before = snapshot(index_dir)
    for name in ("Titanic!", "Titánic", "Ｔｉｔａｎｉｃ！"):  # the last is "Titanic!" in full-width forms
        code, err = index(name)
        assert code == 1 and "Traceback" not in err
        assert (f"{name!r} would be stored as 'titanic', where 'Titanic' is already indexed; add --replace to "
                f"replace 'Titanic' with it, or give this movie another --movie name.") in err
        assert snapshot(index_dir) == before
    # The same movie however typed (NFKC, case, spaces): re-indexed in place, as always.
    for same in ("  titanic ", "ｔｉｔａｎｉｃ"):
        assert index(same) == (0, "")
        [info] = Engine(Settings(_env_file=None), load_models=False).movies()
        assert (info.slug, info.name) == ("titanic", same.strip())
    assert index("Titanic!", "--replace") == (0, "")
    assert [m.name for m in Engine(Settings(_env_file=None), load_models=False).movies()] == ["Titanic!"]

    # A name with nothing ASCII gets a hash slug; a movie literally named like it does not take it over.
    assert index("🎬") == (0, "")
    hashed = slugify("🎬")
    code, err = index(hashed)
    assert code == 1 and "where '🎬' is already indexed" in err


def test_a_folder_castfinder_did_not_write_is_never_replaced(
        cli_env: dict[str, str], index_dir: Path, videos: tuple[Path, Path], capsys) -> None:
    mine = index_dir / "documents"
    mine.mkdir(parents=True)
    (mine / "taxes.txt").write_text("keep me")
    before = snapshot(index_dir)
    assert main(["index", str(videos[1]), "--movie", "Documents", "--replace", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"{mine} is in the way of the index of 'Documents' and is not an index castfinder wrote; move it out " \
           f"of {index_dir}, or give this movie another --movie name." in err
    assert snapshot(index_dir) == before


def test_a_serving_process_answers_from_the_index_another_process_rebuilt(
        cli_env: dict[str, str], index_dir: Path, videos: tuple[Path, Path], query: Path) -> None:
    """A long-lived engine (a bot, an engine worker) with the movie in its cache while another
    process re-indexes it in the shared index folder: each answer is wholly the old index or wholly
    the new, and the first one after the rebuild is the new."""
    import subprocess
    import sys

    from tests.hostile import REPO, offline_env

    video, short = videos
    server = Engine(Settings(_env_file=None))
    server.index(video, "Heat")
    old = server.search("heat", [query], top=10)  # loaded into the cache now
    assert {r.shot for r in old.results} == {1, 2, 3} and old.timeline is not None
    films = {old.timeline.duration_s: {1, 2, 3}}
    other = subprocess.Popen([sys.executable, "-m", "castfinder", "index", str(short), "--movie", "Heat", "--quiet"],
                             env=offline_env(cli_env), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    answers = []
    try:
        while True:  # serving all along, as a bot does (a query every quarter second or so)
            answers.append(server.search("heat", [query], top=10))
            try:
                other.wait(0.25)
                break
            except subprocess.TimeoutExpired:
                continue
        _, err = other.communicate(timeout=TIMEOUT)
    finally:
        if other.poll() is None:
            other.kill()
            other.communicate()
    assert other.returncode == 0, err[-2000:]
    new = server.search("heat", [query], top=10)
    assert new.timeline is not None and new.timeline.duration_s < old.timeline.duration_s
    films[new.timeline.duration_s] = {1, 2}
    for answer in [*answers, new]:
        assert answer.timeline is not None and answer.timeline.duration_s in films
        assert {r.shot for r in answer.results} <= films[answer.timeline.duration_s]  # never a mix
    assert {r.shot for r in new.results} == {1, 2}
    assert server.resolve_movie("heat").shots == 2
