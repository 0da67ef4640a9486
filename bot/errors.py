"""Refusals: queries the bot answers with an explanation instead of results."""

from __future__ import annotations


class QueryRefused(Exception):
    """`html` is the message for the user (already escaped); `outcome` goes to the query log."""

    def __init__(self, html: str, outcome: str) -> None:
        super().__init__(html)
        self.html = html
        self.outcome = outcome
