"""Retrieval quality per configuration on every development clip, old default beside new.

    HF_HUB_OFFLINE=1 YOLO_OFFLINE=1 .venv/bin/python benchmarks/bench_quality.py [--shared ../shared] [--out DIR]

Clips (../shared/data): GoldenEye (frames folder), Titanic (video), the Office and Supernatural
TV edits (videos with many characters): 102 annotated shots, 10 characters. Builds the indexes the
configurations need, runs `castfinder eval --json` for every configuration × clip (the exact
command is printed with it) and prints Markdown tables: MAP per clip in both scoring views (per
indexed shot, as `castfinder eval` scores by default, and per annotated shot, where a merged shot
costs the annotated shots it swallowed), MAP over all characters, each character's AP and the
rank of its first true shot, and how the calibrated confidence holds at the bot's 50% line.
This is what docs/EVALUATION.md records.
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
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_core import machine  # noqa: E402  (one description of the machine for every benchmark)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="castfinder-yolo-"))


@dataclass(frozen=True)
class Config:
    label: str
    index: str  # which index (see INDEXES)
    search: tuple[str, ...] = ()  # extra `castfinder eval` flags


# Index name -> `castfinder index` flags. "old" is the configuration measured before the new models
# (OSNet body + YuNet/dlib faces); "new" holds every new channel so that each can be searched alone.
INDEXES = {
    "old": ("--channels", "osnet,face", "--face-detector", "yunet", "--face-model", "dlib"),
    "new": ("--channels", "reid,osnet,face"),
}
CONFIGS = [
    Config("old default: OSNet + YuNet/dlib face, fused", "old"),
    Config("old: face only (YuNet + dlib)", "old", ("--channels", "face")),
    Config("old: body only (OSNet)", "old", ("--channels", "osnet")),
    Config("new: face only (SCRFD + EdgeFace)", "new", ("--channels", "face")),
    Config("new: body only (reid-0277)", "new", ("--channels", "reid")),
    Config("new: body only (OSNet, same index)", "new", ("--channels", "osnet")),
    Config("new: EdgeFace + OSNet, fused", "new", ("--channels", "face,osnet")),
    Config("new default: EdgeFace + reid-0277, fused", "new", ("--channels", "face,reid")),
    Config("new default without propagation", "new", ("--channels", "face,reid", "--no-expand")),
]


def run(cmd: list[str], env: dict[str, str]) -> tuple[str, float]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {shlex.join(cmd)}\n{proc.stderr[-3000:]}")
    return proc.stdout, time.perf_counter() - start


def clips(data: Path, out: Path) -> dict[str, tuple[Path, Path, Path]]:
    """Movie name -> (source, ground truth, queries folder)."""
    # Titanic's reference images are named by kind; eval wants <character>_*.jpg.
    tq = out / "titanic_queries"
    tq.mkdir(parents=True, exist_ok=True)
    for src in ("portrait_jack", "body_jack", "portrait_rose", "body_rose", "face_rose"):
        kind, who = src.split("_")
        link = tq / f"{who}_{kind}.jpg"
        if not link.exists():
            link.symlink_to(data / "titanic" / f"{src}.jpg")
    return {
        "GoldenEye": (data / "goldeneye" / "frames", data / "goldeneye" / "ground_truth.csv",
                      data / "goldeneye" / "queries"),
        "Titanic": (data / "titanic" / "titanic_20s.mp4", data / "titanic" / "ground_truth.csv", tq),
        "Office": (data / "office" / "office_edit.mp4", data / "office" / "ground_truth.csv",
                   data / "office" / "queries"),
        "Supernatural": (data / "supernatural" / "supernatural_edit.mp4", data / "supernatural" / "ground_truth.csv",
                         data / "supernatural" / "queries"),
    }


def _percentile(values: list[float], p: float) -> str:
    """The p-th percentile (nearest rank below) of `values`, for a table cell; "–" when empty."""
    if not values:
        return "–"
    return f"{sorted(values)[min(len(values) - 1, int(p / 100 * len(values)))]:.2f}"


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    ap.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="castfinder-quality-")))
    ap.add_argument("--configs", help="comma list of configuration numbers to run (1-based); default all")
    args = ap.parse_args()
    shared = args.shared.resolve()
    data, weights = shared / "data", shared / "weights"
    out = args.out.resolve()
    movies = clips(data, out)
    configs = CONFIGS if not args.configs else [CONFIGS[int(i) - 1] for i in args.configs.split(",")]
    # Only what the product's contract needs: the models folder, the detector and its classes.
    env = {**os.environ, "CASTFINDER_MODELS_DIR": str(weights),
           "CASTFINDER_DETECTOR": str(weights / "person_yolov8s_falldet.pt"), "CASTFINDER_PERSON_CLASSES": "0,1",
           "CASTFINDER_DEVICE": "cpu"}
    cli = [sys.executable, "-m", "castfinder"]
    print(f"Machine: {machine()}")
    print(f"Settings: CASTFINDER_MODELS_DIR={weights} CASTFINDER_DETECTOR=…/person_yolov8s_falldet.pt "
          "CASTFINDER_PERSON_CLASSES=0,1 (everything else default)\n")
    needed = {c.index for c in configs}
    index_seconds: dict[tuple[str, str], dict] = {}
    for movie, (source, _, _) in movies.items():
        for name in needed:
            index_dir = out / "indexes" / name
            cmd = [*cli, "index", str(source), "--movie", movie, "--index-dir", str(index_dir), "--quiet", "--json",
                   *INDEXES[name]]
            manifest = index_dir / movie.lower() / "manifest.json"
            if manifest.is_file() and os.environ.get("CASTFINDER_BENCH_REUSE"):
                report = {"persons_detected": None, "seconds": json.loads(manifest.read_text()).get("seconds", {})}
                wall = float("nan")
            else:
                stdout, wall = run(cmd, env)
                report = json.loads(stdout)
            index_seconds[(movie, name)] = report["seconds"]
            print(f"index {movie} [{name}]: {report['persons_detected']} people, {wall:.1f} s wall; stages "
                  + ", ".join(f"{k} {v:.1f}" for k, v in report["seconds"].items())
                  + f"\n  $ {shlex.join(cmd)}", flush=True)
    print()
    reports: dict[tuple[str, str], dict] = {}
    commands: list[str] = []
    for config in configs:
        for movie, (_, gt, queries) in movies.items():
            cmd = [*cli, "eval", "--movie", movie, "--ground-truth", str(gt), "--queries", str(queries),
                   "--index-dir", str(out / "indexes" / config.index), "--top", "50", "--json", "--quiet",
                   *config.search]
            stdout, _ = run(cmd, env)
            reports[(config.label, movie)] = json.loads(stdout)
            commands.append(f"- {config.label}, {movie}: `{shlex.join(cmd)}`")
        print(f"done: {config.label}", flush=True)

    names = list(movies)
    print("\n## MAP per clip: per indexed shot / per annotated shot\n")
    print("| configuration | " + " | ".join(names) + " | all 10 characters | worst character | first true shot ≤ 3 |")
    print("|---|" + "---|" * (len(names) + 3))
    for config in configs:
        cells, aps, aps_ann, firsts, worst = [], [], [], [], None
        for movie in names:
            r = reports[(config.label, movie)]
            s = r["summary"]
            cells.append(f"{_fmt(s['map'])} / {_fmt(s.get('map_annotated'))}")
            for cname, c in r["characters"].items():
                ann = c.get("annotated", {})
                a = ann.get("ap", c["ap"])
                if a is None:
                    continue
                aps.append(c["ap"])
                aps_ann.append(a)
                firsts.append(ann.get("first_rank", c.get("first_rank")))
                if worst is None or a < worst[1]:
                    worst = (cname, a)
        mean = sum(aps) / len(aps)
        mean_ann = sum(aps_ann) / len(aps_ann)
        top3 = sum(1 for f in firsts if f is not None and f <= 3)
        print(f"| {config.label} | " + " | ".join(cells)
              + f" | **{mean:.3f} / {mean_ann:.3f}** | {worst[0]} {worst[1]:.3f} | {top3}/{len(firsts)} |")

    print("\n## Per character (AP per indexed shot / per annotated shot, rank of the first true shot)\n")
    chars = [(movie, cname) for movie in names for cname in reports[(configs[0].label, movie)]["characters"]]
    print("| configuration | " + " | ".join(c for _, c in chars) + " |")
    print("|---|" + "---|" * len(chars))
    for config in configs:
        cells = []
        for movie, cname in chars:
            c = reports[(config.label, movie)]["characters"][cname]
            ann = c.get("annotated", {})
            cells.append(f"{_fmt(c['ap'])} / {_fmt(ann.get('ap'))} · #{ann.get('first_rank', c.get('first_rank'))}")
        print(f"| {config.label} | " + " | ".join(cells) + " |")

    print("\n## Confidence at the bot's 50% line (all clips together)\n")
    print("| configuration | results ≥ 50% | precision / recall per indexed shot "
          "| precision / recall per annotated shot |")
    print("|---|---|---|---|")
    for config in configs:
        sure = right = relevant = 0
        a_sure = a_right = a_relevant = 0
        for movie in names:
            for c in reports[(config.label, movie)]["characters"].values():
                ranked = [x for x in c["ranking"] if x["confidence"] >= 0.5 and x["label"] != "ignored"]
                sure += len(ranked)
                right += sum(x["label"] == "relevant" for x in ranked)
                relevant += c["relevant"]
                ann = c.get("annotated")
                if ann:
                    confident = {x["shot_id"] for x in c["ranking"] if x["confidence"] >= 0.5}
                    labels = [x["label"] for x in ann["ranking"]
                              if x["shot_id"] in confident and x["label"] != "ignored"]
                    a_sure += len(labels)
                    a_right += labels.count("relevant")
                    a_relevant += ann["relevant"]
        prec = f"{right / sure:.2f}" if sure else "–"
        a_prec = f"{a_right / a_sure:.2f}" if a_sure else "–"
        print(f"| {config.label} | {sure} | {prec} / {right / max(relevant, 1):.2f} | "
              f"{a_prec} / {a_right / max(a_relevant, 1):.2f} |")

    print("\n## Where true and false matches fall (confidence of each ranked shot, all clips together)\n")
    print("| configuration | true shots: 10th / 50th percentile | other shots: 90th / 99th percentile "
          "| true ≥ 50% | other ≥ 50% |")
    print("|---|---|---|---|---|")
    for config in configs:
        true, other = [], []
        for movie in names:
            for c in reports[(config.label, movie)]["characters"].values():
                for x in c["ranking"]:
                    if x["label"] != "ignored":
                        (true if x["label"] == "relevant" else other).append(x["confidence"])
        q = _percentile
        print(f"| {config.label} | {q(true, 10)} / {q(true, 50)} | {q(other, 90)} / {q(other, 99)} | "
              f"{sum(v >= 0.5 for v in true) / max(len(true), 1):.2f} "
              f"| {sum(v >= 0.5 for v in other) / max(len(other), 1):.3f} |")

    print("\n## Indexing stage seconds\n")
    for (movie, name), seconds in index_seconds.items():
        print(f"- {movie} [{name}]: " + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))
    print("\nCommands (index folders under " + str(out / "indexes") + "):\n" + "\n".join(commands))
    return 0


if __name__ == "__main__":
    sys.exit(main())
