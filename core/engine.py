"""The retrieval engine: models loaded once, indexes cached, thread-safe search.

Callers own the threads: run `Engine.search` in your own `ThreadPoolExecutor` (the bot does),
never on an event loop.
"""

from __future__ import annotations

import difflib
import logging
import shlex
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence, Sized

import numpy as np
from PIL import Image

from .cast import SheetTile, draw_sheet
from .catalog import FRAMES as FRAMES_COLLECTION
from .catalog import Catalog, SyncReport, people_collection
from .clips import Clip, ClipCutter
from .errors import AmbiguousMovieError, BadInputError, CastUnavailableError, DamagedIndexError, MovieNotFoundError
from .indexing.distributed import Film, FilmOutcome, PartRunner, index_films
from .indexing.indexer import Indexer
from .indexing.sources import check_source
from .inputs import check_file
from .models.cache import ModelCache
from .models.channels import Channel
from .models.detector import PersonDetector
from .models.factory import make_channel, make_detector
from .naming import slugify
from .search import feedback as feedback_plan
from .search import framesig
from .search.annotate import draw_people
from .search.calibration import Calibration
from .search.fusion import Hits, fuse
from .search.identify import PLAUSIBLE, Tally
from .search.images import ImageLike, QueryImage, Selection, crop, load_image
from .search.ranking import aggregate
from .search.timeline import draw_timeline
from .settings import Settings, load_settings
from .store import IndexCatalog, IndexDamage, Listing, MovieIndex, damaged_movie, read_manifest, tidy_index_dir
from .types import (
    CastMember,
    DamagedMovie,
    Feedback,
    IdentifiedShot,
    IdentifyResponse,
    IndexReport,
    MovieCandidate,
    MovieInfo,
    Person,
    Progress,
    ProgressCallback,
    QueryVectors,
    RankedShot,
    SearchResponse,
    ShotResult,
    Timeline,
    TimelineShot,
    no_progress,
)

log = logging.getLogger(__name__)

# Fuzzy movie names (`match_movies`): a query found inside a name scores at least this, more the
# more of the name it covers ...
_SUBSTRING_FLOOR = 0.75
# ... one word of the name that matches counts a little less than the whole name matching ...
_WORD_WEIGHT = 0.9
# ... and names under this score are not suggested.
_MATCH_MIN = 0.5


