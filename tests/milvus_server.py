"""A Milvus Lite server for tests: `python -m milvus_lite server` on 127.0.0.1, in its own process,
the catalogue server several castfinder processes share (CASTFINDER_MILVUS_URI)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from tests.net import free_port

START_S = 60.0  # only a server that cannot start takes this long


@contextmanager
def milvus_lite_server(data_dir: Path) -> Iterator[str]:
    """Yields the server's URI once it accepts connections; stops it on the way out.
    `--max-workers 1`: Milvus Lite's engine takes one writer per collection at a time."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(data_dir),
                             "--host", "127.0.0.1", "--port", str(port), "--max-workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + START_S
        while True:
            if proc.poll() is not None:
                said = proc.stderr.read()[-2000:] if proc.stderr else ""
                raise RuntimeError(f"the Milvus Lite server exited: {said}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the Milvus Lite server did not start listening") from None
                time.sleep(0.1)  # polling a port that is not open yet, not waiting for an event
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
