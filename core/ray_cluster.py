"""What indexing on Ray (core/indexing/ray_runner.py) and the engine workers (core/ray_engines.py)
both need before they join a cluster: Ray itself, imported only when asked for (the optional extra
castfinder[scale]), and a quick look at whether the head's address answers at all: Ray retries an
unreachable head for minutes before giving up. Each caller words its own message (its own flag or
setting)."""

from __future__ import annotations

import os
import socket
from typing import Any
from urllib.parse import urlsplit

from .errors import CastfinderError

CONNECT_TIMEOUT_S = 5.0  # a head that does not accept a connection in this long is down


def import_ray(missing: CastfinderError) -> Any:
    """Ray, or `missing` raised when it is not installed."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report leaves the machine
    try:
        import ray
    except ImportError:
        raise missing from None
    return ray


def endpoint(address: str) -> tuple[str, int] | None:
    """(host, port) of "host:port", "ray://host:port" or "[v6]:port"; None for anything else
    ("auto", "local", a host alone, a port that is not a number)."""
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    return (host, port) if host and port else None


def unreachable(host: str, port: int) -> str | None:
    """Why nothing accepts a TCP connection at host:port, or None when something does."""
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            return None
    except OSError as exc:
        return str(exc.strerror or exc)
