"""castfinder's retrieval engine. Never imports the bot or aiogram."""

from .engine import Engine
from .errors import (
    AmbiguousMovieError,
    BadInputError,
    CastfinderError,
    IndexCorruptError,
    ModelNotFoundError,
    MovieNotFoundError,
)
from .images import QueryImage
from .naming import format_ts, slugify
from .settings import Settings
from .types import IndexReport, MovieInfo, Person, Progress, SearchResponse, Shot, ShotResult

__all__ = [
    "AmbiguousMovieError", "BadInputError", "CastfinderError", "Engine", "IndexCorruptError",
    "IndexReport", "ModelNotFoundError", "MovieInfo", "MovieNotFoundError", "Person", "Progress",
    "QueryImage", "SearchResponse", "Settings", "Shot", "ShotResult", "format_ts", "slugify",
]
