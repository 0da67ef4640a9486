"""Indexing speed of an old pipeline (commit d976d54 unless --old) beside the new one (the working tree), and their MAP.

    HF_HUB_OFFLINE=1 YOLO_OFFLINE=1 .venv/bin/python benchmarks/bench_index.py [--shared ../shared] \
        [--work /tmp/castfinder-bench] [--old REV] [--long [--long-old]] [--slow] [--only old|new] [--no-quality] \
        [--footage dev720|goldeneye] [--json OUT]

Footage (built once with the ffmpeg of the `imageio-ffmpeg` package, then reused from --work):
`dev720.mp4` is the Office, Supernatural and GoldenEye (10 s, variable frame rate) clips one after
the other, each scaled to fit 1280×720 with black bars, 24 fps, x264 crf 20 (≈ 100 s);
`long30.mp4` (--long) is dev720 looped to 30 minutes; `slow720.mp4` (--slow) is Titanic and GoldenEye
at 720p looped to 2 minutes, a film cut every 5 s. `--footage goldeneye` indexes the raw 10 s
GoldenEye clip instead of dev720 (a smoke test; no ffmpeg needed).

The old code is a detached git worktree of the old revision in <work>/old-<rev> (d976d54, the
pipeline before the one-pass reading; e42d0e2 is the one before the OpenVINO detector); the new code is this checkout's
working tree (uncommitted changes included). Each `castfinder index <video> --json` runs from
scratch in its own process with only the product's contract set (models folder, detector and its
classes, an index folder): every other CASTFINDER_* setting of the caller is removed, so each
pipeline runs its own default channels and settings. Measured: wall time of the process, × real
time (video duration / wall), peak RSS of the process tree (sampled every 0.2 s) and the report's
per-stage seconds. Files that appear next to the weights or in the model cache during a run are
reported (a one-time model export). Then, unless --no-quality, MAP per clip (GoldenEye frames,
Office, Supernatural; both scoring views of `castfinder eval`) for each pipeline's defaults.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_core import machine  # noqa: E402  (one description of the machine for every benchmark)
from bench_quality import _fmt, clips  # noqa: E402
from bench_quality import run as run_cli  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OLD_COMMIT = "d976d54"  # the default --old
DETECTOR = "person_yolov8s_falldet.pt"
QUALITY_CLIPS = ("GoldenEye", "Titanic", "Office", "Supernatural")
QUERY_AT_S = 52.0  # the dev720 frame used as a one-screenshot query (Supernatural, two people)
DEV_CLIPS = ("office/office_edit.mp4", "supernatural/supernatural_edit.mp4", "goldeneye/goldeneye_10s_vfr.mp4")
# A film cut at a drama's pace (5 s a shot, not the fan edits' 1.3 s): Titanic and GoldenEye at
# 720p, looped to SLOW_S.
SLOW_CLIPS = ("titanic/titanic_20s.mp4", "goldeneye/goldeneye_10s_vfr.mp4")
SLOW_S = 120
# The table's columns; the rest of the wall time is "other". "decode" is the main thread waiting for
# frames in pipelines up to d976d54, and the reading thread's own busy time (beside the rest) after
# it, whose main thread waits in "wait".
STAGES = ("detect", "embed_face", "embed_reid", "shots", "decode", "wait")
LONG_S = 1800


# --- footage -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VideoInfo:
    duration_s: float
    width: int
    height: int
    fps: float | None


def find_ffmpeg() -> tuple[str | None, str]:
    """The ffmpeg of the imageio-ffmpeg package, or None and why not."""
    try:
        import imageio_ffmpeg
    except ImportError:
        return None, "the imageio-ffmpeg package is not installed (pip install -e '.[test]')"
    try:
        return imageio_ffmpeg.get_ffmpeg_exe(), ""
    except RuntimeError as exc:  # no binary for this platform and none on PATH
        return None, f"imageio-ffmpeg has no ffmpeg binary here: {exc}"


def probe(ffmpeg: str, path: Path) -> VideoInfo:
    """Duration, size and frame rate of a video's first video stream, from `ffmpeg -i`."""
    text = subprocess.run([ffmpeg, "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr
    duration = re.search(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)", text)
    video = re.search(r"Video: .*?, (\d{2,5})x(\d{2,5})", text)
    if not duration or not video:
        raise SystemExit(f"cannot read the duration or size of {path}:\n{text[-2000:]}")
    h, m, s = duration.groups()
    fps = re.search(r"Video: .*?([\d.]+) fps", text)
    return VideoInfo(int(h) * 3600 + int(m) * 60 + float(s), int(video[1]), int(video[2]),
                     float(fps[1]) if fps else None)


def _ffmpeg(ffmpeg: str, args: list[str], out: Path) -> Path:
    """Run ffmpeg into a temporary name and rename it: an interrupted build is never reused."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".partial-{out.name}")
    cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", *args, str(partial)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        partial.unlink(missing_ok=True)
        raise SystemExit(f"ffmpeg failed: {shlex.join(cmd)}\n{proc.stderr[-3000:]}")
    partial.replace(out)
    return out


def make_720p(ffmpeg: str, sources: list[Path], out: Path, fps: int = 24) -> Path:
    """`sources` one after the other, each scaled to fit 1280×720 with black bars, `fps` frames per
    second, x264 crf 20 yuv420p, no audio."""
    chains = [f"[{i}:v]fps={fps},scale=1280:720:force_original_aspect_ratio=decrease,"
              f"pad=1280:720:(ow-iw)/2:(oh-ih)/2,setsar=1[v{i}]" for i in range(len(sources))]
    concat = "".join(f"[v{i}]" for i in range(len(sources))) + f"concat=n={len(sources)}:v=1:a=0[v]"
    inputs = [arg for src in sources for arg in ("-i", str(src))]
    return _ffmpeg(ffmpeg, [*inputs, "-filter_complex", ";".join([*chains, concat]), "-map", "[v]",
                            "-c:v", "libx264", "-preset", "medium", "-crf", "20", "-pix_fmt", "yuv420p"], out)


def loop_to(ffmpeg: str, src: Path, out: Path, seconds: float) -> Path:
    """`src` repeated (stream copy, no re-encoding) and cut at `seconds`."""
    loops = math.ceil(seconds / probe(ffmpeg, src).duration_s)
    return _ffmpeg(ffmpeg, ["-stream_loop", str(loops), "-i", str(src), "-t", str(seconds), "-c", "copy"], out)


def footage(args: argparse.Namespace, data: Path, ffmpeg: str | None, why: str) -> list[tuple[Path, bool]]:
    """The videos to index, each with whether the old pipeline runs on it too."""
    videos: list[tuple[Path, bool]] = []
    if args.footage == "goldeneye":
        videos.append((data / "goldeneye" / "goldeneye_10s_vfr.mp4", True))
    if args.footage == "dev720" or args.long or args.slow:
        if ffmpeg is None:
            print(f"Skipping the 720p reels: {why}\n")
            return videos
        dev = args.work / "dev720.mp4"
        if not dev.is_file():
            print(f"building {dev} …", flush=True)
            make_720p(ffmpeg, [data / clip for clip in DEV_CLIPS], dev)
        if args.footage == "dev720":
            videos.append((dev, True))
        if args.slow:
            slow = args.work / "slow720.mp4"
            if not slow.is_file():
                print(f"building {slow} …", flush=True)
                part = make_720p(ffmpeg, [data / clip for clip in SLOW_CLIPS], args.work / "slow720-once.mp4")
                loop_to(ffmpeg, part, slow, SLOW_S)
            videos.append((slow, True))
        if args.long:
            long = args.work / "long30.mp4"
            if not long.is_file():
                print(f"building {long} …", flush=True)
                loop_to(ffmpeg, dev, long, LONG_S)
            videos.append((long, args.long_old))
    return videos


# --- the two pipelines ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Pipeline:
    label: str  # "old" or "new"
    root: Path  # the folder holding its castfinder/ and core/ packages
    revision: str
    quiet: bool = True  # whether its CLI has --quiet
    package: str = ""  # castfinder.__file__ as that CLI imports it

    def cli(self, *args: str) -> list[str]:
        """The castfinder CLI of this checkout, whatever the venv's editable install points at."""
        code = f"import sys; sys.path.insert(0, {str(self.root)!r}); from castfinder.cli import main; sys.exit(main())"
        return [sys.executable, "-c", code, *args]


def _git(*args: str, cwd: Path = REPO) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, check=True).stdout.strip()


def old_worktree(work: Path, rev: str) -> Path:
    """A detached worktree of `rev` in <work>/old-<rev>, made once."""
    path = work / f"old-{rev}"
    if not (path / ".git").exists():
        proc = subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "--force", str(path), rev],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"cannot make the old worktree in {path}:\n{proc.stderr}")
    head = _git("rev-parse", "HEAD", cwd=path)
    if not head.startswith(_git("rev-parse", rev)):
        raise SystemExit(f"{path} is at {head[:7]}, not {rev}; remove it (git worktree remove {path})")
    return path


