"""Errors the engine raises on purpose. Each carries a message written for the person using it."""

from __future__ import annotations


class CastfinderError(Exception):
    """Base class: the message is safe and meant to be shown to users as is."""


class BadInputError(CastfinderError):
    """A video, frames folder or image that cannot be used."""


class MovieNotFoundError(CastfinderError):
    def __init__(self, query: str, suggestions: list[str]) -> None:
        self.query = query
        self.suggestions = suggestions
        hint = f" Did you mean: {', '.join(suggestions)}?" if suggestions else ""
        super().__init__(f"No indexed movie matches {query!r}.{hint}")


class AmbiguousMovieError(CastfinderError):
    def __init__(self, query: str, candidates: list[str]) -> None:
        self.query = query
        self.candidates = candidates
        super().__init__(
            f"{query!r} matches several movies: {', '.join(candidates)}. Be more specific."
        )


class ModelNotFoundError(CastfinderError):
    def __init__(self, what: str, name: str, setting: str, reason: str = "") -> None:
        self.setting = setting
        detail = f" ({reason})" if reason else ""
        super().__init__(
            f"Could not load the {what} {name!r}{detail}. Set {setting} to a model name that can be "
            f"downloaded or to a local path (see .env.example)."
        )


class IndexCorruptError(CastfinderError):
    """An index folder exists but cannot be loaded."""


class StorageError(CastfinderError):
    """The disk failed a write while indexing (full, read-only, not permitted, a file-size limit,
    an I/O error); the message names the cause, the fix and what became of the build."""
