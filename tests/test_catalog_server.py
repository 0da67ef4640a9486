"""The catalogue on a Milvus server that several processes share (CASTFINDER_MILVUS_URI): Milvus
Lite's own server (`python -m milvus_lite server`) on 127.0.0.1. A Milvus Lite file is one
process's at a time; a server is every process's."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import pytest

from tests.hostile import no_traceback, run_cli, tiny_cli_env
from tests.milvus_server import milvus_lite_server
from tests.test_identify import frame_at, make_movie

pytest.importorskip("milvus_lite", reason="the catalogue server is Milvus Lite's")
TIMEOUT = 240


@pytest.fixture
def milvus(tmp_path: Path) -> Iterator[str]:
    with milvus_lite_server(tmp_path / "milvus") as uri:
        yield uri


def test_two_processes_index_and_a_third_identifies_through_one_server(
        milvus: str, tmp_path: Path, tiny_dinov2: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core import Settings
    from core.catalog import FRAMES, LOCAL_NAME, Catalog, read_descriptors

    index_dir = tmp_path / "indexes"
    # A detector that finds nobody: the frames alone identify (as in test_identify.py).
    env = tiny_cli_env(monkeypatch, index_dir, tiny_dinov2, DET_CONF="1.0", MILVUS_URI=milvus)
    alpha, beta = make_movie(tmp_path / "alpha.mp4", seed=1), make_movie(tmp_path / "beta.mp4", seed=2)
    with ThreadPoolExecutor(2) as pool:  # two `castfinder index` processes at once, one server
        runs = list(pool.map(lambda job: run_cli(["index", str(job[0]), "--movie", job[1], "--quiet"], env,
                                                 timeout=TIMEOUT), [(alpha, "Alpha"), (beta, "Beta")]))
    for proc in runs:
        assert proc.returncode == 0 and no_traceback(proc), proc.stderr[-2000:]
        assert "catalogue was not updated" not in proc.stderr  # each updated it, neither was locked out
    assert not (index_dir / LOCAL_NAME).exists()  # everything is on the server

    # Each movie is in it once: two processes syncing at once never write a movie's rows twice.
    catalog = Catalog(Settings(_env_file=None, index_dir=index_dir, catalog_uri=milvus))
    try:
        assert sorted(e.name for e in catalog.entries().values()) == ["Alpha", "Beta"]
        for slug in ("alpha", "beta"):
            stored = catalog._open().query(FRAMES, filter=f'slug == "{slug}"', output_fields=["shot"], limit=16_384)
            descriptors = read_descriptors(index_dir / slug)
            assert descriptors is not None and len(stored) == len(descriptors[0])
    finally:
        catalog.close()

    # A third process (this one) identifies while the server is every process's (a Lite file would
    # be the first opener's until it exits).
    from core import Engine

    engine = Engine(Settings(_env_file=None), load_models=False)
    try:
        for video, name in ((alpha, "Alpha"), (beta, "Beta")):
            response = engine.identify(frame_at(video, 4.6))
            assert response.movie == name and response.shots[0].shot == 3
            assert response.movies_searched == 2
    finally:
        engine.catalog.close()


def test_a_server_that_is_down_is_one_clear_line(tmp_path: Path) -> None:
    from core import Settings
    from core.catalog import Catalog
    from core.errors import StorageError
    from tests.milvus_server import free_port

    catalog = Catalog(Settings(_env_file=None, index_dir=tmp_path / "indexes",
                               catalog_uri=f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(StorageError, match="cannot be reached; check CASTFINDER_MILVUS_URI") as info:
        catalog.entries()
    assert "\n" not in str(info.value)
