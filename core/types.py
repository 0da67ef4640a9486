"""Small typed objects passed across the engine's boundary (to the CLI and the bot)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

if TYPE_CHECKING:  # numpy only for the annotations: `from core import format_ts` stays light
    import numpy as np

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
    # The crop (index row) showing the matched person: what feedback on this result names
    # (`Mark`). -1 where unknown (results made by hand).
    crop: int = -1

    def to_json(self) -> dict:
        data = asdict(self)
        data["bbox"] = [round(v, 1) for v in self.bbox]
        data["score"] = round(self.score, 4)
        data["start_s"] = round(self.start_s, 3)
        data["end_s"] = round(self.end_s, 3)
        data["frame_s"] = round(self.frame_s, 3)
        data["confidence"] = round(self.confidence, 4)
        return data


QueryVectors = dict[str, "np.ndarray"]  # channel -> m×dim float32, L2-normalised


@dataclass(frozen=True)
class Mark:
    """One result a user judged: the shot, and the crop that showed the person in it
    (`ShotResult.crop`). Without the crop, the engine takes the shot's best match to the query."""

    shot_id: int  # Shot.id
    crop: int | None = None


@dataclass(frozen=True)
class Feedback:
    """What a user said about the results of a query, accumulated over their taps.

    - `positives` ("that's them"): the person's whole track in that shot (the crops of the same
      tracked person) joins the query as extra query vectors;
    - `negatives` ("not them"): the shot leaves the results, the crops of that person's track are
      dropped, and hits nearer that person than the query are pushed down (`Engine` docs).
    """

    positives: tuple[Mark, ...] = ()
    negatives: tuple[Mark, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.positives or self.negatives)


@dataclass(frozen=True)
class TimelineShot:
    """One matched shot placed on the film's timeline."""

    shot_id: int  # Shot.id
    start_s: float
    end_s: float
    confidence: float
    weak: bool  # under the low-score line: drawn apart, not counted as screen time


@dataclass(frozen=True)
class Timeline:
    """Where the searched character appears over the whole film (core.search.timeline draws it).

    Screen time is the sum of the confident matched shots' durations: an estimate, as good as the
    search's recall. Weak matches are placed on the strip but counted apart."""

    duration_s: float  # the film's length
    shots: tuple[TimelineShot, ...]  # in film order, one per shot
    capped: bool = False  # more confident shots matched than CASTFINDER_TIMELINE_MAX_SHOTS: "at least"

    @classmethod
    def of(cls, duration_s: float, shots: Iterable[TimelineShot], *, capped: bool = False) -> Timeline:
        """The timeline of `shots` (deduplicated by shot, the confident one kept), each clipped to
        the film."""
        by_id: dict[int, TimelineShot] = {}
        for s in shots:
            start, end = max(0.0, s.start_s), min(duration_s, s.end_s)
            if end <= start:
                continue
            s = TimelineShot(s.shot_id, start, end, s.confidence, s.weak)
            old = by_id.get(s.shot_id)
            if old is None or (old.weak and not s.weak):
                by_id[s.shot_id] = s
        return cls(duration_s, tuple(sorted(by_id.values(), key=lambda s: (s.start_s, s.shot_id))), capped)

    @classmethod
    def from_results(cls, duration_s: float, results: Iterable[ShotResult]) -> Timeline:
        """The timeline of a list of results, confident or weak as each result says."""
        return cls.of(duration_s, (TimelineShot(r.shot_id, r.start_s, r.end_s, r.confidence, r.low_confidence)
                                   for r in results))

    @property
    def confident(self) -> tuple[TimelineShot, ...]:
        return tuple(s for s in self.shots if not s.weak)

    @property
    def weak(self) -> tuple[TimelineShot, ...]:
        return tuple(s for s in self.shots if s.weak)

    @property
    def screen_time_s(self) -> float:
        return sum(s.end_s - s.start_s for s in self.confident)

    @property
    def weak_time_s(self) -> float:
        return sum(s.end_s - s.start_s for s in self.weak)

    @property
    def share(self) -> float:
        """Screen time as a fraction of the film (0–1)."""
        return self.screen_time_s / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def first_s(self) -> float | None:
        """The start of the first confident matched shot; None without one."""
        confident = self.confident
        return confident[0].start_s if confident else None

    @property
    def last_s(self) -> float | None:
        """The start of the last confident matched shot (where to seek to see it); None without one."""
        confident = self.confident
        return confident[-1].start_s if confident else None

    def to_json(self) -> dict:
        """The summary `search --json` adds as "timeline" (the picture itself is not in it)."""
        first, last = self.first_s, self.last_s
        return {
            "screen_time_s": round(self.screen_time_s, 3),
            "share": round(self.share, 5),
            "first_s": None if first is None else round(first, 3),
            "last_s": None if last is None else round(last, 3),
            "shots": len(self.confident),
            "weak_shots": len(self.weak),
            "weak_time_s": round(self.weak_time_s, 3),
            "duration_s": round(self.duration_s, 3),
            "capped": self.capped,
        }


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
    # Every confident match over the film (not only the `top` results) and the weak ones among the
    # results: `Engine.timeline_png` draws it. None from engines that do not compute it.
    timeline: Timeline | None = None
    # Per channel, the query's own vectors (one row per query crop that channel could embed):
    # what `Engine.refine` searches again with feedback, without the screenshots.
    query_vectors: QueryVectors = field(default_factory=dict, repr=False)

    def to_json(self) -> dict:
        """The stable machine-readable form printed by `castfinder search --json`."""
        keys = ("rank", "shot", "scene", "start_s", "end_s", "score", "thumbnail", "frame_s", "bbox", "confidence")
        data: dict = {
            "movie": self.movie,
            "results": [{k: r.to_json()[k] for k in keys} for r in self.results],
        }
        if self.timeline is not None:  # added after the first two keys: older readers ignore it
            data["timeline"] = self.timeline.to_json()
        return data


@dataclass(frozen=True)
class CastMember:
    """One identity of a movie's cast, found at index time by clustering its face tracks
    (core/cast.py). `number` is its place in the cast list (1 = the most screen time)."""

    number: int  # 1-based, by screen time (ties: first appearance)
    identity: int  # the stable id stored in the index (`Engine.search_identity` takes either)
    screen_s: float  # the summed durations of the shots the identity appears in
    share: float  # screen_s over the movie's duration (0-1)
    shots: tuple[int, ...]  # Shot.id of every shot it appears in, in time order
    first_s: float  # when it is first seen (its earliest crop's frame time)
    tracks: int  # how many face tracks were clustered into it
    crops: tuple[int, ...]  # the crop ids (FAISS ids) of its face vectors: what a search from it starts with
    portrait: str | None  # absolute path of its representative face crop (JPEG), None if missing

    def to_json(self) -> dict:
        """The stable form printed by `castfinder cast --json`."""
        return {"number": self.number, "identity": self.identity, "screen_s": round(self.screen_s, 3),
                "share": round(self.share, 4), "shots": len(self.shots), "shot_ids": list(self.shots),
                "first_s": round(self.first_s, 3), "tracks": self.tracks, "portrait": self.portrait}


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
