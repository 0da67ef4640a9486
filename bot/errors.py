"""Why there is no answer, and what the user is told: the one translation from exceptions to user
texts, for the query service and for the middleware that guards every update alike."""

from __future__ import annotations

from dataclasses import dataclass

from aiogram.exceptions import TelegramForbiddenError

from core import CastfinderError

from . import texts
from .services.storage_backend import DatabaseUnavailable


class QueryRefused(Exception):
    """`html` is the message for the user (already escaped), or None for a deliberate silence
    (the user was already told, e.g. a second "you already have a query running" in a flood);
    `outcome` goes to the query log."""

    def __init__(self, html: str | None, outcome: str) -> None:
        super().__init__(html or outcome)
        self.html = html
        self.outcome = outcome


@dataclass(frozen=True)
class Explanation:
    """What an exception means for the user and for the query log."""

    outcome: str  # the query log's outcome
    html: str | None  # the message for the user; None when nobody can be told
    unexpected: bool = False  # a bug or an outage rather than the user's input: log its traceback


def explain(exc: Exception) -> Explanation:
    if isinstance(exc, QueryRefused):
        return Explanation(exc.outcome, exc.html)
    if isinstance(exc, TelegramForbiddenError):
        # The user blocked the bot or removed it from the group: every message would be refused.
        return Explanation("blocked", None)
    if isinstance(exc, CastfinderError):
        # The engine raises these on purpose, with a message written for users.
        # Shortened like every echoed value: the message may quote what the user sent.
        return Explanation("bad_input", texts.quote(exc, texts.REASON_CHARS))
    if isinstance(exc, DatabaseUnavailable):
        # An outage, already logged once by the backend: the usual apology, no traceback per update.
        return Explanation("error", texts.internal_error())
    return Explanation("error", texts.internal_error(), unexpected=True)
