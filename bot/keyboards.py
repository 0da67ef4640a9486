"""Inline keyboards and their callback data. Callback data carries ids only (Telegram caps it at
64 bytes and users can forge it): results and screenshots stay server-side.

Forged data is parsed strictly: ids only in the alphabet the bot writes them in, numbers only as
ASCII digits within bounds. `str.isdigit` and `int()` accept "²", Arabic-Indic digits, "+1",
" 1" and "1_0", and pydantic's int accepts "-1" and 40-digit numbers; none of those is data the
bot wrote. Data that does not parse matches no handler, and the last callback handler answers it
as an expired button.
"""

from __future__ import annotations

import re
from typing import Sequence

from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup
from aiogram.utils.keyboard import InlineKeyboardBuilder
from pydantic import field_validator

from core import MovieInfo

from . import texts
from .services.engine_gateway import movie_key
from .settings import MAX_RESULTS_CAP

MAX_PICK_BUTTONS = 10
_STORED_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")  # storage.new_id(): URL-safe base64
_MOVIE_KEY = re.compile(r"[0-9a-f]{10}")  # engine_gateway.movie_key


def ascii_number(value: object, low: int, high: int) -> int:
    """`value` as an int in [low, high]: an int from the bot's own code, or a string of ASCII
    digits (at most as many as `high` has) from callback data. Raises ValueError otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif (isinstance(value, str) and 0 < len(value) <= len(str(high)) and value.isascii()
          and value.isdigit()):
        number = int(value)
    else:
        raise ValueError(f"not a number from {low} to {high}")
    if not low <= number <= high:
        raise ValueError(f"not a number from {low} to {high}")
    return number


def _matching(pattern: re.Pattern[str], value: object, what: str) -> str:
    if not isinstance(value, str) or pattern.fullmatch(value) is None:
        raise ValueError(f"not a {what}")
    return value


class MovieChoice(CallbackData, prefix="mv"):
    key: str  # movie_key(slug)

    @field_validator("key", mode="before")
    @classmethod
    def _key(cls, value: object) -> str:
        return _matching(_MOVIE_KEY, value, "movie key")


class PersonChoice(CallbackData, prefix="pk"):
    pick: str  # PendingPick.id
    who: str  # "1".."MAX_PICK_BUTTONS" or "all"

    @field_validator("pick", mode="before")
    @classmethod
    def _pick(cls, value: object) -> str:
        return _matching(_STORED_ID, value, "pick id")

    @field_validator("who", mode="before")
    @classmethod
    def _who(cls, value: object) -> str:
        return "all" if value == "all" else str(ascii_number(value, 1, MAX_PICK_BUTTONS))


class MoreResults(CallbackData, prefix="mr"):
    page: str  # ResultPage.id
    offset: int  # index of the first result to show

    @field_validator("page", mode="before")
    @classmethod
    def _page(cls, value: object) -> str:
        return _matching(_STORED_ID, value, "page id")

    @field_validator("offset", mode="before")
    @classmethod
    def _offset(cls, value: object) -> int:
        return ascii_number(value, 0, MAX_RESULTS_CAP)


class ClipRequest(CallbackData, prefix="cl"):
    """▶ under a results list: the clip of one result. The page id and the result's rank only,
    never a path or a shot: the handler looks the result up in the page, with the chat."""

    page: str  # ResultPage.id
    rank: int  # StoredResult.rank, 1-based

    @field_validator("page", mode="before")
    @classmethod
    def _page(cls, value: object) -> str:
        return _matching(_STORED_ID, value, "page id")

    @field_validator("rank", mode="before")
    @classmethod
    def _rank(cls, value: object) -> int:
        return ascii_number(value, 1, MAX_RESULTS_CAP)


CLIP_BUTTONS_PER_ROW = 5


def movies_keyboard(movies: Sequence[MovieInfo]) -> InlineKeyboardMarkup:
    builder = InlineKeyboardBuilder()
    for m in movies:
        builder.button(text=texts.movie_button(m.name), callback_data=MovieChoice(key=movie_key(m.slug)))
    builder.adjust(1)
    return builder.as_markup()


def people_keyboard(pick_id: str, count: int) -> InlineKeyboardMarkup:
    builder = InlineKeyboardBuilder()
    shown = min(count, MAX_PICK_BUTTONS)
    for i in range(1, shown + 1):
        builder.button(text=str(i), callback_data=PersonChoice(pick=pick_id, who=str(i)))
    builder.button(text=texts.pick_all_button(), callback_data=PersonChoice(pick=pick_id, who="all"))
    # Up to five numbers a row, "All" alone on the last row.
    rows = [5] * (shown // 5) + ([shown % 5] if shown % 5 else []) + [1]
    builder.adjust(*rows)
    return builder.as_markup()


def more_keyboard(page_id: str, offset: int, remaining: int) -> InlineKeyboardMarkup:
    builder = InlineKeyboardBuilder()
    builder.button(text=texts.more_button(remaining), callback_data=MoreResults(page=page_id, offset=offset))
    return builder.as_markup()


def results_keyboard(page_id: str, ranks: Sequence[int], offset: int, remaining: int) -> InlineKeyboardMarkup | None:
    """Under a results list: rows of "▶ n" (the clip of result n, five a row), then "More" while
    results remain; None when there is nothing to press."""
    rows = [[InlineKeyboardButton(text=texts.clip_button(rank),
                                  callback_data=ClipRequest(page=page_id, rank=rank).pack())
             for rank in ranks[start : start + CLIP_BUTTONS_PER_ROW]]
            for start in range(0, len(ranks), CLIP_BUTTONS_PER_ROW)]
    if remaining > 0:
        rows += more_keyboard(page_id, offset, remaining).inline_keyboard
    return InlineKeyboardMarkup(inline_keyboard=rows) if rows else None


def without_more(markup: InlineKeyboardMarkup | None) -> InlineKeyboardMarkup | None:
    """`markup` less its "More" button (used once, it goes; the other buttons stay)."""
    more = MoreResults.__prefix__ + MoreResults.__separator__
    rows = [[b for b in row if not (b.callback_data or "").startswith(more)]
            for row in (markup.inline_keyboard if markup is not None else [])]
    rows = [row for row in rows if row]
    return InlineKeyboardMarkup(inline_keyboard=rows) if rows else None
