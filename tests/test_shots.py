"""Shot boundaries as an editor cuts them: hard cuts, white flashes, montages of short shots.

The real clips are scored like benchmarks/bench_shots.py scores them (boundaries within 3 frames;
docs/EVALUATION.md, "Shot boundaries"); the synthetic video needs nothing from ../shared."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from core import Settings
from core.errors import BadInputError
from core.indexing.sources import EditorCutDetector, VideoSource, open_source, scene_threshold

from .conftest import DATA, TITANIC, requires_shared

FPS = 30.0
OFFICE = DATA / "office" / "office_edit.mp4"
SUPERNATURAL = DATA / "supernatural" / "supernatural_edit.mp4"
GOLDENEYE_VFR = DATA / "goldeneye" / "goldeneye_10s_vfr.mp4"
requires_edits = pytest.mark.skipif(
    not (OFFICE.is_file() and SUPERNATURAL.is_file()),
    reason=f"needs the annotated TV edits in {DATA} (office/, supernatural/; only on the project's own machines)",
)


def _no_progress(_) -> None:
    pass


def _starts(shots) -> list[int]:
    return [s.start_frame for s in shots[1:]]


def _f1(found: list[int], truth: list[int], tolerance: int = 3) -> float:
    used: set[int] = set()
    tp = 0
    for g in truth:
        near = [d for d in found if abs(d - g) <= tolerance and d not in used]
        if near:
            used.add(min(near, key=lambda d: abs(d - g)))
            tp += 1
    return 2 * tp / (len(found) + len(truth))


# --- a generated video ------------------------------------------------------------------------------

W, H = 160, 96


def _look(seed: int) -> np.ndarray:
    """A shot's picture: coloured blocks, distinct per shot."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (6, 10, 3), dtype=np.uint8)
    return cv2.resize(blocks, (W, H), interpolation=cv2.INTER_NEAREST)


def _shot(seed: int, frames: int, pan: int = 1) -> list[np.ndarray]:
    """A shot whose camera pans `pan` pixels a frame (so consecutive frames are never identical)."""
    base = _look(seed)
    return [np.roll(base, i * pan, axis=1) for i in range(frames)]


def _flash(frames: list[np.ndarray], alphas: tuple[float, ...]) -> list[np.ndarray]:
    """The first len(alphas) frames blended with white (1 = all white), as fan edits flash."""
    white = np.full_like(frames[0], 255)
    out = list(frames)
    for i, a in enumerate(alphas):
        out[i] = cv2.addWeighted(frames[i], 1 - a, white, a, 0)
    return out


def _write(path: Path, frames: list[np.ndarray]) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (W, H))
    if not writer.isOpened():
        pytest.skip("OpenCV cannot write mp4v video here")
    for f in frames:
        writer.write(f)
    writer.release()
    return path


@pytest.fixture(scope="module")
def edited_video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    """Hard cuts, a flash inside a shot (no boundary), a white flash transition (a boundary where
    it begins), a montage of 0.5 s shots and a fast pan; returns the video and its boundaries."""
    decay = (1.0, 0.8, 0.6, 0.4, 0.25, 0.1)
    shots = [
        _shot(1, 45),
        # A flash in the middle of a shot: the same shot before and after it.
        (lambda s: s[:20] + _flash(s[20:], decay))(_shot(2, 40)),
        _shot(3, 30),
        # A flash transition: shot 4 fades in from white.
        _flash(_shot(4, 40), decay),
        *(_shot(10 + k, 15) for k in range(4)),  # 0.5 s montage
        _shot(20, 45, pan=6),  # a fast pan inside one shot: no boundary
        _shot(21, 30),
    ]
    frames = [f for s in shots for f in s]
    boundaries = list(np.cumsum([len(s) for s in shots[:-1]]))
    path = _write(tmp_path_factory.mktemp("edit") / "edit.mp4", frames)
    return path, [int(b) for b in boundaries]


