"""The bot's SQLite database (aiosqlite): chat settings, the query log, stored result pages and
pending person choices. The schema is created and migrated on open, tracked in `schema_version`.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import aiosqlite

log = logging.getLogger(__name__)

# Append only: a database at version N gets migrations N+1.. applied, each in one transaction.
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


class SchemaTooNewError(RuntimeError):
    pass


@dataclass(frozen=True)
class ChatSettings:
    chat_id: int
    movie_slug: str | None
    movie_name: str | None
    topk: int


@dataclass(frozen=True)
class StoredResult:
    """One search result as kept for paging (plain data, JSON-serialisable)."""

    rank: int
    shot: int
    scene: int | None
    start_s: float
    end_s: float
    confidence: float  # the engine's calibrated confidence, shown as a percentage
    thumbnail: str
    low_confidence: bool
    # What feedback on the result names (core.Mark); 0 / -1 in pages stored before feedback.
    shot_id: int = 0
    crop: int = -1
    frame_s: float | None = None  # the best-matching moment: the ▶ clip is centred on it


@dataclass(frozen=True)
class FeedbackTap:
    """One tap of "that's them" ("yes") or "not them" ("no") on a result."""

    verdict: str
    shot_id: int
    crop: int


@dataclass(frozen=True)
class ResultPage:
    id: str
    chat_id: int
    user_id: int
    reply_to: int | None
    thread_id: int | None
    movie: str
    page_size: int
    results: list[StoredResult]
    notes: list[str] = field(default_factory=list)
    # For feedback: the movie's slug and build (results name its crops), and how many taps the
    # results reflect (buttons carry it, so a tap on a list that changed since is told apart).
    slug: str = ""
    build_id: str = ""
    version: int = 0


@dataclass(frozen=True)
class PendingPick:
    id: str
    chat_id: int
    user_id: int
    message_id: int
    thread_id: int | None
    file_id: str
    movie_slug: str
    people: list[dict[str, Any]]


@dataclass(frozen=True)
class QueryLogEntry:
    chat_id: int
    chat_type: str
    user_id: int
    movie_slug: str | None
    images: int
    results: int
    outcome: str
    latency_ms: float
    engine_ms: float | None = None


@dataclass(frozen=True)
class UsageStats:
    total: int
    last_24h: int
    users: int
    chats: int
    outcomes: dict[str, int]
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    engine_p50_ms: float | None
    top_movies: list[tuple[str, int]]
    answered: int = 0  # queries answered with results
    corrected: int = 0  # answers with any feedback
    rejected: int = 0  # answers with any "not them"
    yes_taps: int = 0
    no_taps: int = 0


def _payload(page: ResultPage) -> str:
    return json.dumps({"results": [asdict(r) for r in page.results], "notes": page.notes, "slug": page.slug,
                       "build_id": page.build_id, "version": page.version})


def new_id() -> str:
    # 11 URL-safe characters: short enough for callback data, unguessable across chats.
    return secrets.token_urlsafe(8)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


class Storage:
    def __init__(self, db: aiosqlite.Connection, *, default_topk: int, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self.default_topk = default_topk
        self._clock = clock

    @classmethod
    async def open(
        cls, path: Path | str, *, default_topk: int = 5, clock: Callable[[], float] = time.time
    ) -> Storage:
        path = Path(path)
        if str(path) != ":memory:":
            path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path)
        try:
            db.row_factory = aiosqlite.Row
            if str(path) != ":memory:":
                await db.execute("PRAGMA journal_mode=WAL")
            await migrate(db)
        except BaseException:
            await db.close()
            raise
        return cls(db, default_topk=default_topk, clock=clock)

    async def close(self) -> None:
        await self._db.close()

    # -- chat settings -------------------------------------------------------------------
    async def chat(self, chat_id: int) -> ChatSettings:
        async with self._db.execute(
            "SELECT movie_slug, movie_name, topk FROM chat_settings WHERE chat_id = ?", (chat_id,)
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            return ChatSettings(chat_id, None, None, self.default_topk)
        return ChatSettings(chat_id, row["movie_slug"], row["movie_name"], row["topk"] or self.default_topk)

    async def set_movie(self, chat_id: int, slug: str, name: str) -> None:
        await self._db.execute(
            "INSERT INTO chat_settings (chat_id, movie_slug, movie_name, updated_at) VALUES (?,?,?,?) "
            "ON CONFLICT(chat_id) DO UPDATE SET movie_slug=excluded.movie_slug, "
            "movie_name=excluded.movie_name, updated_at=excluded.updated_at",
            (chat_id, slug, name, self._clock()),
        )
        await self._db.commit()

    async def set_topk(self, chat_id: int, topk: int) -> None:
        await self._db.execute(
            "INSERT INTO chat_settings (chat_id, topk, updated_at) VALUES (?,?,?) "
            "ON CONFLICT(chat_id) DO UPDATE SET topk=excluded.topk, updated_at=excluded.updated_at",
            (chat_id, topk, self._clock()),
        )
        await self._db.commit()

    # -- result pages --------------------------------------------------------------------
    async def save_results(
        self,
        *,
        chat_id: int,
        user_id: int,
        reply_to: int | None,
        thread_id: int | None,
        movie: str,
        page_size: int,
        results: list[StoredResult],
        notes: list[str],
        slug: str = "",
        build_id: str = "",
        query: bytes | None = None,
    ) -> ResultPage:
        """`query`: the query's vectors (bot.services.feedback.pack), for feedback on the page."""
        page = ResultPage(new_id(), chat_id, user_id, reply_to, thread_id, movie, page_size, results, notes,
                          slug, build_id)
        await self._db.execute(
            "INSERT INTO result_pages (id, chat_id, user_id, reply_to, thread_id, movie, page_size, payload, "
            "created_at, query) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (page.id, chat_id, user_id, reply_to, thread_id, movie, page_size, _payload(page), self._clock(), query),
        )
        await self._db.commit()
        return page

    async def replace_results(self, page: ResultPage) -> None:
        """Store `page`'s results (re-ranked by feedback) and version in place of the old ones."""
        await self._db.execute("UPDATE result_pages SET payload = ? WHERE id = ? AND chat_id = ?",
                               (_payload(page), page.id, page.chat_id))
        await self._db.commit()

    async def query_vectors(self, page_id: str, *, chat_id: int) -> bytes | None:
        """The stored query vectors of a page (bound to its chat like `results`), None if none."""
        async with self._db.execute(
            "SELECT query FROM result_pages WHERE id = ? AND chat_id = ?", (page_id, chat_id)
        ) as cur:
            row = await cur.fetchone()
        return bytes(row[0]) if row is not None and row[0] is not None else None

    # -- feedback ------------------------------------------------------------------------
    async def add_feedback(self, page: ResultPage, *, user_id: int, tap: FeedbackTap) -> None:
        await self._db.execute(
            "INSERT INTO feedback (ts, page_id, chat_id, user_id, verdict, shot_id, crop) VALUES (?,?,?,?,?,?,?)",
            (self._clock(), page.id, page.chat_id, user_id, tap.verdict, tap.shot_id, tap.crop),
        )
        await self._db.commit()

    async def feedback(self, page: ResultPage) -> list[FeedbackTap]:
        """Every tap on the page's results, oldest first."""
        async with self._db.execute(
            "SELECT verdict, shot_id, crop FROM feedback WHERE page_id = ? AND chat_id = ? ORDER BY id",
            (page.id, page.chat_id),
        ) as cur:
            return [FeedbackTap(r[0], int(r[1]), int(r[2])) for r in await cur.fetchall()]

    async def results(self, page_id: str, *, chat_id: int) -> ResultPage | None:
        """The page `page_id` if it was posted in `chat_id`. A page id is callback data, which a
        user can forge: bound to its chat, another chat's results are never found."""
        async with self._db.execute(
            "SELECT * FROM result_pages WHERE id = ? AND chat_id = ?", (page_id, chat_id)
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            return None
        payload = json.loads(row["payload"])
        return ResultPage(
            row["id"], row["chat_id"], row["user_id"], row["reply_to"], row["thread_id"], row["movie"],
            row["page_size"], [StoredResult(**r) for r in payload["results"]], payload.get("notes", []),
            payload.get("slug", ""), payload.get("build_id", ""), payload.get("version", 0),
        )

    # -- person choices ------------------------------------------------------------------
    async def save_pick(
        self,
        *,
        chat_id: int,
        user_id: int,
        message_id: int,
        thread_id: int | None,
        file_id: str,
        movie_slug: str,
        people: list[dict[str, Any]],
    ) -> PendingPick:
        pick = PendingPick(new_id(), chat_id, user_id, message_id, thread_id, file_id, movie_slug, people)
        await self._db.execute(
            "INSERT INTO pending_picks VALUES (?,?,?,?,?,?,?,?,?)",
            (pick.id, chat_id, user_id, message_id, thread_id, file_id, movie_slug, json.dumps(people), self._clock()),
        )
        await self._db.commit()
        return pick

    async def pick(self, pick_id: str, *, chat_id: int) -> PendingPick | None:
        """The person choice `pick_id` if it was offered in `chat_id` (bound like `results`)."""
        async with self._db.execute(
            "SELECT * FROM pending_picks WHERE id = ? AND chat_id = ?", (pick_id, chat_id)
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            return None
        return PendingPick(
            row["id"], row["chat_id"], row["user_id"], row["message_id"], row["thread_id"], row["file_id"],
            row["movie_slug"], json.loads(row["people"]),
        )

    async def purge(self, older_than_s: float) -> int:
        """Forget result pages and person choices older than `older_than_s`; returns rows removed."""
        cutoff = self._clock() - older_than_s
        removed = 0
        for table in ("result_pages", "pending_picks"):
            cur = await self._db.execute(f"DELETE FROM {table} WHERE created_at < ?", (cutoff,))
            removed += cur.rowcount
        await self._db.commit()
        return removed

    # -- query log -----------------------------------------------------------------------
    async def log_query(self, entry: QueryLogEntry) -> None:
        await self._db.execute(
            "INSERT INTO query_log (ts, chat_id, chat_type, user_id, movie_slug, images, results, outcome, "
            "latency_ms, engine_ms) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (self._clock(), entry.chat_id, entry.chat_type, entry.user_id, entry.movie_slug, entry.images,
             entry.results, entry.outcome, entry.latency_ms, entry.engine_ms),
        )
        await self._db.commit()

    async def recent_queries(self, limit: int = 100) -> list[dict[str, Any]]:
        """The last `limit` rows of the query log, oldest first."""
        async with self._db.execute("SELECT * FROM query_log ORDER BY id DESC LIMIT ?", (limit,)) as cur:
            rows = [dict(r) for r in await cur.fetchall()]
        return rows[::-1]

    async def stats(self, *, recent: int = 1000) -> UsageStats:
        db = self._db
        since = self._clock() - 86400

        async def scalar(sql: str, *args: Any) -> int:
            async with db.execute(sql, args) as cur:
                row = await cur.fetchone()
            return int(row[0] or 0) if row is not None else 0

        total = await scalar("SELECT COUNT(*) FROM query_log")
        last_24h = await scalar("SELECT COUNT(*) FROM query_log WHERE ts >= ?", since)
        users = await scalar("SELECT COUNT(DISTINCT user_id) FROM query_log")
        chats = await scalar("SELECT COUNT(DISTINCT chat_id) FROM query_log")
        async with db.execute("SELECT outcome, COUNT(*) FROM query_log GROUP BY outcome ORDER BY 2 DESC") as cur:
            outcomes = {row[0]: int(row[1]) for row in await cur.fetchall()}
        async with db.execute(
            "SELECT latency_ms, engine_ms FROM query_log WHERE outcome = 'ok' ORDER BY id DESC LIMIT ?", (recent,)
        ) as cur:
            rows = await cur.fetchall()
        latencies = [float(r[0]) for r in rows]
        engine = [float(r[1]) for r in rows if r[1] is not None]
        async with db.execute(
            "SELECT movie_slug, COUNT(*) FROM query_log WHERE outcome = 'ok' AND movie_slug IS NOT NULL "
            "GROUP BY movie_slug ORDER BY 2 DESC, 1 LIMIT 5"
        ) as cur:
            top = [(row[0], int(row[1])) for row in await cur.fetchall()]
        async with db.execute(
            "SELECT COUNT(DISTINCT page_id), COUNT(DISTINCT CASE WHEN verdict = 'no' THEN page_id END), "
            "SUM(verdict = 'yes'), SUM(verdict = 'no') FROM feedback"
        ) as cur:
            row = await cur.fetchone()
        corrected, rejected, yes_taps, no_taps = (int(v or 0) for v in row) if row is not None else (0, 0, 0, 0)
        return UsageStats(
            total, last_24h, users, chats, outcomes, percentile(latencies, 0.5), percentile(latencies, 0.95),
            percentile(engine, 0.5), top, outcomes.get("ok", 0), corrected, rejected, yes_taps, no_taps,
        )


async def schema_version(db: aiosqlite.Connection) -> int:
    await db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    async with db.execute("SELECT MAX(version) FROM schema_version") as cur:
        row = await cur.fetchone()
    return int(row[0] or 0) if row is not None else 0


async def migrate(db: aiosqlite.Connection, *, target: int = SCHEMA_VERSION) -> int:
    """Bring the schema to `target`; returns the version it was at."""
    current = await schema_version(db)
    if current > SCHEMA_VERSION:
        raise SchemaTooNewError(
            f"the bot database is at schema version {current}, newer than this castfinder "
            f"({SCHEMA_VERSION}); upgrade castfinder or point CASTFINDER_DB_PATH elsewhere"
        )
    for version in range(current + 1, target + 1):
        # One transaction per step: a failed migration leaves the previous version intact.
        statements = [s.strip() for s in MIGRATIONS[version - 1].split(";") if s.strip()]
        await db.execute("BEGIN")
        try:
            for statement in statements:
                await db.execute(statement)
            await db.execute("DELETE FROM schema_version")
            await db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
            await db.commit()
        except BaseException:
            await db.rollback()
            raise
        log.info("bot database migrated to schema version %d", version)
    return current
