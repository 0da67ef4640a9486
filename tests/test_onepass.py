"""One decode of a video for its shots and its samples (core/onepass.py): the same shots as the
shot pass finds, each shot sampled at its ends and no sparser than the rate, damaged videos refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.errors import BadInputError
from core.indexing.onepass import one_pass
from core.indexing.sources import EditorCutDetector, SampledFrame, VideoSource
from core.types import Shot

from .conftest import DATA, TITANIC, requires_shared
from .test_shots import FPS, _flash, _no_progress, _shot, _write

REAL_CLIPS = [TITANIC, DATA / "goldeneye" / "goldeneye_10s_vfr.mp4", DATA / "office" / "office_edit.mp4",
              DATA / "supernatural" / "supernatural_edit.mp4"]


def _split(items) -> tuple[list[Shot], list[SampledFrame]]:
    items = list(items)
    return [i for i in items if isinstance(i, Shot)], [i for i in items if isinstance(i, SampledFrame)]


def _shape(shots: list[Shot]) -> list[tuple[int, int, float, float]]:
    return [(s.start_frame, s.end_frame, round(s.start_s, 6), round(s.end_s, 6)) for s in shots]


def _check_samples(shots: list[Shot], frames: list[SampledFrame], fps: float, frame_s: float) -> None:
    """Every shot sampled, inside itself, at its first and last moments, no sparser than `fps`."""
    for shot in shots:
        times = [f.time_s for f in frames if f.shot_id == shot.id]
        assert times, f"shot {shot.id} has no sample"
        assert all(shot.start_s <= t < shot.end_s for t in times)
        assert [f.frame_index for f in frames if f.shot_id == shot.id] == sorted(
            {f.frame_index for f in frames if f.shot_id == shot.id})
        if shot.duration_s >= 0.5:
            assert times[0] - shot.start_s <= 0.08 + frame_s + 1e-6  # its first moment
            assert shot.end_s - times[-1] <= 0.08 + frame_s + 1e-6  # its last moment
            assert max(np.diff(times), default=0.0) <= 1.0 / fps + frame_s + 1e-6


@pytest.fixture(scope="module")
def long_and_short(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 0.3 s shot, a 12 s shot (far longer than the reader looks ahead), a flash transition
    into a 2 s shot, and a 5 s shot to end on."""
    frames = _shot(1, 9) + _shot(2, 360) + _flash(_shot(3, 60), (1.0, 0.7, 0.4, 0.1)) + _shot(4, 150)
    return _write(tmp_path_factory.mktemp("onepass") / "long.mp4", frames)


def test_cuts_decided_frame_by_frame_are_the_cuts_of_the_whole_film() -> None:
    frames = (_shot(1, 40) + _shot(2, 30)[:10] + _flash(_shot(2, 30)[10:], (1.0, 0.7, 0.4, 0.1))
              + _flash(_shot(3, 40), (1.0, 0.6, 0.3)) + sum((_shot(10 + k, 8) for k in range(3)), []) + _shot(20, 50))
    det = EditorCutDetector(fps=FPS)
    found, late = [], []
    for i, frame in enumerate(frames):
        det.push(frame, i / FPS)
        for cut in det.new_cuts():
            found.append(cut)
            late.append(i - cut)
        assert det.settled() <= i + 1
    found += det.new_cuts(final=True)
    assert found == det.cuts() and len(found) >= 3
    assert max(late) <= det.lag  # a cut is told at most `lag` frames after it


def test_one_pass_finds_the_shot_pass_s_shots_and_samples_each_at_its_ends(long_and_short: Path) -> None:
    source = VideoSource(long_and_short)
    shots, frames = _split(source.stream(1.0, _no_progress))
    assert _shape(shots) == _shape(VideoSource(long_and_short).shots(_no_progress))
    assert [s.start_frame for s in shots] == [0, 9, 369, 429] and [s.id for s in shots] == [1, 2, 3, 4]
    assert source.duration_s == pytest.approx(579 / FPS, abs=1e-3)
    _check_samples(shots, frames, 1.0, 1 / FPS)
    # The 12 s shot: about one frame a second; the short shots as the sources' rule samples them.
    assert 13 <= sum(f.shot_id == 2 for f in frames) <= 15
    assert [f.frame_index for f in frames if f.shot_id == 1] == [3, 7]  # first and last moments (0.075 s in)
    assert frames[0].image.shape == (96, 160, 3) and frames[0].image.dtype == np.uint8


