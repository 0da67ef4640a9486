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
from typing import Iterable, Sequence

import numpy as np

from .errors import AmbiguousMovieError, BadInputError, MovieNotFoundError
from .indexing.indexer import Indexer
from .models.channels import Channel, make_channel
from .models.detector import PersonDetector
from .naming import slugify
from .search.annotate import draw_people
from .search.fusion import fuse
from .search.images import ImageLike, QueryImage, crop, load_image
from .search.ranking import aggregate
from .settings import Settings
from .store import MovieIndex, list_indexes, read_manifest, tidy_index_dir
from .types import MovieInfo, Person, Progress, ProgressCallback, SearchResponse, ShotResult, no_progress

log = logging.getLogger(__name__)


class Engine:
    def __init__(self, settings: Settings | None = None, *, load_models: bool = True) -> None:
        self.settings = settings or Settings()
        self.device = self.settings.resolve_device()
        self._detector: PersonDetector | None = None
        self._channels: dict[tuple[str, str], Channel] = {}
        self._models_lock = threading.Lock()  # guards _loading; each model loads under its own lock
        self._loading: dict[object, threading.Lock] = {}
        self._cache: OrderedDict[str, MovieIndex] = OrderedDict()
        self._cache_lock = threading.Lock()
        if self.settings.torch_threads:
            import torch

            torch.set_num_threads(self.settings.torch_threads)
        tidy_index_dir(self.settings.index_dir)
        if load_models:
            self.load_models()

    # -- models ---------------------------------------------------------------------------
    def load_models(self) -> None:
        """Load now (at start-up, not on the first query) the detector and the channels that the
        indexed movies were built with; the configured channels when nothing is indexed yet."""
        self.detector
        wanted: dict[tuple[str, str], None] = {}
        for info in self.movies():
            manifest = read_manifest(info.path)
            for name, spec in (manifest.channels if manifest is not None else {}).items():
                wanted[(name, spec.model or self.settings.model_for(name))] = None
        if not wanted:
            wanted = {(name, self.settings.model_for(name)): None for name in self.settings.index_channels()}
        for name, model in wanted:
            self.channel_for(name, model)

    def _lock_for(self, model: object) -> threading.Lock:
        """The lock one model loads under: two threads never load it twice, and loading one
        model never waits for another."""
        with self._models_lock:
            return self._loading.setdefault(model, threading.Lock())

    @property
    def detector(self) -> PersonDetector:
        with self._lock_for("detector"):
            if self._detector is None:
                s = self.settings
                self._detector = PersonDetector(
                    s.detector, classes=s.person_classes, conf=s.det_conf, imgsz=s.det_imgsz,
                    batch=s.det_batch, min_px=s.min_person_px, device=self.device,
                    runtime=s.det_runtime, threads=s.torch_threads,
                )
            return self._detector

    def channel_for(self, name: str, model: str) -> Channel:
        """The channel an index was built with; loaded once, shared by every index using it."""
        key = (name, model)
        with self._lock_for(key):
            if key not in self._channels:
                self._channels[key] = make_channel(name, model, self.settings, self.device)
            return self._channels[key]

    # -- movies ---------------------------------------------------------------------------
    def movies(self) -> list[MovieInfo]:
        return list_indexes(self.settings.index_dir)

    def resolve_movie(self, query: str) -> MovieInfo:
        """By name, slug, or an unambiguous prefix of either, case-insensitively."""
        movies = self.movies()
        q = " ".join(query.split()).casefold()
        if not q:
            raise MovieNotFoundError(query, [m.name for m in movies[:5]])
        qslug = slugify(query)
        exact = [m for m in movies if m.name.casefold() == q or m.slug == q or m.slug == qslug]
        if len(exact) == 1:
            return exact[0]
        prefix = [m for m in movies if m.name.casefold().startswith(q) or m.slug.startswith(qslug)]
        if len(prefix) == 1:
            return prefix[0]
        if len(prefix) > 1:
            raise AmbiguousMovieError(query, [m.name for m in prefix])
        raise MovieNotFoundError(query, [m.name for m in self.match_movies(query)])

    def match_movies(self, query: str, limit: int = 5) -> list[MovieInfo]:
        """Indexed movies ranked by how well their name fits `query` (fuzzy), best first."""
        q = " ".join(query.split()).casefold()
        scored = []
        for m in self.movies():
            name = m.name.casefold()
            ratio = difflib.SequenceMatcher(None, q, name).ratio()
            if q and q in name:
                ratio = max(ratio, 0.75 + 0.25 * len(q) / max(len(name), 1))
            words = [difflib.SequenceMatcher(None, q, w).ratio() for w in name.split()]
            ratio = max(ratio, 0.9 * max(words, default=0.0))
            if ratio >= 0.5:
                scored.append((ratio, m))
        scored.sort(key=lambda t: (-t[0], t[1].name))
        return [m for _, m in scored[:limit]]

    def open_index(self, movie: str | MovieInfo) -> MovieIndex:
        info = movie if isinstance(movie, MovieInfo) else self.resolve_movie(movie)
        with self._cache_lock:
            cached = self._cache.get(info.slug)
            if cached is not None:
                manifest = read_manifest(cached.path)
                if manifest is not None and manifest.build_id == cached.info.build_id:
                    self._cache.move_to_end(info.slug)
                    return cached
                del self._cache[info.slug]  # re-indexed since it was loaded
        index = MovieIndex(info.path)
        with self._cache_lock:
            self._cache[info.slug] = index
            while len(self._cache) > self.settings.index_cache_size:
                self._cache.popitem(last=False)
        return index

    # -- offline --------------------------------------------------------------------------
    def index(self, source: Path | str, movie: str, progress: ProgressCallback = no_progress):
        """Build (or rebuild) the index of `movie` from a video file or a frames folder."""
        def load():
            return self.detector, [self.channel_for(name, self.settings.model_for(name))
                                   for name in self.settings.index_channels()]

        # The models load in a thread while the film's first frames are read. (Two threads, faces
        # beside the rest, measured no faster: 2.4 s against 2.7 s, within the drift.)
        with ThreadPoolExecutor(1, thread_name_prefix="castfinder-load") as pool:
            report = Indexer(self.settings, pool.submit(load)).run(Path(source), movie, progress)
        with self._cache_lock:
            self._cache.pop(report.movie.slug, None)
        return report

    # -- online ---------------------------------------------------------------------------
    def load_image(self, image: ImageLike):
        return load_image(image, max_pixels=self.settings.max_image_pixels, max_side=self.settings.max_query_side)

    def find_people(self, image: ImageLike) -> list[Person]:
        """People in a query image, numbered left to right (as drawn by `annotate_people`)."""
        img = self.load_image(image)
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
        """
        started = time.perf_counter()
        s = self.settings
        method = aggregation or s.aggregation
        if top < 1:
            raise BadInputError("--top must be at least 1.")
        index = self.open_index(movie)
        queries = [q if isinstance(q, QueryImage) else QueryImage(q) for q in queries]
        if not queries:
            raise BadInputError("Give at least one query image.")
        progress(Progress("people", 0, len(queries), "image"))
        crops, whole = [], 0
        for n, q in enumerate(queries, start=1):
            img = self.load_image(q.image)
            people = list(q.people) if q.people is not None else self.find_people(img)
            chosen = _select(people, q.select, q.name or f"image {n}")
            if chosen:
                crops.extend(crop(img, p.bbox) for p in chosen)
            else:
                crops.append(img)  # nobody found: the whole screenshot is the query
                whole += 1
            progress(Progress("people", n, len(queries), "image"))
        use = _pick_channels(index.info.channels, channels)
        progress(Progress("search", 0, 1, "step"))
        hits = {}
        for name in use:
            channel = self.channel_for(name, index.channel(name).model)
            encoded = channel.encode(crops)
            sims, ids = index.search(name, encoded.vectors, s.search_k)
            hits[name] = (sims, ids)
        if len(use) == 1:
            sims, ids = hits[use[0]]
            calib = index.calibration[use[0]]
            ranked = [(h.shot_id, h.score, h.similarity, h.best_crop, float(calib.confidence(h.similarity)))
                      for h in aggregate(sims, ids, index.crop_shot, method, rrf_k=s.rrf_k,
                                         count_from=calib.similarity_at(s.low_score))]
        else:
            if method != "max":
                raise BadInputError(
                    f"{method} aggregation works on one channel; with several ({', '.join(use)}) evidence "
                    "is fused per person. Use --aggregation max, or choose one channel with --channels."
                )
            propagate = (lambda ch, vecs: index.search(ch, vecs, s.search_k)) if s.expand else None
            ranked = [(f.shot_id, f.confidence, f.similarity, f.best_crop, f.confidence)
                      for f in fuse(index, hits, use_tracks=s.tracks, expand_with=propagate)]
        results = []
        for rank, (shot_id, score, similarity, best_crop, confidence) in enumerate(ranked[:top], start=1):
            shot = index.shots[shot_id]
            results.append(ShotResult(
                rank=rank, shot=shot.number, shot_id=shot.id, scene=shot.scene,
                start_s=shot.start_s, end_s=shot.end_s, score=score,
                thumbnail=str(index.thumbnails[shot.id]),
                frame_s=float(index.crop_time[best_crop]),
                bbox=tuple(float(v) for v in index.crop_bbox[best_crop]),
                similarity=similarity, confidence=confidence, low_confidence=confidence < s.low_score,
            ))
        progress(Progress("search", 1, 1, "step"))
        return SearchResponse(
            movie=index.info.name, slug=index.info.slug, results=results, query_crops=len(crops),
            whole_image_queries=whole, aggregation=method, elapsed_s=time.perf_counter() - started,
        )


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


def _select(people: list[Person], select, label: str) -> list[Person]:
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