class Engine:
    def __init__(self, settings: Settings | None = None, *, load_models: bool = True) -> None:
        # Without settings: read from the environment and .env, a wrong value told as a SettingsError.
        self.settings = settings or load_settings(Settings)
        self.device = self.settings.resolve_device()
        self._models = ModelCache()  # each model loads once, under its own lock
        self._cache: OrderedDict[str, MovieIndex] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._catalog = IndexCatalog(self.settings.index_dir)
        self._clips = ClipCutter()
        if self.settings.torch_threads:
            import torch

            torch.set_num_threads(self.settings.torch_threads)
        self._movie_catalog: Catalog | None = None  # "which movie is this?": opened on first use
        self._calibrations: dict[tuple[str, str, str], Calibration | None] = {}
        tidy_index_dir(self.settings.index_dir)
        if load_models:
            self.load_models()

    # -- models ---------------------------------------------------------------------------
    def load_models(self) -> None:
        """Load now (at start-up, not on the first query) the detector and the channels that the
        indexed movies were built with; the configured channels when nothing is indexed yet."""
        _ = self.detector
        wanted: dict[tuple[str, str], None] = {}
        for info in self.movies():
            try:
                manifest = read_manifest(info.path)
            except IndexDamage:  # damaged since it was listed: nothing to load for it
                manifest = None
            for name, spec in (manifest.channels if manifest is not None else {}).items():
                wanted[(name, spec.model or self.settings.model_for(name))] = None
        if not wanted:
            wanted = {(name, self.settings.model_for(name)): None for name in self.settings.index_channels()}
        for name, model in wanted:
            self.channel_for(name, model)

    @property
    def detector(self) -> PersonDetector:
        """The person detector, loaded on first use; a channel loading meanwhile never delays it."""
        return self._models.get("detector", lambda: make_detector(self.settings, self.device))

    def channel_for(self, name: str, model: str) -> Channel:
        """The channel an index was built with; loaded once, shared by every index using it."""
        return self._models.get(("channel", name, model), lambda: make_channel(name, model, self.settings,
                                                                                 self.device))

    # -- movies ---------------------------------------------------------------------------
    def listing(self) -> Listing:
        """One look at the index folder: the movies that can be searched and the damaged indexes."""
        return self._catalog.scan()

    def movies(self) -> list[MovieInfo]:
        """The indexed movies that can be searched (damaged indexes: `damaged_movies`)."""
        return self.listing().movies

    def damaged_movies(self) -> list[DamagedMovie]:
        """Indexes whose manifest or files fail their checks: each with the reason and the
        command that rebuilds it. Never searched; they hide none of the others."""
        return self.listing().damaged

    def resolve_movie(self, query: str) -> MovieInfo:
        """By name, slug, or an unambiguous prefix of either, case-insensitively. A damaged index
        is matched like a movie and raises `DamagedIndexError` (which says how to rebuild it)."""
        listing = self.listing()  # one scan for the movies and the damaged alike
        movies = listing.movies
        q = " ".join(query.split()).casefold()
        if not q:
            raise MovieNotFoundError(query, [m.name for m in movies[:5]])
        qslug = slugify(query)
        every: list[MovieInfo | DamagedMovie] = [*movies, *listing.damaged]
        exact = [m for m in every if m.name.casefold() == q or m.slug == q or m.slug == qslug]
        prefix = [m for m in every if m.name.casefold().startswith(q) or m.slug.startswith(qslug)]
        found = exact if len(exact) == 1 else prefix
        if len(found) == 1:
            if isinstance(found[0], DamagedMovie):
                raise DamagedIndexError(found[0])
            return found[0]
        if len(found) > 1:
            raise AmbiguousMovieError(query, [m.name for m in found])
        raise MovieNotFoundError(query, [m.name for m in self.match_movies(query)])

    def match_movies(self, query: str, limit: int = 5) -> list[MovieInfo]:
        """Indexed movies ranked by how well their name fits `query` (fuzzy), best first."""
        q = " ".join(query.split()).casefold()
        scored = []
        for m in self.movies():
            name = m.name.casefold()
            ratio = difflib.SequenceMatcher(None, q, name).ratio()
            if q and q in name:
                ratio = max(ratio, _SUBSTRING_FLOOR + (1 - _SUBSTRING_FLOOR) * len(q) / max(len(name), 1))
            words = [difflib.SequenceMatcher(None, q, w).ratio() for w in name.split()]
            ratio = max(ratio, _WORD_WEIGHT * max(words, default=0.0))
            if ratio >= _MATCH_MIN:
                scored.append((ratio, m))
        scored.sort(key=lambda t: (-t[0], t[1].name))
        return [m for _, m in scored[:limit]]

    def open_index(self, movie: str | MovieInfo) -> MovieIndex:
        """The loaded index of `movie`, checked as it loads (see core/store/health.py); raises
        `DamagedIndexError` for a damaged one, which from then on is listed as damaged."""
        info = movie if isinstance(movie, MovieInfo) else self.resolve_movie(movie)
        with self._cache_lock:
            cached = self._cache.get(info.slug)
        if cached is not None:
            try:
                manifest = read_manifest(cached.path)
            except IndexDamage as exc:
                manifest = None
                damage: DamagedMovie | None = damaged_movie(cached.path, str(exc))
            else:
                damage = None
            with self._cache_lock:
                if manifest is not None and manifest.build_id == cached.info.build_id:
                    self._cache.move_to_end(info.slug)
                    return cached
                self._cache.pop(info.slug, None)  # re-indexed or damaged since it was loaded
            if damage is not None:
                self._catalog.mark_damaged(damage)
                raise DamagedIndexError(damage)
        try:
            # Loaded under the index folder's shared lock: the old index or the new, never a mix.
            index = MovieIndex(info.path)
        except DamagedIndexError as exc:
            self._catalog.mark_damaged(exc.movie)
            raise
        with self._cache_lock:
            self._cache[info.slug] = index
            while len(self._cache) > self.settings.index_cache_size:
                self._cache.popitem(last=False)
        return index

    # -- offline --------------------------------------------------------------------------
    def index(self, source: Path | str, movie: str, progress: ProgressCallback = no_progress, *,
              replace: bool = False) -> IndexReport:
        """Build (or rebuild) the index of `movie` from a video file or a frames folder. `replace`:
        replace the index of another movie whose name lands on the same slug ("Titanic" for
        "Titanic!"); without it that is refused. Disk faults raise StorageError."""
        check_source(Path(source).expanduser())  # a pipe, a device or a typo: refused before the models load

        def load() -> tuple[PersonDetector, list[Channel]]:
            return self.detector, [self.channel_for(name, self.settings.model_for(name))
                                   for name in self.settings.index_channels()]

        # The models load in a thread while the film's first frames are read, once the build is
        # claimed. (Two threads, faces beside the rest, measured no faster: 2.4 s against 2.7 s,
        # within the drift.)
        with ThreadPoolExecutor(1, thread_name_prefix="castfinder-load") as pool:
            report = Indexer(self.settings, lambda: pool.submit(load)).run(Path(source), movie, progress,
                                                                           replace=replace)
        with self._cache_lock:
            self._cache.pop(report.movie.slug, None)
        self._update_catalog()
        return report

    def index_films(self, films: Sequence[Film], runner: PartRunner, *, replace: bool = False,
                    progress: ProgressCallback = no_progress) -> list[FilmOutcome]:
        """Index several films at once, each in parts on `runner`'s workers (a Ray cluster:
        core/indexing/ray_runner.py); each index is written and published as `index` does. A film
        that fails is its outcome's `error`; the others are indexed."""
        outcomes = index_films(self.settings, films, runner, replace=replace, progress=progress)
        with self._cache_lock:
            for outcome in outcomes:
                if outcome.report is not None:
                    self._cache.pop(outcome.report.movie.slug, None)
        if any(o.report is not None for o in outcomes):
            self._update_catalog()
        return outcomes

    # -- the catalogue: which movie is this? -----------------------------------------------
    @property
    def catalog(self) -> Catalog:
        if self._movie_catalog is None:
            self._movie_catalog = Catalog(self.settings)
        return self._movie_catalog

    def _update_catalog(self) -> None:
        """After a build: the catalogue learns the movie (and forgets what is gone). Never fails
        the build: a catalogue that cannot be updated now (busy, a server down) catches up on the
        next `identify` or `castfinder catalog rebuild`. No catalogue yet: the first identify makes it."""
        if not self.catalog.exists:
            return
        try:
            report = self.sync_catalog()
        except Exception as exc:
            log.warning("the catalogue was not updated (%s); it catches up on the next identify", exc)
            return
        for failure in report.failed:
            log.warning("the catalogue skipped %s", failure)

    def sync_catalog(self, progress: Callable[[str], None] | None = None) -> SyncReport:
        """Bring the catalogue in line with the indexed movies (cheap when nothing changed)."""
        return self.catalog.sync(self.movies(), progress)

    def rebuild_catalog(self, progress: Callable[[str], None] | None = None) -> SyncReport:
        """Build the catalogue afresh from every movie's index."""
        return self.catalog.rebuild(self.movies(), progress)

    def identify(self, image: ImageLike, *, top: int = 3) -> IdentifyResponse:
        """Which indexed movie, and which shot, `image` (a screenshot, or a crop of a person) is
        from: the whole frame and the people in it searched across the catalogue."""
        started = time.perf_counter()
        if top < 1:
            raise BadInputError("--top must be at least 1.")
        if isinstance(image, (str, Path)):
            check_file(image, "an image file")
        movies = {m.slug: m for m in self.movies()}
        if not movies:
            raise BadInputError("No movie is indexed yet, so there is nothing to compare with: index one with "
                                "castfinder index VIDEO --movie NAME.")
        speed: dict[str, float] = {}
        clock = time.perf_counter()
        report = self.sync_catalog()
        entries = self.catalog.entries()
        speed["catalogue"] = time.perf_counter() - clock
        img = self.load_image(image)
        tally = Tally()
        clock = time.perf_counter()
        descriptor = framesig.describe(img)[None]
        tally.add_frames(self.catalog.search(FRAMES_COLLECTION, descriptor, _FRAME_HITS)[0])
        speed["frame"] = time.perf_counter() - clock
        clock = time.perf_counter()
        people = self._people_in(img)
        # The most prominent people (a crowd adds little but time); nobody found: the image itself.
        prominent = sorted(people, key=lambda p: -p.score * p.area_fraction**0.5)[:_IDENTIFY_PEOPLE]
        crops = [crop(img, p.bbox) for p in prominent] or [img]
        models = {(channel, model) for e in entries.values() if e.slug in movies for channel, model in e.people.items()}
        for channel, model in sorted(models):
            encoded = self.channel_for(channel, model).encode(crops)
            calibrations = {slug: calib for slug in movies
                            if (calib := self._calibration(movies[slug], channel, model)) is not None}
            for row in self.catalog.search(people_collection(channel, model), encoded.vectors, _PEOPLE_HITS):
                tally.add_people(row, calibrations)
        speed["people"] = time.perf_counter() - clock
        ranked = [(slug, conf) for slug, conf in tally.movies() if slug in movies]
        floor = self.settings.identify_min_confidence
        answer = ranked[0] if ranked and ranked[0][1] >= floor else None
        shots: list[IdentifiedShot] = []
        if answer is not None:
            shots = self._identified_shots(movies[answer[0]], tally, top)
        candidates = [MovieCandidate(movies[slug].name, slug, conf) for slug, conf in ranked
                      if conf >= PLAUSIBLE and (answer is None or slug != answer[0])][:_CANDIDATES]
        return IdentifyResponse(
            movie=movies[answer[0]].name if answer else None, slug=answer[0] if answer else None,
            confidence=answer[1] if answer else (ranked[0][1] if ranked else 0.0), shots=shots,
            candidates=candidates, movies_searched=len(movies), people=len(people),
            without_descriptors=sorted(report.without_descriptors), elapsed_s=time.perf_counter() - started,
            speed=speed)

    def _identified_shots(self, info: MovieInfo, tally: Tally, top: int) -> list[IdentifiedShot]:
        """The movie's best shots, with their times and thumbnails from its index (one index loaded)."""
        index = self.open_index(info)
        out = []
        for shot_id, evidence in tally.best_shots(info.slug, top):
            shot = index.shots.get(shot_id)
            if shot is None:  # the catalogue is of an older build than the index: skip the stale row
                continue
            out.append(IdentifiedShot(
                shot=shot.number, shot_id=shot.id, scene=shot.scene, start_s=shot.start_s, end_s=shot.end_s,
                frame_s=evidence.frame_s, confidence=evidence.confidence, evidence=evidence.evidence,
                thumbnail=index.thumbnail(shot.id)))
        return out

    def _calibration(self, info: MovieInfo, channel: str, model: str) -> Calibration | None:
        """A movie's calibration of one channel, read from its manifest once per build."""
        key = (info.slug, info.build_id, channel)
        if key not in self._calibrations:
            try:
                manifest = read_manifest(info.path)
            except IndexDamage:
                manifest = None
            spec = manifest.channels.get(channel) if manifest is not None else None
            self._calibrations[key] = (Calibration.from_json(spec.calibration)
                                       if spec is not None and spec.model == model else None)
        return self._calibrations[key]

    # -- online ---------------------------------------------------------------------------
    def load_image(self, image: ImageLike) -> Image.Image:
        return load_image(image, max_pixels=self.settings.max_image_pixels, max_side=self.settings.max_query_side)

    def find_people(self, image: ImageLike) -> list[Person]:
        """People in a query image, numbered left to right (as drawn by `annotate_people`)."""
        return self._people_in(self.load_image(image))

    def _people_in(self, img: Image.Image) -> list[Person]:
        dets = self.detector.detect([np.asarray(img)])[0]
        area = float(img.width * img.height)
        ordered = sorted(dets, key=lambda d: (d.bbox[0], d.bbox[1]))
        return [
            Person(i, d.bbox, d.score, (d.bbox[2] - d.bbox[0]) * (d.bbox[3] - d.bbox[1]) / area)
            for i, d in enumerate(ordered, start=1)
        ]

    def annotate_people(self, image: ImageLike, people: Sequence[Person]) -> bytes:
        """A JPEG of the image with each person's numbered box, for choosing whom to search."""
        return draw_people(self.load_image(image), people)

    def search(
        self,
        movie: str | MovieInfo,
        queries: Iterable[QueryImage | ImageLike],
        *,
        top: int = 5,
        aggregation: str | None = None,
        channels: Sequence[str] | None = None,
        progress: ProgressCallback = no_progress,
        feedback: Feedback | None = None,
    ) -> SearchResponse:
        """The best shots of `movie` for the people in `queries`.

        `channels` restricts the search to some of the index's channels (default: all of them).
        With one channel, `aggregation` turns its hits into shot scores; with several, evidence
        is fused per track (see core.search.fusion) and shots are ranked by calibrated confidence.
        `feedback` (results judged "that's them" / "not them") changes the ranking as
        core.search.feedback says. The response's `speed` holds the seconds of each stage:
        people, embed, search, rank; its `query_vectors` are what `refine` takes.
        """
        started = time.perf_counter()
        wanted = self._check_queries(queries)
        index, use, method = self._plan_search(movie, top, aggregation, channels)
        speed = dict.fromkeys(_SEARCH_STAGES, 0.0)
        clock = time.perf_counter()
        crops, whole = self._query_crops(wanted, progress)
        speed["people"] = time.perf_counter() - clock
        progress(Progress("search", 0, 1, "step"))
        vectors = self._embed(index, use, crops, speed)
        response = self._ranked(index, use, method, vectors, feedback, top, speed, started,
                                query_crops=len(crops), whole=whole)
        progress(Progress("search", 1, 1, "step"))
        return response

    def refine(
        self,
        movie: str | MovieInfo,
        query_vectors: QueryVectors,
        feedback: Feedback,
        *,
        top: int = 5,
        aggregation: str | None = None,
        channels: Sequence[str] | None = None,
    ) -> SearchResponse:
        """A search again from a response's `query_vectors` (no screenshots, no models), with
        `feedback`: the way a front-end refreshes results the user judged. The vectors must be
        of this index's channels (a channel missing from them has no query rows: only the
        feedback's own rows speak in it)."""
        started = time.perf_counter()
        index, use, method = self._plan_search(movie, top, aggregation, channels)
        vectors: QueryVectors = {}
        for name in use:
            dim = index.channel(name).dim
            rows = np.asarray(query_vectors.get(name, np.zeros((0, dim))), dtype=np.float32)
            if rows.ndim != 2 or rows.shape[1] != dim or not np.isfinite(rows).all():
                raise BadInputError(f"the query's {name} vectors do not fit this index ({dim}-d); search again.")
            vectors[name] = rows
        if not any(len(v) for v in vectors.values()) and not feedback.positives:
            raise BadInputError("nothing to search for: the query has no vectors; search again.")
        speed = dict.fromkeys(_SEARCH_STAGES, 0.0)
        count = max((len(v) for v in vectors.values()), default=0)
        return self._ranked(index, use, method, vectors, feedback, top, speed, started, query_crops=count, whole=0)

    def feedback_for(self, movie: str | MovieInfo, *, yes: Sequence[int] = (), no: Sequence[int] = ()) -> Feedback:
        """Feedback on shots as their numbers are printed (`ShotResult.shot`): `yes` "that's
        them", `no` "not them"; each shot's person is the one that best matches the query."""
        index = self.open_index(movie)
        return Feedback(feedback_plan.marks_for_shots(index, yes), feedback_plan.marks_for_shots(index, no))

    def _plan_search(self, movie: str | MovieInfo, top: int, aggregation: str | None,
                     channels: Sequence[str] | None) -> tuple[MovieIndex, list[str], str]:
        method = aggregation or self.settings.aggregation
        if top < 1:
            raise BadInputError("--top must be at least 1.")
        index = self.open_index(movie)
        use = _pick_channels(index.info.channels, channels)
        _check_aggregation(use, method)
        return index, use, method

    # -- the cast -------------------------------------------------------------------------
    def cast(self, movie: str | MovieInfo) -> list[CastMember]:
        """The people of `movie` found at index time (core/cast.py), the most screen time first.
        Raises CastUnavailableError for an index without a cast (built before casts existed, or
        without a face channel), with what to do."""
        index = self.open_index(movie)
        members = index.cast()
        if members is None:
            raise CastUnavailableError(_no_cast(index))
        return members

    def cast_sheet(self, movie: str | MovieInfo, members: Sequence[CastMember] | None = None) -> bytes:
        """A JPEG contact sheet of the cast's first CASTFINDER_CAST_SHEET_SIZE members (or of
        `members`): numbered portraits with their screen time and share of the film."""
        index = self.open_index(movie)
        shown = list(members) if members is not None else self.cast(index.info)[: self.settings.cast_sheet_size]
        tiles = [SheetTile(m.number, _read_small(m.portrait), f"{format_duration(m.screen_s)} · {m.share:.0%}")
                 for m in shown]
        return draw_sheet(f"{index.info.name}: the cast", tiles)

    def search_identity(
        self,
        movie: str | MovieInfo,
        identity: int,
        *,
        top: int = 5,
        aggregation: str | None = None,
        channels: Sequence[str] | None = None,
        progress: ProgressCallback = no_progress,
        feedback: Feedback | None = None,
    ) -> SearchResponse:
        """The same search as `search`, seeded with a cast member's own face crops (the stored
        vectors of at most CASTFINDER_CAST_SEEDS of them, in every channel) instead of
        screenshots' people. `identity` is `CastMember.identity`."""
        started = time.perf_counter()
        index, use, method = self._plan_search(movie, top, aggregation, channels)
        members = self.cast(index.info)
        member = next((m for m in members if m.identity == identity), None)
        if member is None:
            raise BadInputError(f"{index.info.name!r} has no cast member {identity}; its cast has "
                                f"{len(members)} (see castfinder cast --movie {shlex.quote(index.info.name)}).")
        speed = dict.fromkeys(_SEARCH_STAGES, 0.0)
        progress(Progress("search", 0, 1, "step"))
        clock = time.perf_counter()
        seeds = Seeds(_seed_crops(index, member, self.settings.cast_seeds))
        vectors: QueryVectors = {name: seeds.vectors(index, name) for name in use}
        speed["embed"] += time.perf_counter() - clock
        response = self._ranked(index, use, method, vectors, feedback, top, speed, started,
                                query_crops=len(seeds.crop_ids), whole=0)
        progress(Progress("search", 1, 1, "step"))
        return response

    def _ranked(self, index: MovieIndex, use: list[str], method: str, vectors: QueryVectors,
                feedback: Feedback | None, top: int, speed: dict[str, float], started: float, *,
                query_crops: int, whole: int) -> SearchResponse:
        """The one path from query vectors (of screenshots' people, of a cast member, or stored
        with an earlier answer) and feedback to the response."""
        s = self.settings
        plan = feedback_plan.plan(index, feedback or Feedback(), vectors, use, k=s.search_k,
                                  weight=s.feedback_negative_weight, per_track=s.feedback_track_crops)
        hits = self._hits(use, vectors, plan, speed)
        clock = time.perf_counter()
        ranked = [r for r in self._rank(index, hits, use, method, plan.search) if r.shot_id not in plan.removed]
        results = self._results(index, ranked[:top])
        timeline = self._timeline(index, ranked, results)
        speed["rank"] = time.perf_counter() - clock
        return SearchResponse(
            movie=index.info.name, slug=index.info.slug, results=results, query_crops=query_crops,
            whole_image_queries=whole, aggregation=method, elapsed_s=time.perf_counter() - started,
            speed=speed, timeline=timeline, query_vectors=vectors,
        )

    def timeline_png(self, response: SearchResponse) -> bytes:
        """The response's screen-time timeline as a PNG (core/search/timeline.py): the whole film,
        the matched shots on it, screen time, share, first and last appearance."""
        if response.timeline is None:
            raise BadInputError("This search has no timeline; search again to get one.")
        return draw_timeline(response.timeline, f"{response.movie} — where this character appears")

    def clip(self, movie: str | MovieInfo, shot: int, around_s: float | None = None) -> Clip:
        """A short muted MP4 of shot `shot` (its number, as results show it) of `movie`: at most
        10 s around `around_s` (a result's `frame_s`; the shot's middle when None), clamped to the
        shot, cut from the video the movie was indexed from and cached in its index folder
        (core/clips.py). `Clip.path` is the file. Raises a `ClipError` for a frames-folder movie,
        a video moved or changed since indexing, or a shot the movie does not have."""
        index = self.open_index(movie)
        # Users see shot numbers; for a video (the only source with clips) a shot's number is its id.
        return self._clips.clip(index, shot, around_s)

    def check_clip(self, movie: str | MovieInfo, shot: int) -> None:
        """Raise what `clip` would raise before cutting (a frames-folder movie, a moved video, no
        such shot), without decoding anything: a front-end can refuse at once and only then
        say that it is cutting."""
        self._clips.check(self.open_index(movie), shot)

    def _check_queries(self, queries: Iterable[QueryImage | ImageLike]) -> list[QueryImage]:
        """The queries, refused before any work when there are none, more than
        CASTFINDER_MAX_QUERY_IMAGES (each one is decoded and searched for people), or when a file
        among them is missing or not a regular file (a named pipe would block, a device never end)."""
        limit = self.settings.max_query_images
        wanted: list[QueryImage] = []
        for q in queries:  # counted as they come: a caller's endless iterable stops at the limit
            wanted.append(q if isinstance(q, QueryImage) else QueryImage(q))
            if len(wanted) > limit:
                break
        if not wanted:
            raise BadInputError("Give at least one query image.")
        if len(wanted) > limit:
            count = str(len(queries)) if isinstance(queries, Sized) else f"more than {limit}"
            raise BadInputError(
                f"{count} query images; a search takes at most {limit} (CASTFINDER_MAX_QUERY_IMAGES). "
                "Pick the clearest few."
            )
        for q in wanted:
            if isinstance(q.image, (str, Path)):
                check_file(q.image, "an image file")
        return wanted

    def _query_crops(self, queries: list[QueryImage], progress: ProgressCallback) -> tuple[list[Image.Image], int]:
        """Each query image decoded once, cut into the crops of the people chosen in it; an image
        in which nobody was found is searched whole. Returns the crops and how many were whole."""
        progress(Progress("people", 0, len(queries), "image"))
        crops: list[Image.Image] = []
        whole = 0
        for n, q in enumerate(queries, start=1):
            img = self.load_image(q.image)
            people = list(q.people) if q.people is not None else self._people_in(img)
            chosen = _select(people, q.select, q.name or f"image {n}")
            if chosen:
                crops.extend(crop(img, p.bbox) for p in chosen)
            else:
                crops.append(img)  # nobody found: the whole screenshot is the query
                whole += 1
            progress(Progress("people", n, len(queries), "image"))
        return crops, whole

    def _embed(self, index: MovieIndex, use: list[str], crops: list[Image.Image],
               speed: dict[str, float]) -> QueryVectors:
        """Per channel, the crops' vectors by the model the index was built with (a face channel
        has rows only for the crops with a face); adds the seconds to `speed`."""
        vectors: QueryVectors = {}
        for name in use:
            clock = time.perf_counter()
            vectors[name] = self.channel_for(name, index.channel(name).model).encode(crops).vectors
            speed["embed"] += time.perf_counter() - clock
        return vectors

    def _hits(self, use: list[str], vectors: QueryVectors, plan: feedback_plan.Plan, speed: dict[str, float]) -> Hits:
        """Per channel, the FAISS hits of the query's rows and the feedback's positive rows (one
        row of hits per vector), with the negatives applied; adds the seconds to `speed`."""
        hits: Hits = {}
        for name in use:
            clock = time.perf_counter()
            hits[name] = plan.search(name, plan.rows(name, vectors[name]))
            speed["search"] += time.perf_counter() - clock
        return hits

    def _rank(self, index: MovieIndex, hits: Hits, use: list[str], method: str,
              search: feedback_plan.SearchFn) -> list[RankedShot]:
        """Shots best first: one channel's hits aggregated by `method`, or several channels fused
        (propagation searching through `search`, so that feedback holds in its second round)."""
        s = self.settings
        if len(use) == 1:
            sims, ids = hits[use[0]]
            calib = index.calibration[use[0]]
            return aggregate(sims, ids, index.crop_shot, method, rrf_k=s.rrf_k,
                             count_from=calib.similarity_at(s.low_score),
                             confidence=lambda sim: float(calib.confidence(sim)))
        return fuse(index, hits, use_tracks=s.tracks, expand_with=search if s.expand else None)

    def _timeline(self, index: MovieIndex, ranked: list[RankedShot], results: list[ShotResult]) -> Timeline:
        """Every confident match over the film, not only the page of results (the best
        CASTFINDER_TIMELINE_MAX_SHOTS of them), and the weak matches among the results, which
        the user sees marked as weak."""
        low, cap = self.settings.low_score, self.settings.timeline_max_shots
        confident = [r for r in ranked if r.confidence >= low]
        confident.sort(key=lambda r: -r.confidence)  # rrf and frequency rank by their own score
        shots = [index.shots[r.shot_id] for r in confident[:cap]]
        return Timeline.of(index.info.duration_s, [
            *(TimelineShot(s.id, s.start_s, s.end_s, r.confidence, False) for s, r in zip(shots, confident)),
            *(TimelineShot(r.shot_id, r.start_s, r.end_s, r.confidence, True) for r in results if r.low_confidence),
        ], capped=len(confident) > cap)

    def _results(self, index: MovieIndex, ranked: list[RankedShot]) -> list[ShotResult]:
        results = []
        for rank, r in enumerate(ranked, start=1):
            shot = index.shots[r.shot_id]
            x1, y1, x2, y2 = (float(v) for v in index.crop_bbox[r.best_crop])
            results.append(ShotResult(
                rank=rank, shot=shot.number, shot_id=shot.id, scene=shot.scene,
                start_s=shot.start_s, end_s=shot.end_s, score=r.score,
                thumbnail=index.thumbnail(shot.id),
                frame_s=float(index.crop_time[r.best_crop]), bbox=(x1, y1, x2, y2),
                similarity=r.similarity, confidence=r.confidence,
                low_confidence=r.confidence < self.settings.low_score, crop=r.best_crop,
            ))
        return results


