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
from typing import Annotated, Sequence

from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardMarkup
from aiogram.utils.keyboard import InlineKeyboardBuilder
from pydantic import BeforeValidator

from core import MovieInfo

from . import texts
from .services.engine_gateway import movie_key
from .services.storage import ResultPage, StoredResult
from .settings import MAX_RESULTS_CAP

MAX_PICK_BUTTONS = 10
MAX_FEEDBACK_TAPS = 999  # taps on one answer; past it the buttons stop (bot/handlers/feedback.py)
_FEEDBACK_ROW = 5  # "✓n" buttons a row, then as many "✗n"
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


def _stored_id(what: str) -> BeforeValidator:
    return BeforeValidator(lambda value: _matching(_STORED_ID, value, what))


def _number(low: int, high: int) -> BeforeValidator:
    return BeforeValidator(lambda value: ascii_number(value, low, high))


def _one_of(choices: tuple[str, ...], what: str) -> BeforeValidator:
    def check(value: object) -> str:
        if value not in choices:
            raise ValueError(f"not {what}")
        return str(value)

    return BeforeValidator(check)


# The fields of the callback data, each parsed as strictly as the module's docstring says.
PageId = Annotated[str, _stored_id("page id")]  # ResultPage.id
PickId = Annotated[str, _stored_id("pick id")]  # PendingPick.id
Rank = Annotated[int, _number(1, MAX_RESULTS_CAP)]  # StoredResult.rank, 1-based


class MovieChoice(CallbackData, prefix="mv"):
    key: Annotated[str, BeforeValidator(lambda value: _matching(_MOVIE_KEY, value, "movie key"))]  # movie_key(slug)


class PersonChoice(CallbackData, prefix="pk"):
    pick: PickId
    # "1".."MAX_PICK_BUTTONS" or "all"
    who: Annotated[str, BeforeValidator(lambda value: "all" if value == "all"
                                        else str(ascii_number(value, 1, MAX_PICK_BUTTONS)))]


class MoreResults(CallbackData, prefix="mr"):
    page: PageId
    offset: Annotated[int, _number(0, MAX_RESULTS_CAP)]  # index of the first result to show


# The cast's buttons: at most CASTFINDER_CAST_SHEET_SIZE's upper bound (core/settings.py).
MAX_CAST_BUTTONS = 24


class CastChoice(CallbackData, prefix="ca"):
    sheet: Annotated[str, _stored_id("cast sheet id")]  # the stored cast sheet (Storage.save_pick, handlers/cast.py)
    # "1".."MAX_CAST_BUTTONS": the member's number on the sheet
    number: Annotated[str, BeforeValidator(lambda value: str(ascii_number(value, 1, MAX_CAST_BUTTONS)))]


def cast_keyboard(sheet_id: str, labels: Sequence[str]) -> InlineKeyboardMarkup:
    """One button per member on the sheet, in its order; three a row, as the sheet's tiles."""
    builder = InlineKeyboardBuilder()
    for number, label in enumerate(labels[:MAX_CAST_BUTTONS], start=1):
        builder.button(text=label, callback_data=CastChoice(sheet=sheet_id, number=str(number)))
    builder.adjust(3 if len(labels) <= 9 else 4)
    return builder.as_markup()


class FeedbackButton(CallbackData, prefix="fb"):
    """ "✓ that's them" (verdict "y") or "✗ not them" ("n") on result `rank` of a page, as the
    page stood at `version` (its number of taps): a tap on a list that changed since is refused."""

    page: PageId
    version: Annotated[int, _number(0, MAX_FEEDBACK_TAPS)]
    rank: Rank
    verdict: Annotated[str, _one_of(("y", "n"), "a verdict")]


class ClipRequest(CallbackData, prefix="cl"):
    """▶ under a results list: the clip of one result. The page id and the result's rank only,
    never a path or a shot: the handler looks the result up in the page, with the chat."""

    page: PageId
    rank: Rank


class IdentifyAction(CallbackData, prefix="id"):
    """A button under "Looks like <movie>": search this screenshot's character there ("s"), or
    only set the movie for the chat ("m"). `pick` is the PendingPick that keeps the screenshot."""

    pick: PickId
    act: Annotated[str, _one_of(("s", "m"), "an identify action")]


def identify_keyboard(pick_id: str, movie: str) -> InlineKeyboardMarkup:
    builder = InlineKeyboardBuilder()
    builder.button(text=texts.identify_search_button(movie), callback_data=IdentifyAction(pick=pick_id, act="s"))
    builder.button(text=texts.identify_set_button(movie), callback_data=IdentifyAction(pick=pick_id, act="m"))
    builder.adjust(1)
    return builder.as_markup()


def _per_row(count: int, width: int) -> list[int]:
    """Row lengths for `count` buttons, `width` a row, the rest on a last shorter row."""
    return [width] * (count // width) + ([count % width] if count % width else [])


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
    builder.adjust(*_per_row(shown, 5), 1)  # up to five numbers a row, "All" alone on the last row
    return builder.as_markup()




CLIP_BUTTONS_PER_ROW = 5


def results_keyboard(page: ResultPage, shown: Sequence[StoredResult], next_offset: int) -> InlineKeyboardMarkup | None:
    """Under a list of results: "▶ n" (the clip of result n, five a row), "✓n" and "✗n" for each
    result shown (when the page keeps its query for feedback), then "More" while results remain.
    None when there is no button."""
    builder = InlineKeyboardBuilder()
    rows: list[int] = []
    for r in shown:
        builder.button(text=texts.clip_button(r.rank), callback_data=ClipRequest(page=page.id, rank=r.rank))
    rows += _per_row(len(shown), CLIP_BUTTONS_PER_ROW)
    if page.build_id and shown and page.version < MAX_FEEDBACK_TAPS:
        for verdict, label in (("y", texts.feedback_yes_button), ("n", texts.feedback_no_button)):
            for r in shown:
                builder.button(text=label(r.rank), callback_data=FeedbackButton(page=page.id, version=page.version,
                                                                              rank=r.rank, verdict=verdict))
            rows += _per_row(len(shown), _FEEDBACK_ROW)
    remaining = len(page.results) - next_offset
    if remaining > 0:
        builder.button(text=texts.more_button(remaining), callback_data=MoreResults(page=page.id, offset=next_offset))
        rows.append(1)
    if not rows:
        return None
    builder.adjust(*rows)
    return builder.as_markup()
