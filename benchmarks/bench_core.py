"""Indexing throughput and query latency of the engine, on the real footage in ../shared.

    HF_HUB_OFFLINE=1 YOLO_OFFLINE=1 .venv/bin/python benchmarks/bench_core.py [--shared ../shared] [--queries 20]

Prints the machine, then per source: frames/s and crops/s overall and per stage; then the
embedding cost of full-size DINOv2-small and CLIP ViT-B/16 architectures (random weights: the
real ones cannot be downloaded here, and the cost of a forward pass does not depend on the weights);
then query latency p50/p95 for 1 and 3 query images; then the projected cost of a 90-minute film.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="castfinder-yolo-"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from tests.tiny_models import save_clip, save_dinov2  # noqa: E402


def machine() -> str:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        total = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
        kb = int(total.split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, StopIteration):
        pass
    import torch

    return (f"{cpu} ({os.cpu_count()} logical CPUs{mem}), {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"CUDA {'yes' if torch.cuda.is_available() else 'no'}")


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    ap.add_argument("--queries", type=int, default=20, help="repetitions per latency figure")
    args = ap.parse_args()
    data, weights = args.shared / "data", args.shared / "weights"
    detector = weights / "person_yolov8s_falldet.pt"
    if not detector.is_file():
        print(f"needs {detector} (the real person detector); not found", file=sys.stderr)
        return 2

    from core import Engine, Settings

    print(f"machine: {machine()}")
    work = Path(tempfile.mkdtemp(prefix="castfinder-bench-"))
    tiny = save_dinov2(work / "tiny-dinov2")
    settings = Settings(_env_file=None, index_dir=work / "indexes", detector=str(detector), person_classes=[0, 1],
                        dinov2_model=str(tiny), device="cpu")
    engine = Engine(settings)
    print(f"detector: {detector.name} at imgsz {settings.det_imgsz}, batch {settings.det_batch}; "
          f"embedder: tiny random DINOv2 (32-d); sampling {settings.sample_fps} fps\n")

    per_frame_detect = []
    for label, source in (("GoldenEye frames (66 frames, 1280x544)", data / "goldeneye" / "frames"),
                          ("Titanic clip (20 s, 426x240, 23.976 fps)", data / "titanic" / "titanic_20s.mp4")):
        start = time.perf_counter()
        report = engine.index(source, label.split(" (")[0])
        wall = time.perf_counter() - start
        sec = report.seconds
        per_frame_detect.append(sec.get("detect", 0) / max(report.frames_sampled, 1))
        print(f"{label}: {report.shots} shots, {report.frames_sampled} frames, {report.persons_detected} people, "
              f"{report.crops_kept} kept after dedup")
        print(f"  total {wall:.1f} s = {report.frames_sampled / wall:.2f} frames/s, "
              f"{report.persons_detected / wall:.2f} crops/s")
        rates = {"decode": (report.frames_sampled, "sampled frames"), "detect": (report.frames_sampled, "frames")}
        embeds = [k for k in sec if k.startswith("embed_")]
        # The first channel embeds every detection; later ones only the crops kept after de-duplication.
        for k in embeds:
            rates[k] = (report.persons_detected if k == embeds[0] else report.crops_kept, "crops")
        for stage in ("shots", "decode", "detect", *embeds, "write"):
            t = sec.get(stage, 0.0)
            count, unit = rates.get(stage, (0, ""))
            if t > 0 and count:
                rate = f"{count / t:.1f} {unit}/s"
            else:
                rate = "(every frame of the video)" if stage == "shots" else ""
            print(f"  {stage:<13} {t:7.2f} s  {rate}")
        print()

    crops = [Image.fromarray(np.random.default_rng(i).integers(0, 255, (256, 128, 3), dtype=np.uint8))
             for i in range(64)]
    embed_rates = {}
    from core.models.embedders import make_embedder

    for kind, name, save in (("dinov2", "DINOv2-small (384-d, 224 px)", save_dinov2),
                             ("clip", "CLIP ViT-B/16 (512-d, 224 px)", save_clip)):
        emb = make_embedder(kind, str(save(work / f"full-{kind}", "full")), device="cpu", batch=32)
        emb.embed(crops[:8])  # warm-up
        start = time.perf_counter()
        emb.embed(crops)
        rate = len(crops) / (time.perf_counter() - start)
        embed_rates[kind] = rate
        print(f"embedding with the {name} architecture: {rate:.1f} crops/s")
    print()

    queries = [data / "goldeneye" / "queries" / f for f in ("boris_1.jpg", "natalya_1.jpg", "boris_2.jpg")]
    for n in (1, 3):
        times = []
        for _ in range(args.queries):
            start = time.perf_counter()
            engine.search("goldeneye", queries[:n], top=10)
            times.append((time.perf_counter() - start) * 1000)
        print(f"query latency, {n} image(s), GoldenEye index: p50 {pct(times, 50):.0f} ms, p95 {pct(times, 95):.0f} ms "
              f"(n={args.queries}, tiny embedder)")
    print()

    frames = 90 * 60 * settings.sample_fps
    detect_s = frames * statistics.mean(per_frame_detect)
    crops_per_frame = 1.5
    for kind, rate in embed_rates.items():
        embed_s = frames * crops_per_frame / rate
        print(f"90-minute film at {settings.sample_fps:g} fps = {frames:.0f} frames: "
              f"detection ≈ {detect_s / 3600:.1f} h, {kind} embedding of ≈{crops_per_frame} people/frame "
              f"≈ {embed_s / 3600:.1f} h on this machine")
    return 0


if __name__ == "__main__":
    sys.exit(main())