_SEARCH_STAGES = ("people", "embed", "search", "rank")
# identify: frames and person vectors fetched from the catalogue per query vector, people searched
# per screenshot at most, and other movies offered as candidates at most.
_FRAME_HITS = 64
_PEOPLE_HITS = 200
_IDENTIFY_PEOPLE = 4
_CANDIDATES = 3


@dataclass(frozen=True)
class Seeds:
    """A cast member's crops, standing in for query crops: their stored vectors in each channel."""

    crop_ids: np.ndarray

    def vectors(self, index: MovieIndex, channel: str) -> np.ndarray:
        dim = index.channel(channel).dim
        got = index.vectors(channel, self.crop_ids) if len(self.crop_ids) else None
        # A body channel holds every crop; a channel that cannot give vectors back searches nothing.
        return got if got is not None else np.zeros((0, dim), np.float32)


def _seed_crops(index: MovieIndex, member: CastMember, limit: int) -> np.ndarray:
    """At most `limit` of the member's face crops: those nearest its mean face, one per track
    before a second of any track (as several screenshots are of several moments)."""
    crops = np.asarray(member.crops, dtype=np.int64)
    face = next((n for n in index.info.channels if index.channel(n).kind == "face"), None)
    if face is None or not len(crops):
        return crops[:limit]
    vectors = index.vectors(face, crops)
    if vectors is None:
        return crops[:limit]
    centre = vectors.mean(axis=0)
    closeness = vectors @ (centre / max(float(np.linalg.norm(centre)), 1e-12))
    order = np.argsort(-closeness, kind="stable")
    tracks = index.crop_track[crops[order]]
    # Rank within its track first (0 for each track's best), then closeness.
    taken: dict[int, int] = {}
    turn = np.zeros(len(order), np.int64)
    for i, track in enumerate(tracks.tolist()):
        turn[i] = taken.get(track, 0)
        taken[track] = int(turn[i]) + 1
    picked = order[np.lexsort((np.arange(len(order)), turn))][:limit]
    return crops[np.sort(picked)]


