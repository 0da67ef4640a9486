"""A throwaway PostgreSQL server for the tests: one cluster per session in a temp dir, on
127.0.0.1 and a free port, each test in a database of its own.

PostgreSQL refuses to run as root (CI runs as root): there initdb and the server run as an
unprivileged system user (`postgres` when the Debian package made one, else `nobody`) through
runuser or setpriv; a developer's own user runs them directly."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.net import free_port

BINARIES = ("initdb", "pg_ctl", "postgres")
SUPERUSER = "castfinder"


def find_bindir() -> Path | None:
    """Where initdb, pg_ctl and postgres are: PATH (/usr/local/bin here), else Debian's
    /usr/lib/postgresql/<version>/bin (newest first)."""
    found = shutil.which("initdb")
    candidates = [Path(found).resolve().parent] if found else []
    candidates += [Path(d) for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                                           key=lambda d: int(Path(d).parent.name) if Path(d).parent.name.isdigit()
                                           else 0, reverse=True)]
    for bindir in candidates:
        if all((bindir / name).is_file() for name in BINARIES):
            return bindir
    return None


def missing_reason() -> str | None:
    """Why the PostgreSQL tests cannot run here, or None."""
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        return "asyncpg is not installed (pip install -e '.[postgres]')"
    if find_bindir() is None:
        return ("PostgreSQL is not installed (no initdb on PATH or in /usr/lib/postgresql/*/bin; "
                "Debian: apt-get install postgresql)")
    if os.geteuid() == 0 and not (shutil.which("runuser") or shutil.which("setpriv")):
        return "running as root without runuser or setpriv to start PostgreSQL as another user"
    return None


class PostgresServer:
    def __init__(self, bindir: Path, *, durable: bool = False) -> None:
        self.bindir = bindir
        self.durable = durable  # fsync on, as a real server runs (benchmarks); off for the tests
        self.root = Path(tempfile.mkdtemp(prefix="castfinder-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self._user: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            for name in ("postgres", "nobody"):
                try:
                    self._user = pwd.getpwnam(name)
                    break
                except KeyError:
                    continue
            if self._user is None:
                raise RuntimeError("no unprivileged user (postgres or nobody) to run PostgreSQL as")
            os.chown(self.root, self._user.pw_uid, self._user.pw_gid)

    def _run(self, *argv: str) -> None:
        cmd = [str(self.bindir / argv[0]), *argv[1:]]
        if self._user is not None:
            if shutil.which("runuser"):
                cmd = ["runuser", "-u", self._user.pw_name, "--", *cmd]
            else:
                cmd = ["setpriv", f"--reuid={self._user.pw_uid}", f"--regid={self._user.pw_gid}", "--clear-groups",
                       *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=self.root)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.is_file() else ""
            raise RuntimeError(f"{' '.join(argv[:2])} failed: {done.stderr.strip() or done.stdout.strip()}\n{log}")

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-sync",
                  "--no-instructions")
        self.start()

    def start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories=''"
        if not self.durable:  # a test cluster is thrown away, and fsync would dominate its time
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def close(self) -> None:
        try:
            self.stop()
        except (RuntimeError, subprocess.SubprocessError):
            pass
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres", *, password: str | None = None) -> str:
        auth = SUPERUSER if password is None else f"{SUPERUSER}:{password}"
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}"

    async def create_database(self, name: str) -> str:
        """A new empty database; returns its URL."""
        import asyncpg

        conn = await asyncpg.connect(self.url())
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.url(name)
