"""What users are told when something goes wrong: one translation (`bot.errors.explain`) for the
query service and for the middleware around every other update."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiogram.exceptions import TelegramForbiddenError
from aiogram.methods import SendMessage

from bot import texts
from bot.errors import Explanation, QueryRefused, explain
from core import BadInputError, CastfinderError, IndexCorruptError, MovieInfo, MovieNotFoundError
from core.store import Listing
from tests.bot_support import USER_ID, CatalogEngine, bot_harness, jpeg, movie_info

INTERNAL = "Something went wrong on my side (it has been logged). Please try again."


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (QueryRefused(texts.queue_full(), "queue_full"),
         Explanation("queue_full", "I'm very busy right now and my queue is full. Please try again in a minute.")),
        (TelegramForbiddenError(SendMessage(chat_id=1, text="x"), "Forbidden: bot was blocked by the user"),
         Explanation("blocked", None)),
        (CastfinderError("Could not read <indexes>."), Explanation("bad_input", "Could not read &lt;indexes&gt;.")),
        (BadInputError("image: cannot identify <b>this</b> file"),
         Explanation("bad_input", "image: cannot identify &lt;b&gt;this&lt;/b&gt; file")),
        (MovieNotFoundError("Heat & Dust", ["Heat"]),
         Explanation("bad_input", "No indexed movie matches 'Heat &amp; Dust'. Did you mean: Heat?")),
        (IndexCorruptError("The index of Heat is damaged: re-index it."),
         Explanation("bad_input", "The index of Heat is damaged: re-index it.")),
        (RuntimeError("disk <full>"), Explanation("error", INTERNAL, unexpected=True)),
    ],
    ids=["refused", "blocked", "castfinder", "bad-input", "movie-not-found", "index-corrupt", "bug"],
)
def test_each_exception_has_its_user_text_and_log_outcome(exc: Exception, expected: Explanation) -> None:
    assert explain(exc) == expected


class FailingCatalogEngine(CatalogEngine):
    """Its movie list fails as an unreadable index folder (or a bug) would."""

    def __init__(self, movies: list[MovieInfo], tmp_path: Path, error: Exception) -> None:
        super().__init__(movies, tmp_path)
        self.error = error

    def listing(self) -> Listing:
        raise self.error


@pytest.mark.parametrize(
    ("error", "told", "outcome"),
    [
        (IndexCorruptError("The index folder <indexes> is unreadable."), "The index folder <indexes> is unreadable.",
         "bad_input"),
        (RuntimeError("a bug"), INTERNAL, "error"),
    ],
)
async def test_a_command_and_a_screenshot_that_fail_alike_are_explained_alike(
    tmp_path: Path, error: Exception, told: str, outcome: str
) -> None:
    engine = FailingCatalogEngine([movie_info("Heat", "heat")], tmp_path, error)
    async with bot_harness(engine, tmp_path) as h:
        await h.app.storage.set_movie(USER_ID, "heat", "Heat")
        await h.feed(h.text("/movies"))  # fails in the handler: the middleware explains
        await h.feed(h.photo(jpeg()))  # fails in the query service, looking up the chat's movie
        [command, query] = [c.result["text"] for c in h.srv.calls_of("sendMessage")]  # as rendered
        assert command == query == told
        [row] = await h.app.storage.recent_queries()
        assert row["outcome"] == outcome