def test_a_resumed_pass_gives_every_shot_but_samples_only_the_rest(long_and_short: Path) -> None:
    shots, frames = _split(VideoSource(long_and_short).stream(2.0, _no_progress))
    again, rest = _split(VideoSource(long_and_short).stream(2.0, _no_progress, after_shot=2))
    assert _shape(again) == _shape(shots)
    assert [(f.shot_id, f.frame_index) for f in rest] == [(f.shot_id, f.frame_index) for f in frames if f.shot_id > 2]
    _check_samples(shots, frames, 2.0, 1 / FPS)


def test_the_video_is_decoded_once(long_and_short: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cv2

    import core.indexing.onepass

    source = VideoSource(long_and_short)  # the container is probed here, before the pass
    calls = []
    decode = core.indexing.onepass.decoded_frames
    monkeypatch.setattr(core.indexing.onepass, "decoded_frames", lambda *a: calls.append(a) or decode(*a))
    monkeypatch.setattr(cv2, "VideoCapture", lambda *a: pytest.fail("a second reader was opened"))
    shots, frames = _split(one_pass(source, 1.0))
    assert len(calls) == 1 and len(shots) == 4 and frames


def test_a_video_cut_short_is_refused_at_the_end(tmp_path: Path) -> None:
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    import subprocess

    try:
        ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as exc:
        pytest.skip(f"no ffmpeg binary: {exc}")
    whole = tmp_path / "whole.mkv"
    subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                    "testsrc=size=160x96:rate=24:duration=6", "-c:v", "libx264", "-g", "24", str(whole)], check=True)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 6 // 10])  # a download that stopped
    source = VideoSource(cut)
    with pytest.raises(BadInputError, match="truncated or damaged"):
        list(source.stream(1.0, _no_progress))


@requires_shared
@pytest.mark.parametrize("clip", REAL_CLIPS, ids=lambda p: p.stem)
def test_real_clips_get_the_shot_pass_s_shots_in_one_pass(clip: Path) -> None:
    if not clip.is_file():
        pytest.skip(f"no {clip}")
    shots, frames = _split(VideoSource(clip).stream(1.0, _no_progress))
    assert _shape(shots) == _shape(VideoSource(clip).shots(_no_progress))
    _check_samples(shots, frames, 1.0, 0.09)  # GoldenEye's frames (variable rate) are up to 83 ms apart


def test_short_shots_can_be_sampled_once_in_their_middle(long_and_short: Path, tmp_path: Path) -> None:
    shots, frames = _split(VideoSource(long_and_short).stream(1.0, _no_progress, short_s=0.5))
    assert [f.frame_index for f in frames if f.shot_id == 1] == [5]  # the 0.3 s shot: the frame at its middle (0.15 s)
    _, every = _split(VideoSource(long_and_short).stream(1.0, _no_progress))
    assert [f.frame_index for f in frames if f.shot_id > 1] == [f.frame_index for f in every if f.shot_id > 1]
    # A frames folder is a sample already: every frame of it, whatever the setting.
    from core.indexing.sources import FramesFolderSource

    from .media import make_frames_folder

    folder = make_frames_folder(tmp_path / "frames", "film", {(1, 1): 2, (1, 2): 3})
    _, kept = _split(FramesFolderSource(folder, fps=5.0).stream(1.0, _no_progress, short_s=5.0))
    assert len(kept) == 5


@pytest.mark.parametrize("rotation", [90, 180, -90])
def test_a_video_stored_on_its_side_is_sampled_upright_as_opencv_reads_it(tmp_path: Path, rotation: int) -> None:
    import subprocess

    import cv2

    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    try:
        ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as exc:
        pytest.skip(f"no ffmpeg binary: {exc}")
    plain, turned = tmp_path / "plain.mp4", tmp_path / f"turned{rotation}.mp4"
    subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                    "testsrc=size=160x96:rate=24:duration=2", "-c:v", "libx264", str(plain)], check=True)
    subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-display_rotation", str(rotation), "-i", str(plain),
                    "-c", "copy", str(turned)], check=True)  # a phone's portrait video: same pixels, turned on display
    _, frames = _split(VideoSource(turned).stream(1.0, _no_progress))
    cap = cv2.VideoCapture(str(turned))
    cap.set(cv2.CAP_PROP_POS_FRAMES, frames[0].frame_index)
    ok, bgr = cap.read()
    assert ok and frames[0].image.shape == bgr.shape
    assert frames[0].image.shape[:2] == ((96, 160) if rotation == 180 else (160, 96))
    assert np.abs(frames[0].image.astype(int) - bgr[:, :, ::-1]).mean() < 2.0  # OpenCV's picture, RGB
