"""Routers, one per feature. Order matters: screenshots are claimed before commands (a photo
captioned `/movie Heat` is a query, not a /movie command), and the private-chat fallback is last."""

from __future__ import annotations

from aiogram import Router

from . import admin, callbacks, cast, clips, commands, feedback, identify, movies, queries


def create_routers() -> list[Router]:
    """Fresh routers (a router belongs to one dispatcher; tests build many)."""
    return [m.create_router() for m in (queries, movies, admin, identify, cast, feedback, clips, callbacks, commands)]