def _check_aggregation(use: list[str], method: str) -> None:
    if len(use) > 1 and method != "max":
        raise BadInputError(
            f"{method} aggregation works on one channel; with several ({', '.join(use)}) evidence "
            "is fused per person. Use --aggregation max, or choose one channel with --channels."
        )


def _no_cast(index: MovieIndex) -> str:
    """Why an index has no cast, and what to do."""
    name = index.info.name
    command = f"castfinder index {shlex.quote(index.manifest.source.path)} --movie {shlex.quote(name)}"
    if not any(index.channel(n).kind == "face" for n in index.info.channels):
        return (f"{name!r} was indexed without a face channel, so it has no cast (bodies tell clothes apart "
                f"better than people); re-index this movie with faces to get its cast: {command} --channels face,reid")
    return f"{name!r} was indexed before castfinder found casts; re-index this movie to get its cast: {command}"


def format_duration(seconds: float) -> str:
    """Screen time for people: "45 s", "2:05", "1:02:05"."""
    total = int(round(seconds))
    if total < 60:
        return f"{total} s"
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _read_small(path: str | None) -> bytes | None:
    """A portrait's bytes (a few kB; None when missing or unreadable)."""
    if path is None:
        return None
    try:
        with open(path, "rb") as fh:
            return fh.read(4_000_000)
    except OSError:
        return None


def _pick_channels(available: Sequence[str], wanted: Sequence[str] | None) -> list[str]:
    if not wanted:
        return list(available)
    missing = [c for c in wanted if c not in available]
    if missing:
        raise BadInputError(
            f"this index has no {missing[0]!r} channel (it has {', '.join(available)}); re-index with "
            f"--channels {','.join(dict.fromkeys([*available, *missing]))}."
        )
    return list(dict.fromkeys(wanted))


def _select(people: list[Person], select: Selection, label: str) -> list[Person]:
    if not people and select in ("main", "all"):
        return []
    if select == "all":
        return people
    if select == "main":
        # Prominence: a confident detection that fills the frame. Confidence alone picks small
        # sharp bystanders; area alone picks loose boxes around two people.
        return [max(people, key=lambda p: (p.score * p.area_fraction**0.5, p.score))]
    wanted = sorted(set(select))
    bad = [i for i in wanted if not 1 <= i <= len(people)]
    if bad:
        shows = f"it shows {len(people)}" if people else "no person was found in it"
        raise BadInputError(f"{label}: there is no person {bad[0]}; {shows}.")
    return [p for p in people if p.index in wanted]
