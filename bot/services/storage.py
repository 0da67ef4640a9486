"""The bot's database: chat settings, the query log, stored result pages, pending person choices
and feedback. `Storage` is the one interface the bot calls; the SQL is written here once, and a
backend runs it: SQLite (`storage_sqlite`, the default, CASTFINDER_DB_PATH) or PostgreSQL
(`storage_postgres`, CASTFINDER_DATABASE_URL). Each creates and migrates its schema on open,
tracked in `schema_version`.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from .storage_backend import (
    Backend,
    DatabaseUnavailable,
    DatabaseUrlError,
    SchemaTooNewError,
    database_target,
    mask_url,
)
from .storage_sqlite import MIGRATIONS, SCHEMA_VERSION, SqliteBackend, migrate, schema_version

__all__ = [
    "MIGRATIONS", "SCHEMA_VERSION", "Backend", "DatabaseUnavailable", "DatabaseUrlError", "SchemaTooNewError",
    "database_target", "mask_url", "migrate", "schema_version",
]


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
    """The bot's one interface to its database, whichever backend runs it."""

    def __init__(self, backend: Backend, *, default_topk: int, clock: Callable[[], float] = time.time) -> None:
        self._db = backend
        self.default_topk = default_topk
        self._clock = clock

    @property
    def backend(self) -> str:
        return self._db.name

    @classmethod
    async def open(
        cls, target: Path | str, *, default_topk: int = 5, clock: Callable[[], float] = time.time
    ) -> Storage:
        """`target`: a PostgreSQL URL (postgresql://…) or the SQLite file's path (or ":memory:").
        Raises DatabaseUrlError, DatabaseUnavailable or SchemaTooNewError, each one line."""
        if isinstance(target, str) and "://" in target:
            from .storage_postgres import PostgresBackend

            backend: Backend = await PostgresBackend.open(str(database_target(target, "")))
        else:
            backend = await SqliteBackend.open(target)
        return cls(backend, default_topk=default_topk, clock=clock)

    async def close(self) -> None:
        await self._db.close()

    # -- chat settings -------------------------------------------------------------------
    async def chat(self, chat_id: int) -> ChatSettings:
        row = await self._db.fetchone("SELECT movie_slug, movie_name, topk FROM chat_settings WHERE chat_id = ?",
                                      chat_id)
        if row is None:
            return ChatSettings(chat_id, None, None, self.default_topk)
        return ChatSettings(chat_id, row["movie_slug"], row["movie_name"], row["topk"] or self.default_topk)

    async def set_movie(self, chat_id: int, slug: str, name: str) -> None:
        await self._db.execute(
            "INSERT INTO chat_settings (chat_id, movie_slug, movie_name, updated_at) VALUES (?,?,?,?) "
            "ON CONFLICT(chat_id) DO UPDATE SET movie_slug=excluded.movie_slug, "
            "movie_name=excluded.movie_name, updated_at=excluded.updated_at",
            chat_id, slug, name, self._now(),
        )

    async def set_topk(self, chat_id: int, topk: int) -> None:
        await self._db.execute(
            "INSERT INTO chat_settings (chat_id, topk, updated_at) VALUES (?,?,?) "
            "ON CONFLICT(chat_id) DO UPDATE SET topk=excluded.topk, updated_at=excluded.updated_at",
            chat_id, topk, self._now(),
        )

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
            page.id, chat_id, user_id, reply_to, thread_id, movie, page_size, _payload(page), self._now(), query,
        )
        return page

    async def replace_results(self, page: ResultPage) -> None:
        """Store `page`'s results (re-ranked by feedback) and version in place of the old ones."""
        await self._db.execute("UPDATE result_pages SET payload = ? WHERE id = ? AND chat_id = ?",
                               _payload(page), page.id, page.chat_id)

    async def query_vectors(self, page_id: str, *, chat_id: int) -> bytes | None:
        """The stored query vectors of a page (bound to its chat like `results`), None if none."""
        row = await self._db.fetchone("SELECT query FROM result_pages WHERE id = ? AND chat_id = ?", page_id, chat_id)
        return bytes(row[0]) if row is not None and row[0] is not None else None

    # -- feedback ------------------------------------------------------------------------
    async def add_feedback(self, page: ResultPage, *, user_id: int, tap: FeedbackTap) -> None:
        await self._db.execute(
            "INSERT INTO feedback (ts, page_id, chat_id, user_id, verdict, shot_id, crop) VALUES (?,?,?,?,?,?,?)",
            self._now(), page.id, page.chat_id, user_id, tap.verdict, tap.shot_id, tap.crop,
        )

    async def feedback(self, page: ResultPage) -> list[FeedbackTap]:
        """Every tap on the page's results, oldest first."""
        rows = await self._db.fetchall(
            "SELECT verdict, shot_id, crop FROM feedback WHERE page_id = ? AND chat_id = ? ORDER BY id",
            page.id, page.chat_id,
        )
        return [FeedbackTap(r[0], int(r[1]), int(r[2])) for r in rows]

    async def results(self, page_id: str, *, chat_id: int) -> ResultPage | None:
        """The page `page_id` if it was posted in `chat_id`. A page id is callback data, which a
        user can forge: bound to its chat, another chat's results are never found."""
        row = await self._db.fetchone("SELECT * FROM result_pages WHERE id = ? AND chat_id = ?", page_id, chat_id)
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
            "INSERT INTO pending_picks (id, chat_id, user_id, message_id, thread_id, file_id, movie_slug, people, "
            "created_at) VALUES (?,?,?,?,?,?,?,?,?)",
            pick.id, chat_id, user_id, message_id, thread_id, file_id, movie_slug, json.dumps(people), self._now(),
        )
        return pick

    async def pick(self, pick_id: str, *, chat_id: int) -> PendingPick | None:
        """The person choice `pick_id` if it was offered in `chat_id` (bound like `results`)."""
        row = await self._db.fetchone("SELECT * FROM pending_picks WHERE id = ? AND chat_id = ?", pick_id, chat_id)
        if row is None:
            return None
        return PendingPick(
            row["id"], row["chat_id"], row["user_id"], row["message_id"], row["thread_id"], row["file_id"],
            row["movie_slug"], json.loads(row["people"]),
        )

    async def purge(self, older_than_s: float) -> int:
        """Forget result pages and person choices older than `older_than_s`; returns rows removed."""
        cutoff = self._now() - older_than_s
        removed = 0
        for table in ("result_pages", "pending_picks"):
            removed += await self._db.execute(f"DELETE FROM {table} WHERE created_at < ?", cutoff)
        return removed

    # -- query log -----------------------------------------------------------------------
    async def log_query(self, entry: QueryLogEntry) -> None:
        await self._db.execute(
            "INSERT INTO query_log (ts, chat_id, chat_type, user_id, movie_slug, images, results, outcome, "
            "latency_ms, engine_ms) VALUES (?,?,?,?,?,?,?,?,?,?)",
            self._now(), entry.chat_id, entry.chat_type, entry.user_id, entry.movie_slug, entry.images,
            entry.results, entry.outcome, float(entry.latency_ms),
            None if entry.engine_ms is None else float(entry.engine_ms),
        )

    async def recent_queries(self, limit: int = 100) -> list[dict[str, Any]]:
        """The last `limit` rows of the query log, oldest first."""
        rows = await self._db.fetchall("SELECT * FROM query_log ORDER BY id DESC LIMIT ?", limit)
        return [dict(zip(r.keys(), (r[k] for k in r.keys()))) for r in rows][::-1]

    async def stats(self, *, recent: int = 1000) -> UsageStats:
        db = self._db
        since = self._now() - 86400

        async def scalar(sql: str, *args: Any) -> int:
            row = await db.fetchone(sql, *args)
            return int(row[0] or 0) if row is not None else 0

        total = await scalar("SELECT COUNT(*) FROM query_log")
        last_24h = await scalar("SELECT COUNT(*) FROM query_log WHERE ts >= ?", since)
        users = await scalar("SELECT COUNT(DISTINCT user_id) FROM query_log")
        chats = await scalar("SELECT COUNT(DISTINCT chat_id) FROM query_log")
        outcomes = {row[0]: int(row[1]) for row in await db.fetchall(
            "SELECT outcome, COUNT(*) FROM query_log GROUP BY outcome ORDER BY 2 DESC")}
        rows = await db.fetchall(
            "SELECT latency_ms, engine_ms FROM query_log WHERE outcome = 'ok' ORDER BY id DESC LIMIT ?", recent)
        latencies = [float(r[0]) for r in rows]
        engine = [float(r[1]) for r in rows if r[1] is not None]
        top = [(row[0], int(row[1])) for row in await db.fetchall(
            "SELECT movie_slug, COUNT(*) FROM query_log WHERE outcome = 'ok' AND movie_slug IS NOT NULL "
            "GROUP BY movie_slug ORDER BY 2 DESC, 1 LIMIT 5")]
        row = await db.fetchone(
            "SELECT COUNT(DISTINCT page_id), COUNT(DISTINCT CASE WHEN verdict = 'no' THEN page_id END), "
            "SUM(CASE WHEN verdict = 'yes' THEN 1 ELSE 0 END), SUM(CASE WHEN verdict = 'no' THEN 1 ELSE 0 END) "
            "FROM feedback"
        )
        corrected, rejected, yes_taps, no_taps = (int(row[i] or 0) for i in range(4)) if row is not None \
            else (0, 0, 0, 0)
        return UsageStats(
            total, last_24h, users, chats, outcomes, percentile(latencies, 0.5), percentile(latencies, 0.95),
            percentile(engine, 0.5), top, outcomes.get("ok", 0), corrected, rejected, yes_taps, no_taps,
        )

    def _now(self) -> float:
        # A float whatever the clock returns: PostgreSQL's columns are typed (double precision).
        return float(self._clock())
