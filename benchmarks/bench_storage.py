"""The bot's database, SQLite (the default) vs PostgreSQL side by side: the round trip of a
results page ("More" under an answer: the page saved, then loaded), a chat's settings read, a
query-log write, and the same page round trips from two bot processes sharing one database.

    .venv/bin/python benchmarks/bench_storage.py [--rounds 300] [--results 50]

SQLite is a file in a temp dir (WAL, synchronous=FULL as the bot opens it); PostgreSQL is a
throwaway cluster started here on 127.0.0.1 with its durable defaults (fsync on), from the
binaries the tests use (tests/postgres_server.py); without them only SQLite is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from bench_core import machine  # noqa: E402  (one description of the machine for every benchmark)

from bot.services.storage import QueryLogEntry, Storage, StoredResult  # noqa: E402
from tests.postgres_server import PostgresServer, find_bindir, missing_reason  # noqa: E402

# One process of a pair: its page round trips, as JSON milliseconds on stdout.
PAIR_WORKER = r"""
import asyncio, json, sys, time
sys.path.insert(0, sys.argv[4])
from benchmarks.bench_storage import page_round_trips
times = asyncio.run(page_round_trips(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), wait=True))
print(json.dumps(times))
"""


def results(n: int) -> list[StoredResult]:
    return [StoredResult(i + 1, 100 + i, i // 3, i * 4.0, i * 4.0 + 3.5, 0.9 - i / 100, f"/thumbs/{i}.jpg", i > 20,
                         shot_id=100 + i, crop=i, frame_s=i * 4.0 + 1.0) for i in range(n)]


async def page_round_trips(target: str, rounds: int, n_results: int, *, wait: bool = False) -> list[float]:
    if wait:  # both processes start together, their imports done
        print("ready", flush=True)
        sys.stdin.readline()
    db = await Storage.open(Path(target) if "://" not in target else target)
    stored = results(n_results)
    times = []
    try:
        for i in range(rounds):
            started = time.perf_counter()
            page = await db.save_results(chat_id=i % 50, user_id=i % 50, reply_to=i, thread_id=None, movie="Heat",
                                         page_size=5, results=stored, notes=[], slug="heat", build_id="b",
                                         query=b"\0" * 4096)
            loaded = await db.results(page.id, chat_id=i % 50)
            times.append((time.perf_counter() - started) * 1000)
            assert loaded is not None and len(loaded.results) == n_results
    finally:
        await db.close()
    return times


async def single(target: str, rounds: int, n_results: int) -> dict[str, list[float]]:
    out = {"page": await page_round_trips(target, rounds, n_results)}
    db = await Storage.open(Path(target) if "://" not in target else target)
    try:
        reads, writes = [], []
        for i in range(rounds):
            started = time.perf_counter()
            await db.chat(i % 50)
            reads.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            await db.log_query(QueryLogEntry(i % 50, "private", i % 50, "heat", 1, 5, "ok", 800.0, 300.0))
            writes.append((time.perf_counter() - started) * 1000)
        out["chat"], out["log"] = reads, writes
    finally:
        await db.close()
    return out


def pair(target: str, rounds: int, n_results: int) -> tuple[list[float], float]:
    """Two processes doing page round trips at once: every time, and the wall time of the pair."""
    procs = [subprocess.Popen([sys.executable, "-c", PAIR_WORKER, target, str(rounds), str(n_results), str(REPO)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO) for _ in range(2)]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    started = time.perf_counter()
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    outs = [proc.communicate()[0] for proc in procs]
    wall = time.perf_counter() - started
    if any(proc.returncode for proc in procs):
        raise SystemExit("a worker process failed")
    return [t for out in outs for t in json.loads(out)], wall


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--results", type=int, default=50, help="results per page (CASTFINDER_MAX_RESULTS)")
    args = ap.parse_args()
    print(f"machine: {machine()}")
    print(f"{args.rounds} rounds; a page of {args.results} results (+4 KB of query vectors)\n")
    work = Path(tempfile.mkdtemp(prefix="castfinder-bench-storage-"))
    targets = {"SQLite": str(work / "bench.sqlite3")}
    server = None
    reason = missing_reason()
    bindir = find_bindir()
    if reason is None and bindir is not None:
        server = PostgresServer(bindir, durable=True)
        server.init()
        targets["PostgreSQL"] = asyncio.run(server.create_database(f"bench_{uuid.uuid4().hex[:8]}"))
    else:
        print(f"PostgreSQL skipped: {reason}")
    try:
        rows = []
        for name, target in targets.items():
            figures = asyncio.run(single(target, args.rounds, args.results))
            both, wall = pair(target, args.rounds, args.results)
            rows.append((name, figures, both, wall))
        head = f"{'':34}" + "".join(f"{name:>22}" for name, *_ in rows)
        print(head)
        for label, key in (("page save + load, p50 / p95 ms", "page"), ("chat settings read, p50 / p95 ms", "chat"),
                           ("query log write, p50 / p95 ms", "log")):
            print(f"{label:34}" + "".join(f"{p(f[key], 50):>12.2f} / {p(f[key], 95):<7.2f}" for _, f, _, _ in rows))
        print(f"{'2 processes: page p50 / p95 ms':34}" + "".join(f"{p(b, 50):>12.2f} / {p(b, 95):<7.2f}"
                                                                   for *_, b, _ in rows))
        print(f"{'2 processes: page round trips/s':34}" + "".join(f"{len(b) / w:>22.0f}" for *_, b, w in rows))
    finally:
        if server is not None:
            server.close()


if __name__ == "__main__":
    main()
