"""The retrieval engine: models loaded once, indexes cached, thread-safe search.

Callers own the threads: run `Engine.search` in your own `ThreadPoolExecutor` (the bot does),
never on an event loop.
"""

from __future__ import annotations

import difflib
import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Sequence, Sized

import numpy as np
from PIL import Image

from .catalog import FRAMES as FRAMES_COLLECTION
from .catalog import Catalog, SyncReport, people_collection
from .errors import AmbiguousMovieError, BadInputError, DamagedIndexError, MovieNotFoundError
from .indexing.indexer import Indexer
from .indexing.sources import check_source
from .inputs import check_file
from .models.cache import ModelCache
from .models.channels import Channel
from .models.detector import PersonDetector
from .models.factory import make_channel, make_detector
from .naming import slugify
from .search import framesig
from .search.annotate import draw_people
from .search.calibration import Calibration
from .search.fusion import Hits, fuse
from .search.identify import PLAUSIBLE, Tally
from .search.images import ImageLike, QueryImage, Selection, crop, load_image
from .search.ranking import aggregate
from .settings import Settings, load_settings
from .store import IndexCatalog, IndexDamage, MovieIndex, damaged_movie, read_manifest, tidy_index_dir
from .types import (
    DamagedMovie,
    IdentifiedShot,
    IdentifyResponse,
    IndexReport,
    MovieCandidate,
    MovieInfo,
    Person,
    Progress,
    ProgressCallback,
    RankedShot,
    SearchResponse,
    ShotResult,
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
    def movies(self) -> list[MovieInfo]:
        """The indexed movies that can be searched (damaged indexes: `damaged_movies`)."""
        return self._catalog.scan().movies

    def damaged_movies(self) -> list[DamagedMovie]:
        """Indexes whose manifest or files fail their checks: each with the reason and the
        command that rebuilds it. Never searched; they hide none of the others."""
        return self._catalog.scan().damaged

    def resolve_movie(self, query: str) -> MovieInfo:
        """By name, slug, or an unambiguous prefix of either, case-insensitively. A damaged index
        is matched like a movie and raises `DamagedIndexError` (which says how to rebuild it)."""
        movies = self.movies()
        q = " ".join(query.split()).casefold()
        if not q:
            raise MovieNotFoundError(query, [m.name for m in movies[:5]])
        qslug = slugify(query)
        every: list[MovieInfo | DamagedMovie] = [*movies, *self.damaged_movies()]
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
    ) -> SearchResponse:
        """The best shots of `movie` for the people in `queries`.

        `channels` restricts the search to some of the index's channels (default: all of them).
        With one channel, `aggregation` turns its hits into shot scores; with several, evidence
        is fused per track (see core.search.fusion) and shots are ranked by calibrated confidence.
        The response's `speed` holds the seconds of each stage: people, embed, search, rank.
        """
        started = time.perf_counter()
        method = aggregation or self.settings.aggregation
        if top < 1:
            raise BadInputError("--top must be at least 1.")
        wanted = self._check_queries(queries)
        index = self.open_index(movie)
        use = _pick_channels(index.info.channels, channels)
        if len(use) > 1 and method != "max":
            raise BadInputError(
                f"{method} aggregation works on one channel; with several ({', '.join(use)}) evidence "
                "is fused per person. Use --aggregation max, or choose one channel with --channels."
            )
        speed = dict.fromkeys(_SEARCH_STAGES, 0.0)
        clock = time.perf_counter()
        crops, whole = self._query_crops(wanted, progress)
        speed["people"] = time.perf_counter() - clock
        progress(Progress("search", 0, 1, "step"))
        hits = self._hits(index, use, crops, speed)
        clock = time.perf_counter()
        ranked = self._rank(index, hits, use, method)
        results = self._results(index, ranked[:top])
        speed["rank"] = time.perf_counter() - clock
        progress(Progress("search", 1, 1, "step"))
        return SearchResponse(
            movie=index.info.name, slug=index.info.slug, results=results, query_crops=len(crops),
            whole_image_queries=whole, aggregation=method, elapsed_s=time.perf_counter() - started,
            speed=speed,
        )

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

    def _hits(self, index: MovieIndex, use: list[str], crops: list[Image.Image], speed: dict[str, float]) -> Hits:
        """Per channel, the FAISS hits of the crops' vectors (one row per crop); adds the seconds
        spent embedding and searching to `speed`."""
        hits: Hits = {}
        for name in use:
            clock = time.perf_counter()
            encoded = self.channel_for(name, index.channel(name).model).encode(crops)
            speed["embed"] += time.perf_counter() - clock
            clock = time.perf_counter()
            hits[name] = index.search(name, encoded.vectors, self.settings.search_k)
            speed["search"] += time.perf_counter() - clock
        return hits

    def _rank(self, index: MovieIndex, hits: Hits, use: list[str], method: str) -> list[RankedShot]:
        """Shots best first: one channel's hits aggregated by `method`, or several channels fused."""
        s = self.settings
        if len(use) == 1:
            sims, ids = hits[use[0]]
            calib = index.calibration[use[0]]
            return aggregate(sims, ids, index.crop_shot, method, rrf_k=s.rrf_k,
                             count_from=calib.similarity_at(s.low_score),
                             confidence=lambda sim: float(calib.confidence(sim)))

        def propagate(channel: str, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return index.search(channel, vectors, s.search_k)

        return fuse(index, hits, use_tracks=s.tracks, expand_with=propagate if s.expand else None)

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
                low_confidence=r.confidence < self.settings.low_score,
            ))
        return results


_SEARCH_STAGES = ("people", "embed", "search", "rank")
# identify: frames and person vectors fetched from the catalogue per query vector, people searched
# per screenshot at most, and other movies offered as candidates at most.
_FRAME_HITS = 64
_PEOPLE_HITS = 200
_IDENTIFY_PEOPLE = 4
_CANDIDATES = 3


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
