"""The footage helpers of benchmarks/bench_index.py: a 720p, 24 fps reel of the expected length,
and a looped copy cut at the asked duration. Built from two 1-second synthetic clips (a second)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_index  # noqa: E402


@pytest.fixture(scope="module")
def ffmpeg() -> str:
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as exc:
        pytest.skip(f"no ffmpeg binary: {exc}")


def _clip(ffmpeg: str, path: Path, size: str, rate: int) -> Path:
    subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                    f"testsrc=size={size}:rate={rate}:duration=1", "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


def test_reel_is_720p_24fps_and_as_long_as_its_parts(ffmpeg: str, tmp_path: Path) -> None:
    square = _clip(ffmpeg, tmp_path / "square.mp4", "96x96", 30)  # padded left and right
    wide = _clip(ffmpeg, tmp_path / "wide.mp4", "160x68", 25)  # padded top and bottom
    reel = bench_index.make_720p(ffmpeg, [square, wide], tmp_path / "reel.mp4")
    info = bench_index.probe(ffmpeg, reel)
    assert (info.width, info.height, info.fps) == (1280, 720, 24)
    assert info.duration_s == pytest.approx(2.0, abs=0.1)
    assert not list(tmp_path.glob(".partial-*"))

    looped = bench_index.loop_to(ffmpeg, reel, tmp_path / "looped.mp4", 5)
    assert bench_index.probe(ffmpeg, looped).duration_s == pytest.approx(5.0, abs=0.1)
