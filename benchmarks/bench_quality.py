"""Retrieval quality and speed per configuration, on GoldenEye (frames) and Titanic (video).

    HF_HUB_OFFLINE=1 YOLO_OFFLINE=1 .venv/bin/python benchmarks/bench_quality.py [--shared ../shared] [--out DIR]

Builds the indexes each configuration needs, runs `castfinder eval --json` for every row (the
exact command is printed with it), and prints a Markdown table: MAP, and AP / P@5 / R@10 per
character, plus indexing crops/s and query latency p50 of the configuration. This is what
docs/EVALUATION.md records.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="castfinder-yolo-"))
sys.path.insert(0, str(REPO))


@dataclass(frozen=True)
class Row:
    label: str
    index: str  # which index (see INDEXES)
    search: tuple[str, ...]  # extra `castfinder eval` flags


# index name -> `castfinder index` flags
INDEXES = {
    "osnet": ("--channels", "osnet"),
    "osnet-nodedup": ("--channels", "osnet", "--no-dedup"),
    "osnet-dedup90": ("--channels", "osnet", "--dedup-threshold", "0.90"),
    "fused": ("--channels", "osnet,face"),
}
ROWS = [
    Row("baseline: body (OSNet) only, max", "osnet", ()),
    Row("+ no de-duplication", "osnet-nodedup", ()),
    Row("+ de-duplication at 0.90", "osnet-dedup90", ()),
    Row("body only, frequency", "osnet", ("--aggregation", "frequency")),
    Row("body only, RRF", "osnet", ("--aggregation", "rrf")),
    Row("face only", "fused", ("--channels", "face")),
    Row("face + body fused, per crop", "fused", ("--no-tracks",)),
    Row("face + body fused, + tracks (default)", "fused", ()),
]


def run(cmd: list[str], env: dict[str, str]) -> tuple[str, float]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {shlex.join(cmd)}\n{proc.stderr[-3000:]}")
    return proc.stdout, time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    ap.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="castfinder-quality-")))
    args = ap.parse_args()
    shared = args.shared.resolve()
    data, weights = shared / "data", shared / "weights"
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    # Titanic's reference images are named by kind; eval wants <character>_*.jpg.
    tq = out / "titanic_queries"
    tq.mkdir(exist_ok=True)
    for src in ("portrait_jack", "body_jack", "portrait_rose", "body_rose", "face_rose"):
        kind, who = src.split("_")
        link = tq / f"{who}_{kind}.jpg"
        if not link.exists():
            link.symlink_to(data / "titanic" / f"{src}.jpg")
    env = {**os.environ,
           "CASTFINDER_DETECTOR": str(weights / "person_yolov8s_falldet.pt"), "CASTFINDER_PERSON_CLASSES": "0,1",
           "CASTFINDER_OSNET_MODEL": str(weights / "osnet_x0_25_msmt17.onnx"),
           "CASTFINDER_FACE_DETECTOR": str(weights / "face_detection_yunet.onnx"), "CASTFINDER_DEVICE": "cpu"}
    cli = [sys.executable, "-m", "castfinder"]
    movies = {
        "GoldenEye": (data / "goldeneye" / "frames", data / "goldeneye" / "ground_truth.csv", data / "goldeneye" / "queries"),
        "Titanic": (data / "titanic" / "titanic_20s.mp4", data / "titanic" / "ground_truth.csv", tq),
    }
    print("Settings: CASTFINDER_DETECTOR=…/person_yolov8s_falldet.pt CASTFINDER_PERSON_CLASSES=0,1 "
          "CASTFINDER_OSNET_MODEL=…/osnet_x0_25_msmt17.onnx CASTFINDER_FACE_DETECTOR=…/face_detection_yunet.onnx\n")
    index_speed: dict[tuple[str, str], float] = {}
    for movie, (source, _, _) in movies.items():
        for name, flags in INDEXES.items():
            index_dir = out / "indexes" / name
            cmd = [*cli, "index", str(source), "--movie", movie, "--index-dir", str(index_dir), "--quiet", "--json", *flags]
            stdout, wall = run(cmd, env)
            report = json.loads(stdout)
            index_speed[(movie, name)] = report["persons_detected"] / wall
            print(f"index {movie} [{name}]: {report['persons_detected']} people, {report['crops_kept']} kept, "
                  f"{wall:.1f} s wall ({index_speed[(movie, name)]:.1f} crops/s)\n  $ {shlex.join(cmd)}", flush=True)
    print()
    from core import Engine, QueryImage, Settings

    header = ("| configuration | movie | MAP | per character: AP · P@5 · R@10 | confidence ≥ 0.5: precision · recall "
              "| index crops/s | query p50 |\n|---|---|---|---|---|---|---|")
    lines = [header]
    commands = []
    for row in ROWS:
        for movie, (_, gt, queries) in movies.items():
            index_dir = out / "indexes" / row.index
            cmd = [*cli, "eval", "--movie", movie, "--ground-truth", str(gt), "--queries", str(queries),
                   "--index-dir", str(index_dir), "--top", "20", "--json", *row.search]
            stdout, _ = run(cmd, env)
            report = json.loads(stdout)
            per = "; ".join(f"{name} {c['ap']:.3f} · {c['precision']['5']:.2f} · {c['recall']['10']:.2f}"
                            for name, c in report["characters"].items())
            # Does the calibrated confidence mean what it says? Results at ≥ 50%: how many are right,
            # and how many of the character's shots get there.
            sure = [r for c in report["characters"].values() for r in c["ranking"]
                    if r["confidence"] >= 0.5 and r["label"] != "ignored"]
            right = sum(r["label"] == "relevant" for r in sure)
            relevant = sum(c["relevant"] for c in report["characters"].values())
            calib = f"{right / len(sure):.2f} · {right / relevant:.2f}" if sure else "– · 0.00"
            # Query latency of this configuration, in-process, models warm.
            settings = Settings(_env_file=None, index_dir=index_dir, detector=env["CASTFINDER_DETECTOR"],
                                person_classes=[0, 1], osnet_model=env["CASTFINDER_OSNET_MODEL"],
                                face_detector=env["CASTFINDER_FACE_DETECTOR"], device="cpu",
                                tracks="--no-tracks" not in row.search,
                                aggregation=(row.search[1] if row.search[:1] == ("--aggregation",) else "max"))
            engine = Engine(settings, load_models=False)
            channels = [row.search[1]] if row.search[:1] == ("--channels",) else None
            images = sorted(p for p in queries.iterdir())[:2]
            times = []
            for i in range(7):
                start = time.perf_counter()
                engine.search(movie, [QueryImage(p) for p in images], top=20, channels=channels)
                if i:  # the first call loads the models
                    times.append(time.perf_counter() - start)
            p50 = sorted(times)[len(times) // 2] * 1000
            lines.append(f"| {row.label} | {movie} | **{report['summary']['map']:.3f}** | {per} | {calib} | "
                         f"{index_speed[(movie, row.index)]:.1f} | {p50:.0f} ms |")
            commands.append(f"- {row.label}, {movie}: `{shlex.join(cmd)}`")
            print(lines[-1], flush=True)
    print("\n" + "\n".join(lines))
    print("\nCommands (index folders under " + str(out / "indexes") + "):\n" + "\n".join(commands))
    return 0


if __name__ == "__main__":
    sys.exit(main())