def test_generated_edit_is_cut_where_the_editor_cut_it(edited_video) -> None:
    path, truth = edited_video
    shots = VideoSource(path).shots(_no_progress)
    # Exactly the cuts: none at the flash inside shot 2, none at the flash's peak or fall, the
    # flash transition at its first white frame, every 0.5 s shot of the montage, none in the pan.
    assert _starts(shots) == truth == [45, 85, 115, 155, 170, 185, 200, 215, 260]
    assert shots[0].start_s == 0.0
    for shot, start in zip(shots[1:], truth):
        assert shot.start_s == pytest.approx(start / FPS, abs=1e-3)
    assert shots[-1].end_frame == truth[-1] + 30 - 1
    assert shots[-1].end_s == pytest.approx((truth[-1] + 30) / FPS, abs=1e-3)
    assert all(a.end_frame + 1 == b.start_frame and a.end_s == b.start_s for a, b in zip(shots, shots[1:]))


def test_the_old_content_detector_merges_the_montage_and_splits_the_flash(edited_video) -> None:
    """What the new default fixes: PySceneDetect's ContentDetector with 15-frame shots."""
    path, truth = edited_video
    content = VideoSource(path, detector="content", threshold=27, min_shot_frames=15, min_shot_s=0)
    old = _starts(content.shots(_no_progress))
    assert old != truth and _f1(old, truth) < 1.0


