"""The offline stage and search end to end on synthetic media, with a random YOLO (conf near 0 so
that it proposes boxes) and the tiny DINOv2. Real footage is in test_real_footage.py."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from core import AmbiguousMovieError, BadInputError, Engine, MovieNotFoundError, Progress
from core.indexing.indexer import dedup_mask
from core.store import build_faiss, list_indexes, tidy_index_dir
from tests.media import make_frames_folder, make_video

SEGMENTS = [((30, 10, 10), 30), ((40, 230, 240), 20), ((0, 0, 160), 40)]  # cuts after frames 29 and 49


# A random YOLO's head starts with class probabilities near 1e-4: below that it proposes boxes.
RANDOM_YOLO = dict(det_conf=1e-4, det_imgsz=160, min_person_px=4, sample_fps=4.0)


@pytest.fixture(autouse=True)
def _seeded() -> None:
    import torch

    torch.manual_seed(0)  # the random YOLO's weights, hence its boxes, are the same in every engine


@pytest.fixture
def settings(make_settings):
    return make_settings(**RANDOM_YOLO)


@pytest.fixture
def engine(settings) -> Engine:
    return Engine(settings)


@pytest.fixture
def video(tmp_path: Path) -> Path:
    return make_video(tmp_path / "synthetic.mp4", SEGMENTS)


def test_indexing_a_video_builds_shots_thumbnails_and_a_manifest(engine: Engine, video: Path) -> None:
    seen: list[Progress] = []
    report = engine.index(video, "Synthetic Movie", progress=seen.append)
    info = report.movie
    assert (info.name, info.slug, info.shots) == ("Synthetic Movie", "synthetic-movie", 3)
    assert info.duration_s == pytest.approx(90 / 24, abs=1e-3)
    db = sqlite3.connect(info.path / "meta.sqlite")
    shots = db.execute("SELECT start_frame, end_frame, start_s, end_s, thumbnail FROM shots ORDER BY id").fetchall()
    assert [(a, b) for a, b, *_ in shots] == [(0, 29), (30, 49), (50, 89)]
    assert [round(s, 3) for _, _, s, _, _ in shots] == [0.0, 1.25, 2.083]
    for *_, thumb in shots:
        assert (info.path / thumb).stat().st_size > 0
    # Every sampled frame lies inside its shot, at least one per shot.
    rows = db.execute("SELECT c.frame_s, s.start_s, s.end_s FROM crops c JOIN shots s ON s.id = c.shot_id").fetchall()
    assert rows and all(start <= t < end for t, start, end in rows)
    # A track is one person inside one shot: never shared between shots.
    tracks = db.execute("SELECT track_id, COUNT(DISTINCT shot_id) FROM crops GROUP BY track_id").fetchall()
    assert tracks and all(n == 1 for _, n in tracks)
    manifest = json.loads((info.path / "manifest.json").read_text())
    assert manifest["complete"] is True and manifest["embedder"] == "dinov2"
    dinov2 = manifest["channels"]["dinov2"]
    assert dinov2["dim"] == 32 and dinov2["vectors"] == report.crops_kept
    assert manifest["counts"]["duplicates_dropped"] == report.duplicates_dropped
    assert manifest["counts"]["crops_kept"] + report.duplicates_dropped == report.persons_detected
    assert {"torch", "transformers", "ultralytics", "python"} <= set(manifest["versions"])
    assert manifest["detector"]["model"] == "yolov8n.yaml" and manifest["settings"]["sample_fps"] == 4.0
    # One pass over the video: no separate "finding shots" stage, film time from the start; the
    # reading thread's own time is reported beside the main thread's stages.
    assert {p.stage for p in seen} == {"index", "write"}
    assert report.seconds["decode"] > 0 and "shots" not in report.seconds and manifest["seconds"]["detect"] > 0
    assert [p for p in seen if p.stage == "index"][0].total == pytest.approx(info.duration_s, abs=0.1)
    last = [p for p in seen if p.stage == "index"][-1]
    # Progress is film time done of the whole film, and the bar ends full.
    assert last.unit == "s" and last.done == last.total == pytest.approx(info.duration_s, abs=0.1)
    assert last.message.startswith("00:00:03 of 00:00:03") and "people kept" in last.message


def test_search_returns_ranked_shots_with_their_times(engine: Engine, video: Path, tmp_path: Path) -> None:
    engine.index(video, "Synthetic Movie")
    query = tmp_path / "q.png"
    from PIL import Image

    # Shot 1's colour (BGR (30, 10, 10) in SEGMENTS is RGB (10, 10, 30)): that shot comes first.
    Image.fromarray(np.full((96, 160, 3), (10, 10, 30), np.uint8)).save(query)
    response = engine.search("synthetic", [query], top=3)
    assert response.movie == "Synthetic Movie" and len(response.results) == 3
    assert response.results[0].shot == 1 and sorted(r.shot for r in response.results) == [1, 2, 3]
    scores = [r.score for r in response.results]
    assert scores == sorted(scores, reverse=True)
    expected = {1: (0.0, 1.25), 2: (1.25, 2.0833), 3: (2.0833, 3.75)}
    for r in response.results:
        assert (round(r.start_s, 3), round(r.end_s, 3)) == pytest.approx(expected[r.shot], abs=1e-3)
        assert r.start_s <= r.frame_s < r.end_s and Path(r.thumbnail).is_file()
    data = response.to_json()
    assert set(data) == {"movie", "results", "timeline"}  # "timeline" added beside the first two
    assert set(data["results"][0]) == {"rank", "shot", "scene", "start_s", "end_s", "score", "thumbnail", "frame_s",
                                       "bbox", "confidence"}
    assert all(0.0 <= r.confidence <= 1.0 and r.low_confidence == (r.confidence < 0.5) for r in response.results)
    json.dumps(data)


def test_frames_folder_shots_and_scenes_come_from_names(engine: Engine, tmp_path: Path) -> None:
    folder = make_frames_folder(tmp_path / "frames", "my-film", {(1, 3): 2, (1, 4): 3, (2, 1): 1})
    (folder / "notes.txt").write_text("not a frame")
    report = engine.index(folder, "My Film")
    db = sqlite3.connect(report.movie.path / "meta.sqlite")
    rows = db.execute("SELECT scene, number, start_s, end_s FROM shots ORDER BY id").fetchall()
    assert rows == [(1, 3, 0.0, 0.4), (1, 4, 0.4, 1.0), (2, 1, 1.0, 1.2)]
    assert any("ignored" in w for w in report.warnings)


def test_near_duplicates_inside_a_shot_are_dropped() -> None:
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    close = np.array([0.999, 0.0447]) / np.linalg.norm([0.999, 0.0447])
    kept: list[np.ndarray] = []
    assert dedup_mask(np.stack([a, close, b]), kept, 0.99).tolist() == [True, False, True]
    # Later batches of the same shot compare against what was kept before.
    assert dedup_mask(np.stack([close, -a]), kept, 0.99).tolist() == [False, True]


def test_dedup_can_be_switched_off(make_settings, video: Path) -> None:
    on = Engine(make_settings(**RANDOM_YOLO, dedup_threshold=0.5)).index(video, "A")
    import torch

    torch.manual_seed(0)
    off = Engine(make_settings(**RANDOM_YOLO, dedup=False)).index(video, "B")
    assert on.persons_detected == off.persons_detected > 0
    assert off.duplicates_dropped == 0 and off.crops_kept == off.persons_detected
    assert on.duplicates_dropped > 0 and on.crops_kept + on.duplicates_dropped == on.persons_detected


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_faiss_kinds_find_the_same_nearest_neighbours(kind: str) -> None:
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(3000, 16)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = np.arange(3000) + 100
    index, built = build_faiss(vecs, ids, kind)
    assert built == kind
    queries = vecs[:20] + 0.01 * rng.normal(size=(20, 16)).astype(np.float32)
    _, found = index.search(queries, 1)
    assert (found[:, 0] == ids[:20]).mean() >= 0.9


def test_ivf_on_a_tiny_movie_falls_back_to_flat() -> None:
    vecs = np.eye(8, dtype=np.float32)
    assert build_faiss(vecs, np.arange(8), "ivf")[1] == "flat"


def test_an_interrupted_reindex_leaves_the_old_index_usable(engine: Engine, video: Path, settings) -> None:
    first = engine.index(video, "Heat").movie

    def interrupt(p: Progress) -> None:
        if p.stage == "index" and p.done >= 1.0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        engine.index(video, "Heat", progress=interrupt)
    [info] = engine.movies()
    assert info.build_id == first.build_id
    assert sorted(p.name for p in settings.index_dir.iterdir()) == ["heat"]
    assert engine.search("heat", [np.full((60, 60, 3), 90, np.uint8)], top=1).results


def test_reindexing_replaces_the_index_and_searches_see_the_new_one(engine: Engine, video: Path,
                                                                    tmp_path: Path) -> None:
    old = engine.index(video, "Heat").movie
    engine.search("heat", [np.zeros((50, 50, 3), np.uint8)])
    shorter = make_video(tmp_path / "short.mp4", SEGMENTS[:2])
    new = engine.index(shorter, "Heat").movie
    assert new.build_id != old.build_id and new.shots == 2
    assert {r.shot for r in engine.search("heat", [np.zeros((50, 50, 3), np.uint8)], top=10).results} <= {1, 2}


def test_half_written_and_crashed_builds_are_never_loaded(engine: Engine, video: Path, settings) -> None:
    engine.index(video, "Heat")
    index_dir = settings.index_dir
    half = index_dir / "ronin"
    shutil.copytree(index_dir / "heat", half)
    (half / "manifest.json").unlink()  # crashed before the manifest: not an index
    stale = index_dir / ".building-ronin-deadbeef"
    stale.mkdir()
    (stale / "pid").write_text("999999999")
    assert [m.name for m in engine.movies()] == ["Heat"]
    with pytest.raises(MovieNotFoundError):
        engine.resolve_movie("ronin")
    tidy_index_dir(index_dir)
    assert not stale.exists()
    # A crash between the two renames of a swap: the old index is put back.
    os.rename(index_dir / "heat", index_dir / ".old-heat-12345678")
    tidy_index_dir(index_dir)
    assert [m.slug for m in list_indexes(index_dir)] == ["heat"]


@pytest.mark.parametrize("case", ["truncated", "text-as-mp4", "empty-folder", "path-name"])
def test_bad_input_is_refused_and_the_existing_index_untouched(engine: Engine, video: Path, tmp_path: Path,
                                                             settings, case: str) -> None:
    before = engine.index(video, "Heat").movie
    name = "Heat"
    if case == "truncated":
        source = tmp_path / "cut.mp4"
        source.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    elif case == "text-as-mp4":
        source = tmp_path / "movie.mp4"
        source.write_text("this is not a video\n" * 100)
    elif case == "empty-folder":
        source = tmp_path / "empty"
        source.mkdir()
    else:
        source, name = video, "../../Heat"
    with pytest.raises(BadInputError) as err:
        engine.index(source, name)
    assert str(err.value) and "Traceback" not in str(err.value)
    assert [(m.slug, m.build_id) for m in engine.movies()] == [("heat", before.build_id)]
    assert sorted(p.name for p in settings.index_dir.iterdir()) == ["heat"]


def test_movies_resolve_by_name_slug_or_prefix(engine: Engine, video: Path) -> None:
    for name in ("Amélie (2001)", "Heat", "Heathers", "🎬🍿"):
        engine.index(video, name)
    assert engine.resolve_movie("AMÉLIE").name == "Amélie (2001)"
    assert engine.resolve_movie("amelie-2001").name == "Amélie (2001)"
    assert engine.resolve_movie("amel").name == "Amélie (2001)"
    assert engine.resolve_movie("heat").name == "Heat"  # exact beats prefix
    assert engine.resolve_movie("🎬🍿").name == "🎬🍿"
    with pytest.raises(AmbiguousMovieError, match="Heathers"):
        engine.resolve_movie("hea")
    with pytest.raises(MovieNotFoundError) as err:
        engine.resolve_movie("Heathrs")
    assert "Heathers" in err.value.suggestions
    assert engine.match_movies("amelie")[0].name == "Amélie (2001)"


def test_concurrent_searches_agree_with_sequential_ones(engine: Engine, video: Path) -> None:
    engine.index(video, "Heat")
    rng = np.random.default_rng(3)
    queries = [rng.integers(0, 255, (80, 60, 3), dtype=np.uint8) for _ in range(6)]
    expected = [[(r.shot, round(r.score, 5)) for r in engine.search("heat", [q], top=3).results] for q in queries]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda q: [(r.shot, round(r.score, 5)) for r in engine.search("heat", [q], top=3).results],
                            queries * 2))
    assert got == expected * 2


def test_query_images_are_checked(engine: Engine, video: Path, tmp_path: Path) -> None:
    engine.index(video, "Heat")
    bad = tmp_path / "notes.png"
    bad.write_text("hello")
    with pytest.raises(BadInputError, match="notes.png"):
        engine.search("heat", [bad])
    with pytest.raises(MovieNotFoundError):
        engine.search("Casablanca", [np.zeros((10, 10, 3), np.uint8)])


def test_a_serving_engine_loads_the_models_its_indexes_were_built_with(engine: Engine, video: Path,
                                                                        make_settings, tmp_path: Path) -> None:
    engine.index(video, "Heat")
    # The configured embedder is absent; the index names the one it was built with, which loads.
    serving = Engine(make_settings(**RANDOM_YOLO, dinov2_model=str(tmp_path / "absent")))
    assert serving.search("heat", [np.zeros((50, 50, 3), np.uint8)], top=1).results


def test_an_hnsw_index_returns_as_many_hits_as_asked(make_settings, video: Path) -> None:
    engine = Engine(make_settings(**RANDOM_YOLO, faiss_index="hnsw", dedup=False))
    info = engine.index(video, "Heat").movie
    index = engine.open_index(info)
    assert json.loads((info.path / "manifest.json").read_text())["channels"]["dinov2"]["faiss"] == "hnsw"
    query = np.random.default_rng(0).normal(size=(1, info.dim)).astype(np.float32)
    _, ids = index.search("dinov2", query, 10_000)
    # HNSW's default search breadth would stop far short of every vector.
    assert sorted(ids[0].tolist()) == list(range(info.vectors))


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_stored_vectors_can_be_read_back_for_propagation(make_settings, video: Path, kind: str) -> None:
    engine = Engine(make_settings(**RANDOM_YOLO, faiss_index=kind, dedup=False))
    info = engine.index(video, "Heat").movie
    index = engine.open_index(info)
    crops = np.array([0, info.vectors - 1])
    stored = index.vectors("dinov2", crops)
    assert stored is not None and stored.shape == (2, info.dim)
    sims, ids = index.search("dinov2", stored, 1)
    # Each stored vector finds itself (or an identical crop's) at similarity 1.
    assert np.allclose(sims[:, 0], 1.0, atol=1e-4)
    assert np.allclose(index.vectors("dinov2", ids[:, 0]), stored, atol=1e-5)
    assert index.vectors("dinov2", np.array([info.vectors + 5])) is None  # no such crop


def test_a_shot_is_sampled_at_its_ends_and_middle_and_no_sparser_than_the_rate() -> None:
    from core.indexing.sources import shot_targets
    from core.types import Shot

    long = Shot(1, 1, None, 0, 95, 10.0, 14.0)
    t = shot_targets(long, 2.0)
    assert t[0] == pytest.approx(10.08) and t[-1] == pytest.approx(13.92) and 12.0 in [round(v, 6) for v in t]
    assert max(np.diff(t)) <= 0.5 and len(t) % 2 == 1
    short = Shot(2, 2, None, 96, 110, 14.0, 14.6)  # first and last
    assert shot_targets(short, 2.0) == [pytest.approx(14.08), pytest.approx(14.52)]
    assert len(shot_targets(Shot(2, 2, None, 96, 120, 14.0, 15.0), 2.0)) == 3  # and the middle, at 0.84 s apart
    blink = Shot(3, 3, None, 111, 112, 14.6, 14.65)
    assert shot_targets(blink, 2.0) == [pytest.approx(14.625)]


def test_still_frames_are_skipped_before_detection(make_settings, tmp_path: Path) -> None:
    # Three shots of one flat colour and a square that stays put: after each shot's first frame
    # nothing changes. The moving clip's frames all differ.
    video = make_video(tmp_path / "still.mp4", SEGMENTS, moving=False)
    every = Engine(make_settings(**RANDOM_YOLO, still_diff=0)).index(video, "Every frame")
    still = Engine(make_settings(**RANDOM_YOLO)).index(video, "Still")
    assert every.frames_still == 0 and still.frames_sampled == 3
    assert still.frames_still == every.frames_sampled - 3
    assert still.movie.shots == 3 and still.crops_kept > 0
    moving = Engine(make_settings(**RANDOM_YOLO)).index(make_video(tmp_path / "moving.mp4", SEGMENTS), "Moving")
    assert moving.frames_still == 0 and moving.frames_sampled == every.frames_sampled


def test_a_background_source_is_closed_when_its_reader_stops_early() -> None:
    from core.indexing.sources import in_background

    closed = []

    def frames():
        try:
            yield from range(1000)
        finally:
            closed.append(True)  # as a video source releases its capture

    source = frames()  # still referenced here: only an explicit close runs its cleanup
    reader = in_background(source, maxsize=2)
    assert next(reader) == 0
    reader.close()
    assert closed == [True]


def test_each_model_loads_once_when_several_threads_ask_for_it(make_settings) -> None:
    engine = Engine(make_settings(**RANDOM_YOLO), load_models=False)
    model = engine.settings.dinov2_model
    with ThreadPoolExecutor(4) as pool:
        channels = list(pool.map(lambda _: engine.channel_for("dinov2", model), range(4)))
        detectors = list(pool.map(lambda _: engine.detector, range(4)))
    assert all(c is channels[0] for c in channels) and all(d is detectors[0] for d in detectors)
