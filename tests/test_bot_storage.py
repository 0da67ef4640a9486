"""The bot's database beyond one process: several processes on one SQLite file, PostgreSQL for
several hosts, and what an operator sees when the database is wrong or gone. (The per-method
behaviour runs on both backends in test_bot_services.py.)"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from bot import texts
from bot.app import run
from bot.services import storage_postgres, storage_sqlite
from bot.services.storage import DatabaseUnavailable, DatabaseUrlError, SchemaTooNewError, Storage, StoredResult
from bot.services.storage_backend import database_target, mask_url, scrub
from tests.bot_support import USER_ID, CatalogEngine, bot_harness, movie_info
from tests.conftest import REPO
from tests.postgres_server import PostgresServer

PASSWORD = "s3cret-Pa55"

# One bot process's share of the work: open the shared file (both processes at once, so both
# may try to migrate), then write and read result pages and the query log as fast as it can.
WORKER = r"""
import asyncio, json, sys
from bot.services.storage import QueryLogEntry, Storage, StoredResult

async def main(target, name, rounds):
    sys.stdin.readline()  # the start signal: both processes open the database at the same moment
    db = await Storage.open(target)
    pages = []
    try:
        for i in range(rounds):
            page = await db.save_results(chat_id=i % 7, user_id=1, reply_to=None, thread_id=None, movie=name,
                                         page_size=5, results=[StoredResult(1, i, None, 0.0, 1.0, 0.5, "t", False)],
                                         notes=[])
            assert (await db.results(page.id, chat_id=i % 7)).results[0].shot == i
            await db.set_topk(i % 7, 1 + i % 20)
            await db.log_query(QueryLogEntry(i % 7, "private", 1, None, 1, 1, "ok", 1.0))
            pages.append([page.id, i % 7])
    finally:
        await db.close()
    print(json.dumps(pages))

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


def _two_processes(target: str, rounds: int) -> list[list[list]]:
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, target, name, str(rounds)], cwd=REPO, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for name in ("a", "b")]
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    outs = [proc.communicate(timeout=120) for proc in procs]
    for proc, (_, err) in zip(procs, outs):
        assert proc.returncode == 0, err
    return [json.loads(out) for out, _ in outs]


def test_two_processes_share_one_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"
    rounds = 150
    a, b = _two_processes(str(path), rounds)

    async def check() -> None:
        db = await Storage.open(path)
        try:
            for page_id, chat_id in a + b:  # each process reads the other's pages ("More" on either)
                assert (await db.results(page_id, chat_id=chat_id)) is not None
            assert len(await db.recent_queries(10 * rounds)) == 2 * rounds
        finally:
            await db.close()

    asyncio.run(check())
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert raw.execute("SELECT version FROM schema_version").fetchall() == [(storage_sqlite.SCHEMA_VERSION,)]


def test_two_processes_share_one_postgres_database(postgres: PostgresServer) -> None:
    url = asyncio.run(postgres.create_database(f"t_{uuid.uuid4().hex[:12]}"))
    a, b = _two_processes(url, 60)
    assert len({p for p, _ in a + b}) == 120

    async def check() -> None:
        db = await Storage.open(url)
        try:
            assert len(await db.recent_queries(1000)) == 120
            assert all([await db.results(p, chat_id=c) for p, c in a + b])
        finally:
            await db.close()

    asyncio.run(check())


def test_both_backends_have_the_same_schema_versions() -> None:
    assert storage_postgres.SCHEMA_VERSION == storage_sqlite.SCHEMA_VERSION
    assert storage_postgres.dialect("SELECT ? WHERE a = ? AND b IN (?)") == "SELECT $1 WHERE a = $2 AND b IN ($3)"


# -- settings and the URL ---------------------------------------------------------------------
def test_the_password_is_masked_wherever_the_url_is_shown() -> None:
    url = f"postgresql://bot:{PASSWORD}@db.example:5432/castfinder"
    assert mask_url(url) == "postgresql://bot:***@db.example:5432/castfinder"
    assert mask_url("postgresql://bot@db/castfinder") == "postgresql://bot@db/castfinder"
    encoded = "postgresql://bot:p%40ss%3Aword@db/castfinder"
    assert mask_url(encoded) == "postgresql://bot:***@db/castfinder"
    assert scrub("auth failed for p@ss:word and p%40ss%3Aword", encoded) == "auth failed for *** and ***"
    assert database_target(None, Path("bot.sqlite3")) == Path("bot.sqlite3")
    assert database_target(url, Path("bot.sqlite3")) == url
    with pytest.raises(DatabaseUrlError) as info:
        database_target(f"mysql://bot:{PASSWORD}@db/castfinder", Path("x"))
    assert PASSWORD not in str(info.value) and "mysql://bot:***@db/castfinder" in str(info.value)
    assert "unknown scheme 'mysql'" in str(info.value) and "\n" not in str(info.value)


