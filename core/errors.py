"""Errors the engine raises on purpose. Each carries a message written for the person using it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .types import DamagedMovie


class CastfinderError(Exception):
    """Base class: the message is safe and meant to be shown to users as is."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled as message and attributes, not as `cls(*args)`: most subclasses build their
        # message from other arguments, and these errors cross processes (Ray engine workers).
        return _rebuild, (type(self), self.args, self.__dict__)


def _rebuild(cls: type[CastfinderError], args: tuple[Any, ...], state: dict[str, Any]) -> CastfinderError:
    exc = cls.__new__(cls)
    exc.args = args
    exc.__dict__.update(state)
    return exc


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


class DamagedIndexError(IndexCorruptError):
    """An indexed movie whose manifest or files fail their checks; `movie` says which, why, and
    the command that rebuilds it."""

    def __init__(self, movie: "DamagedMovie") -> None:
        self.movie = movie
        super().__init__(movie.message)


class ModelMismatchError(ModelNotFoundError):
    """A model file that loads but is not the kind of model its setting asks for (a face model
    given as the re-id model, a re-id model as the detector …). A ModelNotFoundError too, so that
    whoever handles a model that cannot be used handles this one."""

    def __init__(self, what: str, name: str, setting: str, reason: str, expected: str) -> None:
        self.setting = setting
        CastfinderError.__init__(
            self,
            f"{setting} names {name!r}, which is not a {what}: {reason}. Set {setting} to {expected} "
            f"(see .env.example and `castfinder models`).",
        )


class SettingsError(CastfinderError):
    """A setting out of its range or of the wrong kind, from a flag, the environment or `.env`;
    or a `.env` that cannot be read. The message names what the user typed and what is allowed."""

    def __init__(self, message: str, *, from_flags: bool = False) -> None:
        self.from_flags = from_flags  # a command-line flag was wrong (a usage error), not the environment
        super().__init__(message)


class StorageError(CastfinderError):
    """The disk failed a write while indexing (full, read-only, not permitted, a file-size limit,
    an I/O error); the message names the cause, the fix and what became of the build."""


class CastUnavailableError(CastfinderError):
    """The index holds no cast: built before casts existed, or without a face channel."""


# -- preview clips (core/clips.py) -------------------------------------------------------------
class ClipError(CastfinderError):
    """A preview clip that cannot be cut; the message says why and what still works."""


class NoVideoError(ClipError):
    """The movie was indexed from a frames folder: there is no video to cut from."""


class SourceMovedError(ClipError):
    """The video the movie was indexed from is not where it was, or not the same file any more."""


class ShotNotFoundError(ClipError):
    """The movie has no shot of that number."""
