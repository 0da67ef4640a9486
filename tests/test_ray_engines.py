"""Engine workers on Ray (core/ray_engines.py): the bot's engine calls answered by Ray actors that
hold the models, exactly as an in-process engine answers them. A local Ray head on 127.0.0.1 with
two worker actors over a tiny index (random YOLO saved once, the tiny DINOv2, a synthetic video)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from PIL import Image

from tests.hostile import REPO, offline_env
from tests.media import make_video
from tests.milvus_server import milvus_lite_server

ray = pytest.importorskip("ray", reason="engine workers need Ray: pip install 'castfinder[scale]'")

from core import CastfinderError, Engine, MovieNotFoundError, QueryImage, Settings  # noqa: E402
from core.ray_engines import (  # noqa: E402
    NAMESPACE,
    EnginesUnavailableError,
    RemoteEngine,
    start_workers,
    worker_names,
)

SEGMENTS = [((30, 10, 10), 30), ((40, 230, 240), 20), ((0, 0, 160), 40)]  # three shots
# The model runtimes: none of them in a bot process whose engine is remote. (FAISS and OpenCV are
# imported by the bot's own modules either way; they hold no model.)
MODEL_RUNTIMES = ("torch", "ultralytics", "transformers", "openvino", "onnxruntime", "dlib")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, tiny_dinov2: Path) -> Iterator[tuple[Settings, Engine, Path]]:
    """Settings of a tiny build, an in-process engine with "Heat" indexed, and the video. The
    catalogue is a Milvus Lite server, which the workers and this process share (a Lite file is
    one process's at a time)."""
    tmp = tmp_path_factory.mktemp("ray-engines")
    with milvus_lite_server(tmp / "milvus") as uri:
        yield from _tiny(tmp, tiny_dinov2, uri)


def _tiny(tmp: Path, tiny_dinov2: Path, catalog_uri: str) -> Iterator[tuple[Settings, Engine, Path]]:
    import torch
    from ultralytics import YOLO

    torch.manual_seed(0)
    detector = tmp / "yolo-random.pt"
    YOLO("yolov8n.yaml").save(str(detector))  # one file: every process loads the same random weights
    settings = Settings(_env_file=None, index_dir=tmp / "indexes", detector=str(detector), det_runtime="torch",
                        dinov2_model=str(tiny_dinov2), device="cpu", det_imgsz=160, det_conf=0.0001,
                        min_person_px=4, channels=["dinov2"], catalog_uri=catalog_uri)
    engine = Engine(settings)
    video = make_video(tmp / "heat.mp4", SEGMENTS)
    engine.index(video, "Heat")
    yield settings, engine, video
    engine.catalog.close()


@pytest.fixture(scope="module")
def cluster(tiny: tuple[Settings, Engine, Path]) -> Iterator[str]:
    """A local Ray head (127.0.0.1, two CPUs) with two engine workers; yields its address."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(address="local", num_cpus=2, include_dashboard=False, namespace=NAMESPACE,
             logging_level="WARNING", log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO), **_offline()}})
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def _offline() -> dict[str, str]:
    return {k: v for k, v in offline_env().items() if k.endswith("_OFFLINE")}


def _picture() -> Image.Image:
    return Image.fromarray(np.full((96, 64, 3), (200, 30, 30), np.uint8))


def _same_search(a: Any, b: Any) -> None:
    assert (a.movie, a.slug, a.query_crops, a.whole_image_queries, a.aggregation) == \
           (b.movie, b.slug, b.query_crops, b.whole_image_queries, b.aggregation)
    assert a.results == b.results and a.results  # shots, scores, times, boxes, thumbnails
    assert a.timeline == b.timeline
    assert a.query_vectors.keys() == b.query_vectors.keys()
    for name in a.query_vectors:
        np.testing.assert_allclose(a.query_vectors[name], b.query_vectors[name], rtol=1e-5, atol=1e-6)


def _error(call: Any, *args: Any) -> tuple[type, str]:
    with pytest.raises(CastfinderError) as info:
        call(*args)
    return type(info.value), str(info.value)


def test_every_engine_call_through_the_workers_answers_as_in_process(tiny, cluster: str) -> None:
    from bot.errors import explain
    from bot.services.engine_gateway import EngineGateway

    settings, local, video = tiny
    started = time.perf_counter()
    pids = start_workers(cluster, 2, settings)
    assert len(set(pids)) == 2 and os.getpid() not in pids
    assert worker_names(ray) == ["castfinder-engine-0", "castfinder-engine-1"]
    remote = RemoteEngine(cluster)
    print(f"two workers ready in {time.perf_counter() - started:.1f} s")

    assert remote.movies() == local.movies()
    assert remote.resolve_movie("hea") == local.resolve_movie("hea")
    assert remote.match_movies("heet") == local.match_movies("heet")
    picture = _picture()
    people = local.find_people(picture)
    assert remote.find_people(picture) == people and people
    assert remote.annotate_people(picture, people) == local.annotate_people(picture, people)
    for _ in range(2):  # both workers, in turn
        _same_search(remote.search("heat", [QueryImage(picture, "all")], top=10),
                     local.search("heat", [QueryImage(picture, "all")], top=10))
    response = local.search("heat", [picture], top=10)
    assert remote.timeline_png(response) == local.timeline_png(response)
    feedback = local.feedback_for("heat", no=[response.results[0].shot])
    _same_search(remote.refine("heat", response.query_vectors, feedback, top=10),
                 local.refine("heat", response.query_vectors, feedback, top=10))
    clip = local.clip("heat", 2)
    assert remote.clip("heat", 2) == type(clip)(**{**clip.__dict__, "cached": True})  # the same cached file

    frame = Image.open(response.results[0].thumbnail or "").copy()
    expected = local.identify(frame)
    found = remote.identify(frame)
    assert (found.movie, found.confidence, found.shots) == (expected.movie, expected.confidence, expected.shots)

    # The engine's own errors arrive as themselves: users read the same text.
    for call in (lambda e: e.resolve_movie("Jaws"), lambda e: e.cast("heat"), lambda e: e.check_clip("heat", 99)):
        assert _error(call, remote) == _error(call, local)
    with pytest.raises(MovieNotFoundError) as info:
        remote.resolve_movie("Jaws")
    assert explain(info.value) == explain(MovieNotFoundError("Jaws", []))

    # The bot's one door to the engine takes the remote engine unchanged.
    gateway = EngineGateway(remote, workers=2)
    try:
        [movie] = asyncio.run(gateway.movies())
        _same_search(asyncio.run(gateway.search(movie, [QueryImage(picture)], top=5)),
                     local.search(movie, [QueryImage(picture)], top=5))
    finally:
        gateway.close()


def test_the_bot_process_loads_no_model(tiny, cluster: str, tmp_path: Path) -> None:
    settings = tiny[0]
    start_workers(cluster, 2, settings)
    script = f"""
import asyncio, json, sys
import numpy as np
from PIL import Image
from bot.app import build_remote_engine
from bot.services.engine_gateway import EngineGateway
gateway = EngineGateway(build_remote_engine({cluster!r}), workers=2)
image, people = asyncio.run(gateway.detect(open({str(tmp_path / 'q.png')!r}, 'rb').read()))
[movie] = asyncio.run(gateway.movies())
from core import QueryImage
response = asyncio.run(gateway.search(movie, [QueryImage(image)], top=5))
gateway.close()
print(json.dumps({{"people": len(people), "shots": [r.shot for r in response.results],
                  "loaded": sorted(m for m in {MODEL_RUNTIMES!r} if m in sys.modules)}}))
"""
    _picture().save(tmp_path / "q.png")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env=offline_env({"RAY_USAGE_STATS_ENABLED": "0"}), cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["loaded"] == []  # no torch, no detector, no embedder in the bot's process
    expected = tiny[1].search("heat", [QueryImage(_picture())], top=5)
    assert out["shots"] == [r.shot for r in expected.results] and out["people"] == len(tiny[1].find_people(_picture()))


def test_a_killed_worker_is_replaced_and_the_next_query_answered(tiny, cluster: str, capsys) -> None:
    from castfinder.cli import main

    settings, local, _ = tiny
    pids = start_workers(cluster, 2, settings)
    remote = RemoteEngine(cluster)
    expected = local.search("heat", [_picture()], top=10)
    os.kill(pids[0], signal.SIGKILL)
    for _ in range(2):  # in turn: one of the two calls goes to the killed worker
        _same_search(remote.search("heat", [_picture()], top=10), expected)
    again = start_workers(cluster, 2, settings)  # the same named workers, the killed one restarted by Ray
    assert again[1] == pids[1] and again[0] not in pids

    assert main(["engines", "--ray", cluster, "--stop"]) == 0
    assert "stopped 2 engine worker(s)" in capsys.readouterr().out
    kind, text = _error(remote.movies)
    assert kind is EnginesUnavailableError and "try again" in text
    kind, text = _error(RemoteEngine, cluster)
    assert kind is EnginesUnavailableError and f"castfinder engines --ray {cluster}" in text


def test_a_cluster_that_is_down_is_one_line_for_the_bot_and_for_engines(tmp_path: Path) -> None:
    from tests.hostile import no_traceback, run_cli
    from tests.milvus_server import free_port

    address = f"127.0.0.1:{free_port()}"
    env = {"BOT_TOKEN": "123456:ABCdef_fake-token", "CASTFINDER_ENGINE_RAY_ADDRESS": address,
           "CASTFINDER_DB_PATH": str(tmp_path / "bot.sqlite3"), "CASTFINDER_INDEX_DIR": str(tmp_path / "indexes")}
    for args in (["bot"], ["engines", "--ray", address, "--workers", "1"]):
        proc = run_cli(args, env, timeout=60)
        assert proc.returncode == 1 and no_traceback(proc), proc.stderr[-2000:]
        assert f"The Ray cluster at {address} cannot be reached" in proc.stderr
        assert "ABCdef_fake-token" not in proc.stderr + proc.stdout
