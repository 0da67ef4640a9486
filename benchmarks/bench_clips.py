"""Preview clips: seconds to cut a 10 s clip (wall and CPU) and to serve it from the cache, per
source size. Synthetic 720p and 1080p videos (tests/media.py) and the Titanic clip when ../shared
has it. Prints a Markdown table (docs/PERFORMANCE.md, "Preview clips").

    .venv/bin/python benchmarks/bench_clips.py [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.clips import ClipCutter  # noqa: E402
from core.types import Shot  # noqa: E402
from tests.conftest import TITANIC  # noqa: E402
from tests.media import make_video  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-clips-"))
    cases = []
    if TITANIC.is_file():
        cases.append(("Titanic clip, 426×240 H.264, 23.98 fps", TITANIC, Shot(3, 3, None, 0, 0, 8.8, 20.1), 15.0))
    for w, h in ((1280, 720), (1920, 1080)):
        video = make_video(tmp / f"v{h}.mp4", [((0, 200, 0), 24 * 14)], fps=24.0, size=(w, h))
        cases.append((f"synthetic {w}×{h} MPEG-4 part 2, 24 fps", video, Shot(1, 1, None, 0, 0, 0.0, 14.0), 8.0))
    print("| source | clip | size | cut (wall) | cut (CPU) | from the cache | file |")
    print("|---|---|---|---|---|---|---|")
    for name, video, shot, at in cases:
        wall, cpu, cached = [], [], []
        for run in range(args.runs):
            folder = tmp / f"{video.stem}-{run}"
            folder.mkdir()
            index = SimpleNamespace(  # what the cutter reads of a MovieIndex
                manifest=SimpleNamespace(name=name, source=SimpleNamespace(kind="video", path=str(video),
                                                                           size=video.stat().st_size)),
                shots={shot.id: shot}, path=folder)
            cutter = ClipCutter()
            start, start_cpu = time.perf_counter(), time.process_time()
            clip = cutter.clip(index, shot.id, at)  # type: ignore[arg-type]
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
            start = time.perf_counter()
            cutter.clip(index, shot.id, at)  # type: ignore[arg-type]
            cached.append(time.perf_counter() - start)
        print(f"| {name} | {clip.duration_s:.1f} s | {clip.width}×{clip.height} | {statistics.median(wall):.2f} s "
              f"| {statistics.median(cpu):.2f} s | {statistics.median(cached) * 1000:.1f} ms "
              f"| {clip.size_bytes / 1000:.0f} kB |")


if __name__ == "__main__":
    main()