def new_revision() -> str:
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    return f"working tree at {_git('rev-parse', '--short', 'HEAD')}" + (" + uncommitted changes" if dirty else "")


def pipeline_env(shared: Path, index_dir: Path, yolo_dir: Path) -> dict[str, str]:
    """The caller's environment without its CASTFINDER_* settings, plus the product's contract."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASTFINDER_")}
    weights = shared / "weights"
    yolo_dir.mkdir(parents=True, exist_ok=True)
    return {**env, "HF_HUB_OFFLINE": "1", "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(yolo_dir),
            "CASTFINDER_MODELS_DIR": str(weights), "CASTFINDER_DETECTOR": str(weights / DETECTOR),
            "CASTFINDER_PERSON_CLASSES": "0,1", "CASTFINDER_INDEX_DIR": str(index_dir)}


def checked(p: Pipeline, env: dict[str, str]) -> Pipeline:
    """Fail unless the pipeline imports its own packages; note whether `index` has --quiet."""
    probe_code = (f"import sys; sys.path.insert(0, {str(p.root)!r}); import castfinder, core; "
                  "print(castfinder.__file__); print(core.__file__); "
                  "from castfinder.cli import main; main(['index', '--help'])")
    proc = subprocess.run([sys.executable, "-c", probe_code], capture_output=True, text=True, env=env)
    files = proc.stdout.splitlines()[:2]
    if len(files) < 2 or not all(Path(f).resolve().is_relative_to(p.root.resolve()) for f in files):
        raise SystemExit(f"the {p.label} pipeline imports {files or proc.stderr[-2000:]}, not the code in {p.root}")
    return Pipeline(p.label, p.root, p.revision, quiet="--quiet" in proc.stdout, package=files[0])


# --- measuring one index build -------------------------------------------------------------------

@dataclass
class IndexRun:
    pipeline: str
    footage: str
    duration_s: float
    wall_s: float
    peak_rss: int
    report: dict
    created: list[str] = field(default_factory=list)  # files that appeared beside the weights or in the cache
    command: str = ""

    @property
    def seconds(self) -> dict[str, float]:
        return self.report.get("seconds", {})

    @property
    def other_s(self) -> float:
        return self.wall_s - sum(self.seconds.get(stage, 0.0) for stage in STAGES)


def tree_rss(root: psutil.Process) -> int:
    """Resident memory of a process and all its children, in bytes (0 once it is gone)."""
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def run_measured(cmd: list[str], env: dict[str, str], log: Path) -> tuple[str, float, int]:
    """Run `cmd` to the end; its stdout, wall seconds and peak tree RSS. Output goes to files (a full
    pipe would stall the child while we poll); stderr is kept in `log`."""
    out = log.with_suffix(".out")
    with open(out, "w") as stdout, open(log, "w") as stderr:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=stderr, env=env)
        root, peak = psutil.Process(proc.pid), 0
        try:
            while True:
                peak = max(peak, tree_rss(root))
                try:
                    proc.wait(timeout=0.2)
                    break
                except subprocess.TimeoutExpired:
                    pass
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {shlex.join(cmd)}\n{log.read_text()[-3000:]}")
    return out.read_text(), wall, peak


def snapshot(folders: list[Path]) -> dict[str, tuple[float, int]]:
    """Path -> (mtime, size) of every file under `folders`."""
    files: dict[str, tuple[float, int]] = {}
    for folder in folders:
        for path in folder.rglob("*") if folder.is_dir() else ():
            if path.is_file():
                st = path.stat()
                files[str(path)] = (st.st_mtime, st.st_size)
    return files


def _entry(path: str, folders: list[Path]) -> str:
    """The folder or file directly inside a watched folder that holds `path` (an export's folder)."""
    for folder in sorted(folders, key=lambda f: len(f.parts), reverse=True):  # the innermost folder
        if Path(path).is_relative_to(folder):
            return str(folder / Path(path).relative_to(folder).parts[0])
    return path


def measure_index(p: Pipeline, video: Path, env: dict[str, str], work: Path, duration_s: float | None,
                  watched: list[Path]) -> IndexRun:
    index_dir = Path(env["CASTFINDER_INDEX_DIR"])
    shutil.rmtree(index_dir, ignore_errors=True)  # from scratch; the model export cache is elsewhere
    cmd = p.cli("index", str(video), "--movie", f"bench-{p.label}", "--json", *(["--quiet"] if p.quiet else []))
    before = snapshot(watched)
    print(f"index {video.name} [{p.label}] …", flush=True)
    stdout, wall, peak = run_measured(cmd, env, work / "logs" / f"index-{p.label}-{video.stem}.err")
    after = snapshot(watched)
    report = json.loads(stdout)
    created = sorted({_entry(path, watched) for path, stat in after.items() if before.get(path) != stat})
    return IndexRun(p.label, video.name, duration_s or report["duration_s"], wall, peak, report, created,
                    shlex.join(cmd))


# --- quality -------------------------------------------------------------------------------------

def quality(p: Pipeline, shared: Path, work: Path) -> dict[str, dict]:
    """Clip -> {"map", "map_annotated", "index_s"} for the pipeline's default index and search."""
    index_dir = work / f"quality-{p.label}"
    shutil.rmtree(index_dir, ignore_errors=True)
    env = pipeline_env(shared, index_dir, work / f"yolo-{p.label}")
    quiet = ["--quiet"] if p.quiet else []
    movies = clips(shared / "data", work / "quality-queries")
    results: dict[str, dict] = {}
    for movie in QUALITY_CLIPS:
        source, gt, queries = movies[movie]
        print(f"quality {movie} [{p.label}] …", flush=True)
        _, index_s = run_cli(p.cli("index", str(source), "--movie", movie, "--json", *quiet), env)
        stdout, _ = run_cli(p.cli("eval", "--movie", movie, "--ground-truth", str(gt), "--queries", str(queries),
                                  "--top", "50", "--json", *quiet), env)
        report = json.loads(stdout)
        summary = report["summary"]
        aps = [(c["ap"], c.get("annotated", {}).get("ap", c["ap"])) for c in report["characters"].values()
               if c["ap"] is not None]
        results[movie] = {"map": summary["map"], "map_annotated": summary.get("map_annotated"), "index_s": index_s,
                          "aps": aps}
    return results


# --- query latency -------------------------------------------------------------------------------

_LATENCY = """
import json, sys, time
sys.path.insert(0, {root!r})
from core import Engine, Settings
engine = Engine(Settings())
images = [{image!r}]
engine.search({movie!r}, images, top=10)  # warm: models loaded, index cached
times = []
for _ in range({n}):
    start = time.perf_counter()
    engine.search({movie!r}, images, top=10)
    times.append(time.perf_counter() - start)
times.sort()
print(json.dumps({{"p50": times[len(times) // 2], "p95": times[min(len(times) - 1, round(0.95 * len(times)))]}}))
"""


def query_frame(video: Path, out: Path, at_s: float = QUERY_AT_S) -> Path | None:
    """A full frame of the footage saved as a JPEG: a screenshot as a user would send it."""
    import cv2

    cap = cv2.VideoCapture(str(video))
    cap.set(cv2.CAP_PROP_POS_MSEC, at_s * 1000)
    ok, bgr = cap.read()
    cap.release()
    if not ok:
        return None
    cv2.imwrite(str(out), bgr)
    return out


def query_latency(p: Pipeline, env: dict[str, str], image: Path, n: int = 20) -> dict[str, float]:
    """p50 and p95 seconds of one warm search with one screenshot, in the pipeline's own engine."""
    code = _LATENCY.format(root=str(p.root), image=str(image), movie=f"bench-{p.label}", n=n)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"query latency [{p.label}] failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- output --------------------------------------------------------------------------------------

def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 600 else f"{seconds / 60:.1f} min"


def _bytes(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def print_speed(runs: list[IndexRun]) -> None:
    print("\n## Indexing speed\n")
    print("| pipeline | footage | duration | wall | × real time | frames sampled | people | crops kept | shots | "
          "peak RSS | " + " | ".join("shots pass" if st == "shots" else st for st in STAGES) + " | other |")
    print("|---|---|---|---|---|---|---|---|---|---|" + "---|" * (len(STAGES) + 1))
    for r in runs:
        rep = r.report
        stages = " | ".join(f"{r.seconds[s]:.1f}" if s in r.seconds else "–" for s in STAGES)
        print(f"| {r.pipeline} | {r.footage} | {_duration(r.duration_s)} | {_duration(r.wall_s)} | "
              f"{r.duration_s / r.wall_s:.2f} | {rep.get('frames_sampled')} | {rep.get('persons_detected')} | "
              f"{rep.get('crops_kept')} | {rep.get('shots')} | {_bytes(r.peak_rss)} | {stages} | {r.other_s:.1f} |")
    print("\nStage seconds are the index report's; other = wall − those columns (start-up, model loading and the "
          "report's other stages; negative where stages overlap: the one-pass reading thread's decode runs "
          "beside detection). The report's other stages:")
    for r in runs:
        rest = {k: v for k, v in r.seconds.items() if k not in STAGES}
        print(f"- {r.pipeline}, {r.footage}: " + (", ".join(f"{k} {v:.1f}" for k, v in rest.items()) or "none"))
    print()
    firsts: dict[str, IndexRun] = {}
    for r in runs:
        first = firsts.setdefault(r.pipeline, r) is r
        if first or r.created:
            note = ("yes, it wrote " + ", ".join(r.created) if r.created else
                    "no (nothing appeared beside the weights or in the model cache: any export was made before)")
            print(f"One-time model export in the {'first ' if first else ''}{r.pipeline} run ({r.footage}): {note}")


def print_quality(results: dict[str, dict[str, dict]]) -> None:
    def cell(label: str, movie: str, key: str) -> float | None:
        return results.get(label, {}).get(movie, {}).get(key)

    def diff(movie: str, key: str) -> str:
        old, new = cell("old", movie, key), cell("new", movie, key)
        return "–" if old is None or new is None else f"{new - old:+.3f}"

    print("\n## MAP per clip (each pipeline's default channels and search)\n")
    print("| clip | old, per indexed shot | new | new − old | old, per annotated shot | new | new − old |")
    print("|---|---|---|---|---|---|---|")
    for movie in QUALITY_CLIPS:
        cells = [f"{_fmt(cell('old', movie, key))} | {_fmt(cell('new', movie, key))} | {diff(movie, key)}"
                 for key in ("map", "map_annotated")]
        print(f"| {movie} | " + " | ".join(cells) + " |")
    # MAP over every character of the four clips (each character counts once, whatever its clip).
    overall = {label: [sum(v) / len(v) for v in zip(*[ap for r in per.values() for ap in r["aps"]])]
               for label, per in results.items() if any(r["aps"] for r in per.values())}
    n = max((sum(len(r["aps"]) for r in per.values()) for per in results.values()), default=0)
    cells = []
    for view in (0, 1):
        old, new = (overall.get(label, [None, None])[view] for label in ("old", "new"))
        cells.append(f"{_fmt(old)} | {_fmt(new)} | " + ("–" if old is None or new is None else f"{new - old:+.3f}"))
    print(f"| all {n} characters | " + " | ".join(cells) + " |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    ap.add_argument("--work", type=Path, default=Path("/tmp/castfinder-bench"),
                    help="cache of footage, the old worktree, indexes and logs (default /tmp/castfinder-bench)")
    ap.add_argument("--footage", choices=("dev720", "goldeneye"), default="dev720",
                    help="dev720: the ≈100 s 720p development reel (default); "
                         "goldeneye: the raw 10 s clip (smoke test)")
    ap.add_argument("--long", action="store_true", help="also index the 30-minute reel (new pipeline only)")
    ap.add_argument("--slow", action="store_true",
                    help=f"also index slow720.mp4, Titanic and GoldenEye at 720p looped to {SLOW_S} s (5 s a shot)")
    ap.add_argument("--long-old", action="store_true", help="with --long: the old pipeline indexes it too")
    ap.add_argument("--only", choices=("old", "new"), help="run one pipeline")
    ap.add_argument("--old", default=OLD_COMMIT, metavar="REV",
                    help=f"the old pipeline's commit (default {OLD_COMMIT})")
    ap.add_argument("--no-quality", action="store_true", help="skip MAP on the development clips")
    ap.add_argument("--json", type=Path, metavar="OUT", help="also write the raw figures here")
    args = ap.parse_args()
    args.shared, args.work = args.shared.resolve(), args.work.resolve()
    args.json = args.json.resolve() if args.json else None  # before the chdir below
    data, weights = args.shared / "data", args.shared / "weights"
    if not (weights / DETECTOR).is_file():
        raise SystemExit(f"no {weights / DETECTOR}: give the shared folder with --shared")
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "logs").mkdir(exist_ok=True)
    neutral = args.work / "cwd"
    neutral.mkdir(exist_ok=True)
    os.chdir(neutral)  # every CLI runs here: no .env of a checkout is read, no package found by accident

    print(f"Machine: {machine()}")
    ffmpeg, why = find_ffmpeg()
    videos = footage(args, data, ffmpeg, why)
    labels = [args.only] if args.only else ["old", "new"]
    pipelines: list[Pipeline] = []
    for label in labels:
        if label == "old":
            root, revision = old_worktree(args.work, args.old), f"commit {args.old}"
        else:
            root, revision = REPO, new_revision()
        env = pipeline_env(args.shared, args.work / f"indexes-{label}", args.work / f"yolo-{label}")
        pipelines.append(checked(Pipeline(label, root, revision), env))
        print(f"{label}: {revision}, castfinder imported from {pipelines[-1].package}")
    print("Settings: CASTFINDER_MODELS_DIR, CASTFINDER_DETECTOR=…/" + DETECTOR + ", CASTFINDER_PERSON_CLASSES=0,1, "
          "CASTFINDER_INDEX_DIR (every other CASTFINDER_* removed: each pipeline's defaults)\n")

    from platformdirs import user_cache_dir

    cache = Path(user_cache_dir("castfinder")) / "models"
    watched = [weights, cache, cache / "exports"]  # where model exports are cached
    runs: list[IndexRun] = []
    latency: dict[str, dict[str, float]] = {}
    for video, with_old in videos:
        duration = probe(ffmpeg, video).duration_s if ffmpeg else None
        for p in pipelines:
            if p.label == "old" and not with_old:
                continue
            env = pipeline_env(args.shared, args.work / f"indexes-{p.label}", args.work / f"yolo-{p.label}")
            runs.append(measure_index(p, video, env, args.work, duration, watched))
            if video == videos[0][0] and (image := query_frame(video, args.work / "query.jpg")) is not None:
                latency[p.label] = query_latency(p, env, image)
    if runs:
        print_speed(runs)
        if latency:
            print(f"\n## Query latency: one screenshot (a full frame of {videos[0][0].name} at {QUERY_AT_S:g} s), "
                  "warm engine, 20 searches\n")
            print("| pipeline | p50 | p95 |\n|---|---|---|")
            for label, lat in latency.items():
                print(f"| {label} | {lat['p50'] * 1000:.0f} ms | {lat['p95'] * 1000:.0f} ms |")
        print("\nCommands (cwd " + str(neutral) + "):\n" + "\n".join(f"- {r.pipeline}, {r.footage}: `{r.command}`"
                                                                  for r in runs))

    results: dict[str, dict[str, dict]] = {}
    if not args.no_quality:
        for p in pipelines:
            results[p.label] = quality(p, args.shared, args.work)
        print_quality(results)
        for label, per_clip in results.items():
            print(f"- {label} index builds: " + ", ".join(f"{m} {r['index_s']:.1f} s" for m, r in per_clip.items()))

    if args.json:
        args.json.write_text(json.dumps({
            "machine": machine(), "pipelines": [asdict(p) | {"root": str(p.root)} for p in pipelines],
            "runs": [asdict(r) | {"other_s": r.other_s} for r in runs], "quality": results, "query_latency": latency,
        }, indent=2, ensure_ascii=False))
        print(f"\nRaw figures: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
