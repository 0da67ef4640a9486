"""The SQLite backend of the bot's Storage (aiosqlite): one file on one host, the default. Several
processes may share the file: WAL (readers never wait for the writer), a busy timeout (writers
wait their turn instead of failing with "database is locked"), and migrations that take the
write lock before they read the version, so two processes starting at once migrate once."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import aiosqlite

from .storage_backend import Row, SchemaTooNewError

log = logging.getLogger(__name__)

# How long a write waits for another process's write to finish. Ours last milliseconds; a
# timeout this long only matters on a stalled disk, where failing fast would lose the write.
BUSY_TIMEOUT_S = 30.0

# Append only: a database at version N gets migrations N+1.. applied, each in one transaction.
# storage_postgres.MIGRATIONS holds the same versions in PostgreSQL's dialect: add to both.
MIGRATIONS: list[str] = [
    # 1: per-chat settings and the query log.
    """
    CREATE TABLE chat_settings (
        chat_id INTEGER PRIMARY KEY,
        movie_slug TEXT,
        movie_name TEXT,
        topk INTEGER,
        updated_at REAL NOT NULL
    );
    CREATE TABLE query_log (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts REAL NOT NULL,
        chat_id INTEGER NOT NULL,
        chat_type TEXT NOT NULL,
        user_id INTEGER NOT NULL,
        movie_slug TEXT,
        images INTEGER NOT NULL,
        results INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        latency_ms REAL NOT NULL
    );
    CREATE INDEX query_log_ts ON query_log(ts);
    """,
    # 2: results kept for "More" and screenshots waiting for the user to pick a person; the
    # engine's own time is logged apart from the end-to-end latency.
    """
    CREATE TABLE result_pages (
        id TEXT PRIMARY KEY,
        chat_id INTEGER NOT NULL,
        user_id INTEGER NOT NULL,
        reply_to INTEGER,
        thread_id INTEGER,
        movie TEXT NOT NULL,
        page_size INTEGER NOT NULL,
        payload TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX result_pages_created ON result_pages(created_at);
    CREATE TABLE pending_picks (
        id TEXT PRIMARY KEY,
        chat_id INTEGER NOT NULL,
        user_id INTEGER NOT NULL,
        message_id INTEGER NOT NULL,
        thread_id INTEGER,
        file_id TEXT NOT NULL,
        movie_slug TEXT NOT NULL,
        people TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX pending_picks_created ON pending_picks(created_at);
    ALTER TABLE query_log ADD COLUMN engine_ms REAL;
    """,
    # 3: feedback on results ("that's them" / "not them"): the query's vectors kept with its
    # page so that a tap re-ranks without the screenshots, and every tap, kept for /stats.
    """
    ALTER TABLE result_pages ADD COLUMN query BLOB;
    CREATE TABLE feedback (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts REAL NOT NULL,
        page_id TEXT NOT NULL,
        chat_id INTEGER NOT NULL,
        user_id INTEGER NOT NULL,
        verdict TEXT NOT NULL,
        shot_id INTEGER NOT NULL,
        crop INTEGER NOT NULL
    );
    CREATE INDEX feedback_page ON feedback(page_id);
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


class SqliteBackend:
    name = "sqlite"

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    @classmethod
    async def open(cls, path: Path | str) -> SqliteBackend:
        path = Path(path)
        memory = str(path) == ":memory:"
        if not memory:
            path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path, timeout=BUSY_TIMEOUT_S)
        try:
            db.row_factory = aiosqlite.Row
            if not memory:
                await db.execute("PRAGMA journal_mode=WAL")
            await migrate(db)
        except BaseException:
            await db.close()
            raise
        return cls(db)

    async def execute(self, sql: str, *args: Any) -> int:
        cur = await self._db.execute(sql, args)
        await self._db.commit()
        return cur.rowcount

    async def fetchone(self, sql: str, *args: Any) -> Row | None:
        async with self._db.execute(sql, args) as cur:
            row: Row | None = await cur.fetchone()
        return row

    async def fetchall(self, sql: str, *args: Any) -> list[Row]:
        async with self._db.execute(sql, args) as cur:
            return list(await cur.fetchall())

    async def close(self) -> None:
        await self._db.close()


async def schema_version(db: aiosqlite.Connection) -> int:
    await db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    async with db.execute("SELECT MAX(version) FROM schema_version") as cur:
        row = await cur.fetchone()
    return int(row[0] or 0) if row is not None else 0


def too_new(current: int, setting: str) -> SchemaTooNewError:
    return SchemaTooNewError(
        f"the bot database is at schema version {current}, newer than this castfinder "
        f"({SCHEMA_VERSION}); upgrade castfinder or point {setting} elsewhere"
    )


async def migrate(db: aiosqlite.Connection, *, target: int = SCHEMA_VERSION) -> int:
    """Bring the schema to `target`; returns the version it was at."""
    start = current = await schema_version(db)
    if current > SCHEMA_VERSION:
        raise too_new(current, "CASTFINDER_DB_PATH")
    while current < target:
        # One transaction per step, holding the write lock from before the version is read: a
        # process that started at the same time waits, then finds the step done and skips it.
        await db.execute("BEGIN IMMEDIATE")
        try:
            async with db.execute("SELECT MAX(version) FROM schema_version") as cur:
                row = await cur.fetchone()
            current = int(row[0] or 0) if row is not None else 0
            if current > SCHEMA_VERSION:
                raise too_new(current, "CASTFINDER_DB_PATH")
            if current >= target:
                await db.rollback()
                break
            version = current + 1
            for statement in (s.strip() for s in MIGRATIONS[version - 1].split(";")):
                if statement:
                    await db.execute(statement)
            await db.execute("DELETE FROM schema_version")
            await db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
            await db.commit()
        except BaseException:
            await db.rollback()
            raise
        current = version
        log.info("bot database migrated to schema version %d", version)
    return start
