"""Indexing the three development clips in one process (`Engine.index`, one film after another) beside
Ray (`castfinder index --ray`'s path: a local Ray head on 127.0.0.1, N workers, films at once, each in
parts), with the same settings; checks the indexes hold the same counts.

    HF_HUB_OFFLINE=1 YOLO_OFFLINE=1 .venv/bin/python benchmarks/bench_ray_index.py [--shared ../shared] \
        [--work /tmp/castfinder-bench-ray] [--workers 2] [--part-s 30] [--channels face,reid] \
        [--det-imgsz 384] [--fps 1]

Defaults: the product's default channels (face + reid) and detector size, 1 frame a second, parts
of 30 s of film (the clips are 20-53 s: Titanic and Office in one part each, Supernatural in two).
Printed: the machine, wall time of each side, and for Ray its parts: starting Ray, the workers'
model loads (until every worker answers), and the indexing itself.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_core import machine  # noqa: E402  (one description of the machine for every benchmark)

CLIPS = [("titanic/titanic_20s.mp4", "Titanic"), ("office/office_edit.mp4", "Office"),
         ("supernatural/supernatural_edit.mp4", "Supernatural")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    ap.add_argument("--work", type=Path, default=Path("/tmp/castfinder-bench-ray"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--part-s", type=float, default=30.0)
    ap.add_argument("--channels", default="face,reid")
    ap.add_argument("--det-imgsz", type=int, default=384)
    ap.add_argument("--fps", type=float, default=1.0)
    args = ap.parse_args()

    from core import Engine, Settings
    from core.indexing.distributed import Film
    from core.indexing.ray_runner import RayRunner

    weights, data = args.shared / "weights", args.shared / "data"
    shutil.rmtree(args.work, ignore_errors=True)

    def settings(index_dir: Path) -> Settings:
        return Settings(_env_file=None, index_dir=index_dir, detector=str(weights / "person_yolov8s_falldet.pt"),
                        person_classes=[0, 1], models_dir=weights, device="cpu", channels=args.channels.split(","),
                        det_imgsz=args.det_imgsz, sample_fps=args.fps, ray_part_s=args.part_s)

    print(f"machine: {machine()}")
    print(f"settings: channels {args.channels}, det_imgsz {args.det_imgsz}, {args.fps} fps, "
          f"parts of {args.part_s:g} s, {args.workers} Ray workers")
    films = [(data / rel, name) for rel, name in CLIPS]

    t0 = time.perf_counter()
    single = Engine(settings(args.work / "single"), load_models=False)
    single_reports = {name: single.index(path, name) for path, name in films}
    single_s = time.perf_counter() - t0

    ray_settings = settings(args.work / "ray")
    t0 = time.perf_counter()
    runner = RayRunner(ray_settings, "local", workers=args.workers, cpus=args.workers)
    started_s = time.perf_counter() - t0
    with runner:
        runner.worker_names()  # every worker has loaded its models
        loaded_s = time.perf_counter() - t0 - started_s
        outcomes = Engine(ray_settings, load_models=False).index_films([Film(p, n) for p, n in films], runner)
        ray_s = time.perf_counter() - t0
    indexing_s = ray_s - started_s - loaded_s

    failed = [o for o in outcomes if o.error is not None]
    if failed:
        raise SystemExit(f"failed: {[(o.film.movie, str(o.error)) for o in failed]}")
    same = all(
        json.loads((o.report.movie.path / "manifest.json").read_text())["counts"]
        == json.loads((single_reports[o.film.movie].movie.path / "manifest.json").read_text())["counts"]
        for o in outcomes if o.report is not None)
    film_s = sum(r.movie.duration_s for r in single_reports.values())
    print(f"\nfilm: {film_s:.1f} s over {len(films)} clips")
    print(f"{'':28}{'one process':>14}{'Ray':>12}")
    print(f"{'wall time (s)':28}{single_s:14.1f}{ray_s:12.1f}")
    print(f"{'  starting Ray (s)':28}{'':14}{started_s:12.1f}")
    print(f"{'  workers loading models (s)':28}{'':14}{loaded_s:12.1f}")
    print(f"{'  indexing (s)':28}{single_s:14.1f}{indexing_s:12.1f}")
    print(f"{'× real time':28}{film_s / single_s:14.2f}{film_s / ray_s:12.2f}")
    print(f"same counts in every index: {same}")


if __name__ == "__main__":
    main()
