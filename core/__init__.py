"""castfinder's retrieval engine. Never imports the bot or aiogram.

The rooms, by stage: `models/` (detector, face and body encoders, the model registry),
`indexing/` (sources, cuts, sampling, tracks, the indexer), `store/` (the on-disk index: manifest,
writer, reader, recovery), `search/` (query images, calibration, fusion, ranking) and
`evaluation/` (ground truth, metrics, reports). `Engine` (engine.py) is the front door.

Names are imported on first use, so that `from core import format_ts` does not load FAISS,
OpenCV or torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Engine": ".engine",
    "AmbiguousMovieError": ".errors", "BadInputError": ".errors", "CastfinderError": ".errors",
    "CastUnavailableError": ".errors", "CastMember": ".types",
    "DamagedIndexError": ".errors", "IndexCorruptError": ".errors", "ModelMismatchError": ".errors",
    "ModelNotFoundError": ".errors", "MovieNotFoundError": ".errors", "SettingsError": ".errors",
    "QueryImage": ".search.images",
    "format_ts": ".naming", "slugify": ".naming",
    "Settings": ".settings",
    "DamagedMovie": ".types", "IndexReport": ".types", "MovieInfo": ".types", "Person": ".types", "Progress": ".types",
    "RankedShot": ".types", "SearchResponse": ".types", "Shot": ".types", "ShotResult": ".types",
    "Timeline": ".types", "TimelineShot": ".types", "Feedback": ".types", "Mark": ".types",
    "IdentifyResponse": ".types", "IdentifiedShot": ".types", "MovieCandidate": ".types",
}

__all__ = [
    "AmbiguousMovieError", "BadInputError", "CastMember", "CastUnavailableError", "CastfinderError",
    "DamagedIndexError", "DamagedMovie", "Engine", "Feedback", "IdentifiedShot", "IdentifyResponse",
    "IndexCorruptError", "IndexReport", "Mark", "ModelMismatchError", "ModelNotFoundError", "MovieCandidate",
    "MovieInfo",
    "MovieNotFoundError", "Person", "Progress", "QueryImage", "RankedShot", "SearchResponse", "Settings",
    "SettingsError", "Shot", "ShotResult", "Timeline", "TimelineShot", "format_ts", "slugify",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:
    from .engine import Engine
    from .errors import (
        AmbiguousMovieError,
        BadInputError,
        CastfinderError,
        CastUnavailableError,
        DamagedIndexError,
        IndexCorruptError,
        ModelMismatchError,
        ModelNotFoundError,
        MovieNotFoundError,
        SettingsError,
    )
    from .naming import format_ts, slugify
    from .search.images import QueryImage
    from .settings import Settings
    from .types import (
        CastMember,
        DamagedMovie,
        Feedback,
        IdentifiedShot,
        IdentifyResponse,
        IndexReport,
        Mark,
        MovieCandidate,
        MovieInfo,
        Person,
        Progress,
        RankedShot,
        SearchResponse,
        Shot,
        ShotResult,
        Timeline,
        TimelineShot,
    )