def test_a_flash_inside_a_shot_is_no_boundary_and_a_flash_transition_one() -> None:
    def run(frames: list[np.ndarray]) -> list[int]:
        det = EditorCutDetector(fps=FPS)
        for i, f in enumerate(frames):
            det.push(f, i / FPS)
        return det.cuts()

    inside = _shot(5, 30)
    # One white frame (a photographer's flash), then a slower flash, both inside the same shot.
    inside = inside[:10] + _flash(inside[10:11], (1.0,)) + inside[11:20] + _flash(inside[20:], (1.0, 0.7, 0.4, 0.1))
    assert run(inside + _shot(6, 20)) == [30]
    # A flash that brightens over 3 frames into a new shot starts the new shot where it brightens.
    ramp = _shot(7, 30)
    ramp = ramp[:27] + [_flash([f], (a,))[0] for f, a in zip(ramp[27:], (0.35, 0.7, 1.0))]
    assert run(ramp + _flash(_shot(8, 30), (1.0, 0.6, 0.3)) + _shot(9, 20)) == [27, 60]
    # A short shot of a bright colour between darker ones is a shot, not a flash.
    dark = [(f // 3) for f in _shot(11, 30)]
    bright = [np.full((H, W, 3), (40, 230, 240), np.uint8) for _ in range(12)]
    assert run(dark + bright + dark[:20]) == [30, 42]


def test_a_video_without_cuts_is_one_shot(tmp_path: Path) -> None:
    path = _write(tmp_path / "one.mp4", _shot(3, 40))
    [shot] = VideoSource(path).shots(_no_progress)
    assert (shot.start_frame, shot.end_frame) == (0, 39)
    assert shot.end_s == pytest.approx(40 / FPS, abs=1e-3)


def test_detector_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = Settings(_env_file=None)
    assert (s.shot_detector, s.scene_threshold, s.min_shot_s, s.min_shot_frames) == ("editor", None, 0.2, 0)
    assert scene_threshold("editor", None) == 15 and scene_threshold("content", None) == 27
    assert scene_threshold("content", 30) == 30
    monkeypatch.setenv("CASTFINDER_SHOT_DETECTOR", "content")
    monkeypatch.setenv("CASTFINDER_SCENE_THRESHOLD", "")  # as .env.example leaves it
    monkeypatch.setenv("CASTFINDER_MIN_SHOT_FRAMES", "15")
    s = Settings(_env_file=None)
    assert (s.shot_detector, s.scene_threshold, s.min_shot_frames) == ("content", None, 15)
    monkeypatch.setenv("CASTFINDER_SHOT_DETECTOR", "magic")
    with pytest.raises(ValueError):
        Settings(_env_file=None)
    video = _write(tmp_path / "v.mp4", _shot(1, 10))
    with pytest.raises(BadInputError, match="shot detector"):
        open_source(video, frames_fps=5, shot_detector="magic")


# --- the real clips ----------------------------------------------------------------------------------


def _annotated(name: str, times: list[float]) -> list[int]:
    with open(DATA / name / "shots.csv") as fh:
        rows = list(csv.DictReader(fh))
    return [int(np.argmin(np.abs(np.array(times) - float(r["start_s"])))) for r in rows[1:]]


def _times(path: Path) -> list[float]:
    cap = cv2.VideoCapture(str(path))
    times = []
    while cap.grab():
        times.append(cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0)
    cap.release()
    return times


# Measured (benchmarks/bench_shots.py): F1 1.000 on both edits with the new default; the old
# default had 0.962 (office) and 0.588 (supernatural). The floors allow one error in office's 27
# boundaries (F1 0.981) and three or four in supernatural's 48, and fail the old default on both.
F1_FLOOR = {"office": 0.97, "supernatural": 0.95}


@requires_shared
@requires_edits
@pytest.mark.parametrize("name", ["office", "supernatural"])
def test_tv_edits_are_cut_as_annotated(name: str) -> None:
    path = DATA / name / f"{name}_edit.mp4"
    truth = _annotated(name, _times(path))
    shots = VideoSource(path).shots(_no_progress)
    assert _f1(_starts(shots), truth) >= F1_FLOOR[name]


@requires_shared
@requires_edits
def test_flashes_inside_the_shots_of_a_real_edit_add_no_boundaries(tmp_path: Path) -> None:
    """Office with a white flash in the middle of every shot of 1.3 s or more (the annotation rule:
    a flash inside a shot is no boundary)."""
    times = _times(OFFICE)
    truth = _annotated("office", times)
    bounds = [0, *truth, len(times)]
    flashes = {}
    for k, (a, b) in enumerate(zip(bounds, bounds[1:])):
        if b - a >= 40:
            alphas = (1.0, 0.85, 0.7, 0.55, 0.4, 0.25, 0.1) if k % 2 == 0 else (1.0, 0.5)
            flashes.update({(a + b) // 2 + j: x for j, x in enumerate(alphas)})
    cap = cv2.VideoCapture(str(OFFICE))
    out = tmp_path / "office_flashes.mp4"
    writer = None
    i = 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        if writer is None:
            writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (bgr.shape[1], bgr.shape[0]))
        if i in flashes:
            bgr = cv2.addWeighted(bgr, 1 - flashes[i], np.full_like(bgr, 255), flashes[i], 0)
        writer.write(bgr)
        i += 1
    cap.release()
    writer.release()
    assert len(flashes) > 50  # 12 flashes
    found = _starts(VideoSource(out).shots(_no_progress))
    # Measured (bench_shots.py, office_flashes): F1 1.000, no extra boundary; the old default adds
    # 12 (F1 0.781). The floor allows three extra boundaries.
    assert _f1(found, truth) >= 0.94


@requires_shared
def test_titanic_and_variable_frame_rate_boundaries_are_exact() -> None:
    shots = VideoSource(TITANIC).shots(_no_progress)
    assert [(s.start_frame, s.end_frame) for s in shots] == [(0, 57), (58, 210), (211, 481)]
    fps = 24000 / 1001
    assert [s.start_s for s in shots] == pytest.approx([0, 58 / fps, 211 / fps], abs=1e-3)
    assert shots[-1].end_s == pytest.approx(482 / fps, abs=1e-3)

    shots = VideoSource(GOLDENEYE_VFR).shots(_no_progress)
    times = _times(GOLDENEYE_VFR)
    assert len(shots) == 3
    # Presentation times (the clip's frame durations vary): cuts at 3.754 s and 8.759 s.
    assert [s.start_s for s in shots[1:]] == pytest.approx([3.754, 8.759], abs=0.5 / 24)
    assert [times[s.start_frame] for s in shots] == [s.start_s for s in shots]
    assert shots[-1].end_s == pytest.approx(9.968, abs=0.01)
