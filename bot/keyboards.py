"""Inline keyboards and their callback data. Callback data carries ids only (Telegram caps it at
64 bytes and users can forge it): results and screenshots stay server-side."""

from __future__ import annotations

from typing import Sequence

from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardMarkup
from aiogram.utils.keyboard import InlineKeyboardBuilder

from core import MovieInfo

from . import texts
from .services.engine_gateway import movie_key

MAX_PICK_BUTTONS = 10


class MovieChoice(CallbackData, prefix="mv"):
    key: str  # movie_key(slug)


class PersonChoice(CallbackData, prefix="pk"):
    pick: str  # PendingPick.id
    who: str  # "1".."n" or "all"


class MoreResults(CallbackData, prefix="mr"):
    page: str  # ResultPage.id
    offset: int  # index of the first result to show


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