def test_bot_refuses_an_unknown_scheme_before_loading_anything(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BOT_TOKEN", "1:token")
    monkeypatch.setenv("CASTFINDER_DATABASE_URL", f"mysql://bot:{PASSWORD}@db/castfinder")
    import bot.app

    monkeypatch.setattr(bot.app, "build_engine", lambda: pytest.fail("the engine loaded before the URL was checked"))
    try:
        assert run([]) == 2
    finally:
        _drop_bot_log_handler()
    err = capsys.readouterr().err
    assert "CASTFINDER_DATABASE_URL=mysql://bot:***@db/castfinder: unknown scheme" in err
    assert PASSWORD not in err and "Traceback" not in err


def test_bot_says_in_one_line_that_the_database_is_unreachable(tmp_path: Path, monkeypatch, capsys) -> None:
    with socket_closed() as port:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("BOT_TOKEN", "1:token")
        monkeypatch.setenv("CASTFINDER_DATABASE_URL", f"postgresql://bot:{PASSWORD}@127.0.0.1:{port}/castfinder")
        import bot.app

        monkeypatch.setattr(bot.app, "build_engine", lambda: CatalogEngine([], tmp_path))
        try:
            assert run([]) == 1
        finally:
            _drop_bot_log_handler()
    err = capsys.readouterr().err
    [line] = [ln for ln in err.splitlines() if "CASTFINDER_DATABASE_URL" in ln]
    assert f"postgresql://bot:***@127.0.0.1:{port}/castfinder cannot be used" in line
    assert PASSWORD not in err and "Traceback" not in err


# -- PostgreSQL: start-up and outages ---------------------------------------------------------
async def test_postgres_refusals_are_one_line_without_the_password(postgres: PostgresServer) -> None:
    missing = postgres.url(f"nope_{uuid.uuid4().hex[:8]}", password=PASSWORD)
    with pytest.raises(DatabaseUnavailable) as info:
        await Storage.open(missing)
    message = str(info.value)
    assert "CASTFINDER_DATABASE_URL=postgresql://castfinder:***@127.0.0.1" in message and "does not exist" in message
    assert PASSWORD not in message and "\n" not in message


async def test_processes_starting_together_migrate_once(postgres: PostgresServer) -> None:
    url = await postgres.create_database(f"t_{uuid.uuid4().hex[:12]}")
    opened = await asyncio.gather(*(Storage.open(url) for _ in range(4)))
    try:
        await opened[0].set_topk(1, 4)
        assert all([(await db.chat(1)).topk == 4 for db in opened])
    finally:
        await asyncio.gather(*(db.close() for db in opened))
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        assert [tuple(r) for r in await conn.fetch("SELECT version FROM schema_version")] == \
            [(storage_postgres.SCHEMA_VERSION,)]
        await conn.execute("UPDATE schema_version SET version = 99")
    finally:
        await conn.close()
    with pytest.raises(SchemaTooNewError, match="CASTFINDER_DATABASE_URL"):
        await Storage.open(url)


async def test_the_bot_apologises_while_postgres_is_down_and_recovers(postgres: PostgresServer, tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    url = await postgres.create_database(f"t_{uuid.uuid4().hex[:12]}")
    url = url.replace("castfinder@", f"castfinder:{PASSWORD}@")  # trust auth ignores it; the logs must too
    engine = CatalogEngine([movie_info("Heat", "heat", duration_s=600, shots=10)], tmp_path)
    caplog.set_level(logging.INFO)
    async with bot_harness(engine, tmp_path, database_url=url) as h:
        assert h.app.storage.backend == "postgresql"
        page = await h.app.storage.save_results(chat_id=USER_ID, user_id=USER_ID, reply_to=None, thread_id=None,
                                                movie="Heat", page_size=5, notes=[],
                                                results=[StoredResult(1, 3, None, 0.0, 1.0, 0.9, "t", False)])
        await h.feed(h.text("/topk 3"))
        postgres.stop()
        try:
            await h.feed(h.text("/topk 4"))
            await h.feed(h.text("/topk"))
        finally:
            postgres.start()
        await h.feed(h.text("/topk 7"))
        await h.feed(h.text("/topk"))
        assert (await h.app.storage.results(page.id, chat_id=USER_ID)) is not None  # kept across the restart
    assert h.sent_texts() == [texts.topk_set(3), texts.internal_error(), texts.internal_error(), texts.topk_set(7),
                              texts.topk_current(7)]
    assert PASSWORD not in caplog.text and "castfinder:***@127.0.0.1" in caplog.text
    assert "is unreachable" in caplog.text and "is back" in caplog.text
    assert "Traceback" not in caplog.text


class socket_closed:
    """A 127.0.0.1 port nothing listens on (bound and released)."""

    def __enter__(self) -> int:
        from tests.net import free_port

        self.port: int = free_port()
        return self.port

    def __exit__(self, *exc: object) -> None:
        return None


def _drop_bot_log_handler() -> None:
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_castfinder", False)]:
        root.removeHandler(handler)
