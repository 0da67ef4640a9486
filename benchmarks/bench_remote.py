"""What a Ray hop costs: the bot's engine calls in-process vs through engine workers
(core/ray_engines.py), and the catalogue's identify from a Milvus Lite file vs a Milvus Lite
server shared by processes (CASTFINDER_MILVUS_URI).

A local Ray head (127.0.0.1, one engine worker) over a tiny index (random YOLO, the tests' tiny
DINOv2, a synthetic video), and with --real over the Titanic development clip indexed with the real
person detector (../shared; 1 fps). Each figure is the median of --runs calls after one warm-up.

    PYTHONPATH=. python benchmarks/bench_remote.py --runs 20 [--real]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.update(HF_HUB_OFFLINE="1", YOLO_OFFLINE="1", TRANSFORMERS_OFFLINE="1", RAY_USAGE_STATS_ENABLED="0")

from benchmarks.bench_core import machine  # noqa: E402
from tests.media import make_video  # noqa: E402
from tests.milvus_server import milvus_lite_server  # noqa: E402
from tests.test_identify import frame_at, make_movie  # noqa: E402
from tests.tiny_models import save_dinov2  # noqa: E402

WEIGHTS = REPO.parent / "shared" / "weights"
TITANIC = REPO.parent / "shared" / "data" / "titanic" / "titanic_20s.mp4"


def median_ms(call: Callable[[], Any], runs: int) -> float:
    call()  # warm-up: caches, the first index load
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def tiny_settings(tmp: Path, dinov2: Path, **extra: Any) -> Any:
    import torch
    from ultralytics import YOLO

    from core import Settings

    tmp.mkdir(parents=True, exist_ok=True)
    detector = tmp / "yolo-random.pt"
    if not detector.exists():
        torch.manual_seed(0)
        YOLO("yolov8n.yaml").save(str(detector))
    values = dict(index_dir=tmp / "indexes", detector=str(detector), det_runtime="torch", dinov2_model=str(dinov2),
                  device="cpu", det_imgsz=160, det_conf=0.0001, min_person_px=4, channels=["dinov2"])
    values.update(extra)
    return Settings(_env_file=None, **values)


def ray_hop(settings: Any, source: Path, movie: str, query: Image.Image, runs: int, label: str) -> None:
    import ray

    from core import Engine, QueryImage
    from core.ray_engines import NAMESPACE, RemoteEngine, start_workers, stop_workers

    local = Engine(settings)
    if not local.movies():
        local.index(source, movie)
    slug = local.movies()[0].slug
    queries = [QueryImage(query, "all")]
    ray.init(address="local", num_cpus=2, include_dashboard=False, namespace=NAMESPACE, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    try:
        address = ray.get_runtime_context().gcs_address
        started = time.perf_counter()
        start_workers(address, 1, settings)
        ready = time.perf_counter() - started
        remote = RemoteEngine(address)
        rows = [
            ("movies()", lambda e: e.movies()),
            ("find_people", lambda e: e.find_people(query)),
            ("search", lambda e: e.search(slug, queries, top=5)),
        ]
        print(f"\n{label}: one engine worker ready in {ready:.1f} s (its models loaded)")
        print(f"{'call':<14}{'in-process ms':>15}{'Ray worker ms':>15}{'hop ms':>10}")
        for name, call in rows:
            here = median_ms(lambda c=call: c(local), runs)  # type: ignore[misc]
            there = median_ms(lambda c=call: c(remote), runs)  # type: ignore[misc]
            print(f"{name:<14}{here:>15.1f}{there:>15.1f}{there - here:>10.1f}")
        stop_workers(address)
    finally:
        ray.shutdown()


def _identify_ms(folder: Path, dinov2: Path, movies: list[tuple[Path, str]], picture: Image.Image,
                 catalog_uri: str, runs: int) -> float:
    from core import Engine

    engine = Engine(tiny_settings(folder, dinov2, det_conf=1.0, catalog_uri=catalog_uri, index_dir=folder / "indexes"))
    for video, name in movies:
        engine.index(video, name)
    try:
        assert engine.identify(picture).movie == movies[-1][1]
        return median_ms(lambda: engine.identify(picture), runs)
    finally:
        engine.catalog.close()


def identify(tmp: Path, dinov2: Path, runs: int) -> None:
    movies = [(make_movie(tmp / "alpha.mp4", seed=1), "Alpha"), (make_movie(tmp / "beta.mp4", seed=2), "Beta")]
    picture = frame_at(movies[-1][0], 4.6)
    print(f"\nidentify (two tiny movies, frames only), median of {runs}")
    lite = _identify_ms(tmp / "identify-file", dinov2, movies, picture, "", runs)
    print(f"  {'Milvus Lite file':<20}{lite:>8.1f} ms")
    with milvus_lite_server(tmp / "identify-server" / "milvus") as server:
        served = _identify_ms(tmp / "identify-server", dinov2, movies, picture, server, runs)
    print(f"  {'Milvus Lite server':<20}{served:>8.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--real", action="store_true", help="also the Titanic clip with the real detector")
    args = parser.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        dinov2 = save_dinov2(tmp / "dinov2")
        video = make_video(tmp / "heat.mp4", [((30, 10, 10), 30), ((40, 230, 240), 20), ((0, 0, 160), 40)])
        query = Image.fromarray(np.full((96, 64, 3), (200, 30, 30), np.uint8))
        ray_hop(tiny_settings(tmp / "tiny", dinov2), video, "Heat", query, args.runs, "tiny index")
        if args.real and TITANIC.is_file():
            from core import Settings

            real = Settings(_env_file=None, index_dir=tmp / "real" / "indexes", detector=str(WEIGHTS /
                            "person_yolov8s_falldet.pt"), person_classes=[0, 1], dinov2_model=str(dinov2),
                            device="cpu", channels=["dinov2"], models_dir=WEIGHTS, sample_fps=1.0)
            shot = frame_at(TITANIC, 5.0)
            ray_hop(real, TITANIC, "Titanic", shot, args.runs, "Titanic, real detector")
        identify(tmp, dinov2, args.runs)


if __name__ == "__main__":
    main()
