"""Small typed objects passed across the engine's boundary (to the CLI and the bot)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

BBox = tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels of the source frame


@dataclass(frozen=True)
class Shot:
    id: int  # 1-based, unique within a movie, in time order
    number: int  # the shot number users see: the `shot_<k>` of a frames folder, else == id
    scene: int | None  # from frames-folder names; None for videos
    start_frame: int
    end_frame: int  # inclusive
    start_s: float
    end_s: float  # exclusive: the time the next shot starts

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class Person:
    """A person found in a query image."""

    index: int  # 1-based, in the order users see them (left to right)
    bbox: BBox
    score: float
    area_fraction: float


@dataclass(frozen=True)
class RankedShot:
    """One shot in a ranking, best first: what one channel's aggregation (`search.ranking`) and
    the fusion of several channels (`search.fusion`) both return, before it becomes a
    `ShotResult` for users."""

    shot_id: int  # Shot.id
    score: float  # what the ranking is ordered by: the aggregation's score, or the fused confidence
    similarity: float  # best raw cosine similarity behind the shot (0 where only propagation spoke)
    best_crop: int  # the crop that shows the person in the shot (its frame time and box)
    confidence: float  # calibrated probability that this is the queried person


@dataclass(frozen=True)
class ShotResult:
    rank: int
    shot: int  # Shot.number
    shot_id: int  # Shot.id
    scene: int | None
    start_s: float
    end_s: float
    score: float
    # Absolute path of the shot's JPEG thumbnail; None when that file is missing or not a whole
    # JPEG (the result still counts: a damaged picture costs the picture, not the match).
    thumbnail: str | None
    frame_s: float  # time of the best-matching person's frame
    bbox: BBox  # box of the best-matching person in that frame
    similarity: float  # best raw cosine similarity behind the result, whatever the aggregation
    confidence: float  # calibrated probability that this is the queried person (core.search.calibration)
    low_confidence: bool  # confidence under the low-score setting: show it as a weak match

    def to_json(self) -> dict:
        data = asdict(self)
        data["bbox"] = [round(v, 1) for v in self.bbox]
        data["score"] = round(self.score, 4)
        data["start_s"] = round(self.start_s, 3)
        data["end_s"] = round(self.end_s, 3)
        data["frame_s"] = round(self.frame_s, 3)
        data["confidence"] = round(self.confidence, 4)
        return data


@dataclass(frozen=True)
class SearchResponse:
    movie: str  # the movie's display name
    slug: str
    results: list[ShotResult]
    query_crops: int  # how many query crops were searched
    whole_image_queries: int  # query images in which no person was found (searched whole)
    aggregation: str
    elapsed_s: float
    # Seconds per stage, as ultralytics' `Results.speed`: people (decoding the query images and
    # finding their people), embed, search (FAISS), rank (aggregation or fusion, and results).
    speed: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        """The stable machine-readable form printed by `castfinder search --json`."""
        keys = ("rank", "shot", "scene", "start_s", "end_s", "score", "thumbnail", "frame_s", "bbox", "confidence")
        return {
            "movie": self.movie,
            "results": [{k: r.to_json()[k] for k in keys} for r in self.results],
        }


@dataclass(frozen=True)
class MovieInfo:
    slug: str
    name: str
    path: Path
    duration_s: float
    shots: int
    frames: int  # sampled frames
    vectors: int
    embedder: str
    embedder_model: str
    dim: int
    source: str
    built_at: str
    build_id: str
    channels: tuple[str, ...] = ()


@dataclass(frozen=True)
class DamagedMovie:
    """An index folder with a manifest that cannot be searched: its manifest is invalid, or its
    files are not those the manifest describes. Listed apart from the movies, never searched."""

    slug: str  # the folder's name
    name: str  # the movie's name when the manifest still says it, else the folder's name
    path: Path
    reason: str  # what is wrong, in words
    source: str = ""  # what it was indexed from, when the manifest still says it

    @property
    def reindex(self) -> str:
        """The command that rebuilds it in place."""
        import shlex

        source = shlex.quote(self.source) if self.source else "VIDEO"
        return f"castfinder index {source} --movie {shlex.quote(self.name)}"

    @property
    def message(self) -> str:
        """One line for users: which movie, what is wrong, what to do."""
        return f"The index of {self.name!r} ({self.path}) is damaged: {self.reason}. Re-index it: {self.reindex}"


@dataclass
class IndexReport:
    movie: MovieInfo
    shots: int
    frames_sampled: int
    persons_detected: int
    crops_kept: int
    duplicates_dropped: int
    shots_without_people: int
    seconds: dict[str, float] = field(default_factory=dict)  # per stage wall time, over every run of the build
    warnings: list[str] = field(default_factory=list)
    frames_still: int = 0  # sampled frames skipped before detection: the same picture as the last one
    resumed_at_s: float | None = None  # film time an interrupted build was resumed at, if it was


@dataclass(frozen=True)
class Progress:
    stage: str
    done: float  # counted units, or seconds of film when unit is "s"
    total: float | None  # None when unknown
    unit: str = "it"
    message: str = ""


ProgressCallback = Callable[[Progress], None]


def no_progress(_: Progress) -> None:
    return None


# --- "Which movie is this?" (Engine.identify) ------------------------------------------------------

@dataclass(frozen=True)
class IdentifiedShot:
    """A shot that a screenshot matches."""

    shot: int  # Shot.number
    shot_id: int
    scene: int | None
    start_s: float
    end_s: float
    frame_s: float  # the time of the best-matching frame or person inside the shot
    confidence: float  # calibrated, 0-1
    evidence: str  # "frame", "people" or "frame+people": what found it
    thumbnail: str | None


@dataclass(frozen=True)
class MovieCandidate:
    name: str
    slug: str
    confidence: float


@dataclass(frozen=True)
class IdentifyResponse:
    """The answer to "which movie is this?". `movie` is None when the screenshot is not in the
    catalogue; `candidates` then lists the closest movies, only when they are plausible."""

    movie: str | None
    slug: str | None
    confidence: float
    shots: list[IdentifiedShot]
    candidates: list[MovieCandidate]
    movies_searched: int
    people: int  # people found in the screenshot
    without_descriptors: list[str]  # movies found by their people only: re-index them to match frames too
    elapsed_s: float
    speed: dict[str, float] = field(default_factory=dict)

    @property
    def found(self) -> bool:
        return self.movie is not None

    def to_json(self) -> dict:
        return {
            "found": self.found, "movie": self.movie, "slug": self.slug, "confidence": round(self.confidence, 4),
            "shots": [{"shot": s.shot, "scene": s.scene, "start_s": round(s.start_s, 3), "end_s": round(s.end_s, 3),
                       "frame_s": round(s.frame_s, 3), "confidence": round(s.confidence, 4),
                       "evidence": s.evidence, "thumbnail": s.thumbnail} for s in self.shots],
            "candidates": [{"movie": c.name, "slug": c.slug, "confidence": round(c.confidence, 4)}
                           for c in self.candidates],
            "movies_searched": self.movies_searched, "people": self.people,
            "without_descriptors": list(self.without_descriptors),
        }
