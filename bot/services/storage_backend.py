"""What `Storage` needs from a database (`Backend`), the errors every backend raises alike, and
which backend a setting names. Backends: SQLite (`storage_sqlite`, one host, the default) and
PostgreSQL (`storage_postgres`, several hosts, `CASTFINDER_DATABASE_URL`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Protocol
from urllib.parse import unquote, urlsplit, urlunsplit

POSTGRES_SCHEMES = ("postgresql", "postgres")


class SchemaTooNewError(RuntimeError):
    """The database was migrated by a newer castfinder: this one would misread it."""


class DatabaseUnavailable(RuntimeError):
    """The database cannot be reached (refused, lost, restarting) or refused the login. The
    message names the setting and never holds a password."""


class DatabaseUrlError(ValueError):
    """CASTFINDER_DATABASE_URL names no backend castfinder has (message masked)."""


class Row(Protocol):
    """A result row, read by position or by column name (aiosqlite.Row and asyncpg.Record are)."""

    def __getitem__(self, key: Any) -> Any: ...

    def keys(self) -> Iterable[str]: ...


class Backend(Protocol):
    """One database, SQL written once with `?` placeholders; each write is committed on return.
    Connection failures raise DatabaseUnavailable."""

    name: str  # "sqlite" or "postgresql", for logs and benchmarks

    async def execute(self, sql: str, *args: Any) -> int:
        """Run one statement; returns the rows it changed."""
        ...

    async def fetchone(self, sql: str, *args: Any) -> Row | None: ...

    async def fetchall(self, sql: str, *args: Any) -> list[Row]: ...

    async def close(self) -> None: ...


def mask_url(url: str) -> str:
    """`url` with its password replaced by ***, to be shown in logs and errors."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # not even a URL (a bad port…): show only its scheme
        return url.split("://", 1)[0] + "://***" if "://" in url else "***"
    if password is None:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostinfo}"))


def url_password(url: str) -> str | None:
    """The password in `url` as written (and decoded), for RedactSecrets; None when none."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return None
    return password or None


def scrub(text: str, url: str) -> str:
    """`text` (a driver's error message) with every form of the password in `url` masked."""
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        netloc = ""
    userinfo = netloc.rpartition("@")[0]
    raw = userinfo.split(":", 1)[1] if ":" in userinfo else ""
    for secret in {raw, unquote(raw)} - {""}:
        text = text.replace(secret, "***")
    return text


def database_target(url: str | None, db_path: Path | str) -> Path | str:
    """What `Storage.open` opens: the PostgreSQL URL when `url` is set, else the SQLite file.
    An unknown scheme is refused here, before anything loads (DatabaseUrlError)."""
    if not url:
        return db_path
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in POSTGRES_SCHEMES:
        named = f"'{scheme}'" if scheme else "none"
        raise DatabaseUrlError(
            f"CASTFINDER_DATABASE_URL={mask_url(url)}: unknown scheme {named}; use "
            "postgresql://user:password@host:port/database, or leave it empty for the SQLite file at "
            "CASTFINDER_DB_PATH"
        )
    return url
