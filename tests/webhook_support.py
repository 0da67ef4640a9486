"""Tools of the multi-process bot tests and benchmark: a private redis-server, a round-robin HTTP
proxy in front of several webhook processes, and `castfinder bot --webhook` as a real process.

The benchmarks import this module with the repository root on sys.path.
"""

from __future__ import annotations

import asyncio
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, web

from tests.net import free_port

REPO = Path(__file__).resolve().parents[1]
SECRET = "test-webhook-secret"


class RedisServer:
    """`redis-server` on 127.0.0.1 and a free port, nothing saved to disk; ready once it says so."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not installed (Debian: apt-get install redis-server)")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(workdir)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=0)
        self._wait_ready(timeout=30)

    def _wait_ready(self, timeout: float) -> None:
        # Unbuffered reads of the pipe: a buffered reader could hold the line while select() waits.
        deadline, seen = time.monotonic() + timeout, b""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(fd, 65536) if ready else b""
            seen += chunk
            if b"Ready to accept connections" in seen:
                return
            if not chunk and self.proc.poll() is not None:
                break
        self.stop()
        raise RuntimeError("redis-server did not start:\n" + seen[-3000:].decode(errors="replace"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@dataclass
class RoundRobinProxy:
    """One webhook endpoint in front of several bot processes: each request goes to the next
    backend in turn. `routed` holds the backend index of every request, in order."""

    backends: list[str] = field(default_factory=list)
    routed: list[int] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None
    _client: ClientSession | None = None

    @property
    def next_backend(self) -> int:
        return len(self.routed) % len(self.backends)

    async def __aenter__(self) -> RoundRobinProxy:
        app = web.Application()
        app.router.add_post("/hook", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/hook"
        self._client = ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            await self._client.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _forward(self, request: web.Request) -> web.Response:
        index = len(self.routed) % len(self.backends)
        self.routed.append(index)
        headers = {k: v for k, v in request.headers.items() if k.lower().startswith("x-telegram")}
        assert self._client is not None
        async with self._client.post(self.backends[index], data=await request.read(),
                                     headers={**headers, "Content-Type": request.content_type}) as upstream:
            return web.Response(status=upstream.status, body=await upstream.read())

    async def post(self, update: Mapping[str, Any], *, secret: str = SECRET) -> int:
        """Deliver `update` as Telegram would; returns the backend it went to."""
        assert self._client is not None
        async with self._client.post(self.url, json=update,
                                     headers={"X-Telegram-Bot-Api-Secret-Token": secret}) as response:
            assert response.status == 200, f"{response.status}: {await response.text()}"
        return self.routed[-1]


@dataclass
class BotProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then the exit status once running queries have finished."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def start_bot(workdir: Path, name: str, webhook_url: str, settings: Mapping[str, str]) -> BotProcess:
    """`castfinder bot --webhook URL --listen 127.0.0.1:<free port>` as its own process, offline,
    with `settings` (full names) in its environment; stdout and stderr go to `<workdir>/<name>.log`."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASTFINDER_") and k != "BOT_TOKEN"}
    env.update(HF_HUB_OFFLINE="1", YOLO_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(REPO), **settings)
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "castfinder", "bot", "--webhook", webhook_url,
                                 "--listen", f"127.0.0.1:{port}"],
                                cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT)
    return BotProcess(proc, port, log)


async def wait_exit(bot: BotProcess, timeout: float = 60) -> int:
    return await asyncio.to_thread(bot.stop, timeout)
