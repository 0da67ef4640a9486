"""Why there is no answer, and what the user is told: the one translation from exceptions to user
texts, for the query service and for the middleware that guards every update alike."""

from __future__ import annotations

from dataclasses import dataclass

from aiogram.exceptions import TelegramForbiddenError

from core import CastfinderError

from . import texts


class QueryRefused(Exception):
    """`html` is the message for the user (already escaped); `outcome` goes to the query log."""

    def __init__(self, html: str, outcome: str) -> None:
        super().__init__(html)
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
        return Explanation("bad_input", texts.esc(exc))
    return Explanation("error", texts.internal_error(), unexpected=True)
