"""Movie sources: shots and the frames sampled inside them.

Two kinds: a video file (shots cut the way an editor cuts them, by EditorCutDetector, or by
PySceneDetect's detectors; timestamps from the container's presentation times, so variable frame
rate is handled) and a folder of frames named like the TRECVID dumps,
`<movie>-<scene>-shot_<k>-frame_<j>.jpg` (shots and scenes from the names).
"""

from __future__ import annotations

import logging
import math
import os
import queue
import re
import stat
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Generator, Iterator, TypeVar

import cv2
import numpy as np

from ..errors import BadInputError
from ..inputs import describe, open_image, path_error, short, stat_input
from ..types import Progress, ProgressCallback, Shot

log = logging.getLogger(__name__)
T = TypeVar("T")

FRAME_NAME = re.compile(
    r"^(?P<movie>.+)-(?P<scene>\d+)-shot_(?P<shot>\d+)-frame_(?P<frame>\d+)\.(?:jpe?g|png)$",
    re.IGNORECASE,
)
# Shot detectors (CASTFINDER_SHOT_DETECTOR). "editor" is this module's own (EditorCutDetector:
# hard cuts by an adaptive content score, white flashes as one boundary where they begin);
# "content" and "adaptive" are PySceneDetect's ContentDetector and AdaptiveDetector.
# benchmarks/bench_shots.py measures them; docs/EVALUATION.md, "Shot boundaries".
SHOT_DETECTORS = ("editor", "content", "adaptive")
DEFAULT_SHOT_DETECTOR = "editor"
DEFAULT_MIN_SHOT_S = 0.2
# The content score a cut must reach when CASTFINDER_SCENE_THRESHOLD is not set: editor's floor
# (its cuts must also stand out from their neighbours), ContentDetector's own default, and
# AdaptiveDetector's min_content_val.
DEFAULT_THRESHOLDS = {"editor": 15.0, "content": 27.0, "adaptive": 15.0}
# A frames folder's frames over this many pixels are skipped (Settings.max_image_pixels' default).
DEFAULT_MAX_PIXELS = 80_000_000
# A frames folder named like a video file is most likely a mistake; the message says so.
VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".ts", ".wmv", ".flv")
# Unreadable frames of a frames folder get a warning each up to this many, then one for the rest.
_FRAME_WARNINGS = 5
# Scene, shot and frame numbers in frame names have at most this many digits: more does not fit
# the index's 64-bit integers (and no film has a billion shots).
MAX_NUMBER_DIGITS = 9


def scene_threshold(detector: str, threshold: float | None) -> float:
    """The content score a cut must reach with this detector: the setting, else its default."""
    return float(threshold) if threshold is not None else DEFAULT_THRESHOLDS[detector]


# A video that decodes to fewer frames than its container promises is truncated or damaged.
_TRUNCATION_TOLERANCE = 0.95
_PROGRESS_CHUNK_S = 30.0


@dataclass(frozen=True)
class SampledFrame:
    shot_id: int
    frame_index: int  # the frame's position in the source (decode order / frames-folder order)
    time_s: float
    image: np.ndarray  # H×W×3 RGB uint8


class MovieSource:
    """A film to index: its shots and the frames sampled inside them."""

    kind: str

    def __init__(self, path: Path) -> None:
        self.path = path
        self.duration_s = 0.0  # the film's length, once known
        self._warnings: list[str] = []  # what was skipped while reading it

    def shots(self, progress: ProgressCallback) -> list[Shot]:
        raise NotImplementedError

    def sample(self, shots: list[Shot], fps: float, progress: ProgressCallback,
               short_s: float = 0.0) -> Iterator[SampledFrame]:
        raise NotImplementedError

    def stream(self, fps: float, progress: ProgressCallback, after_shot: int = 0,
               short_s: float = 0.0) -> Iterator[SampledFrame | Shot]:
        """The sampled frames and the shots, in film order: each shot's frames, then the shot.
        Shots up to `after_shot` (done before a resumed run) are given but not sampled; a video
        shot no longer than `short_s` is sampled once (see shot_targets). Here the shots are
        found first, then sampled (a second pass); videos cut by the editor detector do both in
        one decode (core.indexing.onepass)."""
        shots = self.shots(progress)
        pending = deque(shots)
        for frame in self.sample([shot for shot in shots if shot.id > after_shot], fps, progress, short_s):
            while pending[0].id < frame.shot_id:
                yield pending.popleft()
            yield frame
        yield from pending

    @property
    def warnings(self) -> list[str]:
        return self._warnings

    @property
    def estimated_duration_s(self) -> float:
        """The film's length before it has been read through (for progress)."""
        return self.duration_s


def check_source(path: Path) -> int:
    """The `st_mode` of a film's path when it is a folder or a regular file (through links), else
    BadInputError; checked without opening it: a named pipe would block the open forever, and a
    device (/dev/zero, /dev/urandom) never ends."""
    mode = stat_input(path).st_mode
    if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
        raise BadInputError(f"{short(path)}: {describe(mode)}, not a video file or a frames folder.")
    return mode


def open_source(
    path: Path,
    *,
    frames_fps: float,
    scene_threshold: float | None = None,
    min_shot_frames: int = 0,
    shot_detector: str = DEFAULT_SHOT_DETECTOR,
    min_shot_s: float = DEFAULT_MIN_SHOT_S,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> MovieSource:
    """The source at `path`: a frames folder, or a video file. `max_pixels` bounds a frames
    folder's frames (CASTFINDER_MAX_IMAGE_PIXELS, the bound of query images too)."""
    path = Path(path).expanduser()
    if stat.S_ISDIR(check_source(path)):
        return FramesFolderSource(path, fps=frames_fps, max_pixels=max_pixels)
    return VideoSource(path, threshold=scene_threshold, min_shot_frames=min_shot_frames,
                       detector=shot_detector, min_shot_s=min_shot_s)


# Sampled frames keep this far from a shot's ends: a transition's first or last frames (a flash,
# a blend) rarely show anyone.
_EDGE_S = 0.08


def shot_targets(shot: Shot, fps: float, short_s: float = 0.0) -> list[float]:
    """Sampling times inside a shot: its first and last moments (a little inside the cuts), and
    evenly between them no further apart than 1/fps, the middle among them when there are three
    or more. A shot too short for two, or no longer than `short_s`, gets its middle. (The
    sampler takes the first frame at or after each time, and a shot's last frame for the times
    after it.) People walk in and out, and a shot's ends are where they do."""
    margin = min(_EDGE_S, shot.duration_s / 4)
    first, last = shot.start_s + margin, shot.end_s - margin
    if last - first < _EDGE_S or shot.duration_s <= short_s:
        return [shot.start_s + shot.duration_s / 2]
    n = max(2, math.ceil((last - first) * fps) + 1)
    if n > 2:
        n += 1 - n % 2  # odd: the middle is one of them
    step = (last - first) / (n - 1)
    return [first + i * step for i in range(n)]


def shrink(bgr: np.ndarray, width: int) -> np.ndarray:
    """The frame at `width` pixels wide (or as it is when narrower), cheaply and with little of
    the aliasing of point sampling: a 2x2 average (OpenCV's fast path) where the frame is at least
    twice as wide, bilinear for the rest."""
    h, w = bgr.shape[:2]
    if w <= width:
        return bgr
    height = max(1, round(h * width / w))
    if w >= 4 * width:
        bgr = cv2.resize(bgr, (2 * width, 2 * height), interpolation=cv2.INTER_LINEAR)
        return cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA)
    if w >= 2 * width:
        bgr = cv2.resize(bgr, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
        if bgr.shape[1] == width:
            return bgr
    return cv2.resize(bgr, (width, height), interpolation=cv2.INTER_LINEAR)


def content_score(hsv: np.ndarray, prev: np.ndarray) -> float:
    """PySceneDetect's content score between two HSV frames: the mean absolute difference of hue,
    saturation and value, averaged over the three (0–255)."""
    h, s, v, _ = cv2.mean(cv2.absdiff(hsv, prev))
    return (h + s + v) / 3.0


class EditorCutDetector:
    """Shot boundaries as an editor cuts them, from frames pushed one at a time.

    - A hard cut is a frame whose content score (its change from the frame before, as in
      PySceneDetect's ContentDetector) reaches `threshold` and stands out from its neighbours: at
      least `ratio` times the mean score of the `window` frames on each side. Camera moves, zooms,
      fades and a flash's fall change every frame a little and do not stand out; a cut changes one.
    - A white flash (brightening to `flash_luma` or more, unsaturated, by at least `flash_rise`
      within `max_rise_s`, perhaps holding white up to `max_hold_s`, then falling back as much
      within `max_fall_s`) is one event: a new shot starts where the flash begins when the frames
      before and after it show different shots, and there is no boundary at all when they show the
      same one (`same_shot`, see _same_shot); no cut is taken inside it, neither at its peak nor
      during its fall. A drop much steeper than the fall so far is a cut: the flash ended before.
    - Cuts closer than `min_shot_s` (and `min_shot_frames`) to the previous one are dropped.

    Memory: two floats per frame plus a couple of seconds of small frames.
    """

    def __init__(
        self,
        *,
        fps: float,
        threshold: float = DEFAULT_THRESHOLDS["editor"],
        ratio: float = 2.0,
        window: int = 2,
        min_shot_s: float = DEFAULT_MIN_SHOT_S,
        min_shot_frames: int = 0,
        flashes: bool = True,
        flash_luma: float = 150.0,
        flash_saturation: float = 64.0,
        flash_rise: float = 50.0,
        max_rise_s: float = 0.5,
        max_hold_s: float = 0.2,
        max_fall_s: float = 1.0,
        same_shot: float = 0.72,
        width: int = 256,
    ) -> None:
        fps = fps if fps and fps > 0 else 25.0
        self.threshold, self.ratio, self.window = threshold, ratio, max(1, window)
        self.min_shot_s, self.min_shot_frames = min_shot_s, min_shot_frames
        self.flashes, self.flash_luma, self.flash_rise = flashes, flash_luma, flash_rise
        self.flash_saturation = flash_saturation
        self.max_hold = max(1, math.ceil(max_hold_s * fps))
        self.same_shot = same_shot
        self.max_rise = max(1, math.ceil(max_rise_s * fps))
        self.max_fall = max(1, math.ceil(max_fall_s * fps))
        self.width = width
        self.scores: list[float] = []  # content score of frame i against frame i-1 (0 for frame 0)
        self.luma: list[float] = []  # mean value (HSV V, 0-255) of frame i
        self.saturation: list[float] = []  # mean saturation (HSV S, 0-255) of frame i
        self.times: list[float] = []
        self.events: list[tuple[int, int, bool]] = []  # flashes: (first frame, last frame, same shot)
        # A flash peak is examined once its whole fall (and the window after it) has been pushed;
        # the small frames kept reach back to the frame before its rise.
        self._lag = self.max_fall + self.window + 3
        self._frames: deque[np.ndarray] = deque(maxlen=self.max_rise + self._lag + 3)
        self._scanned = 1  # flash peaks are checked up to this frame (exclusive)
        self._flash_end = -1  # last frame of the latest flash
        self._decided = 0  # frames before this one have their final boundary status (new_cuts)
        self._last_cut = 0  # the latest cut decided (or frame 0)
        self._events_from = 0  # flash events ending before the frames still to decide are behind us

    def __len__(self) -> int:
        return len(self.scores)

    def push(self, bgr: np.ndarray, time_s: float | None = None) -> None:
        """The next frame (BGR, any size; `shrink` it first to save work) and its presentation time
        (index / 25 when None)."""
        hsv = cv2.cvtColor(shrink(bgr, self.width), cv2.COLOR_BGR2HSV)
        self.scores.append(content_score(hsv, self._frames[-1]) if self._frames else 0.0)
        _, sat, value, _ = cv2.mean(hsv)
        self.luma.append(value)
        self.saturation.append(sat)
        self.times.append(float(time_s) if time_s is not None else len(self.times) / 25.0)
        self._frames.append(hsv)
        if self.flashes:
            self._scan(len(self.scores) - self._lag)

    def stands_out(self, i: int) -> bool:
        """Whether frame i is a hard cut: a large change, and much larger than its neighbours'."""
        s, w = self.scores, self.window
        if i < 1 or s[i] < self.threshold:
            return False
        near = s[max(1, i - w):i] + s[i + 1:i + 1 + w]
        return not near or s[i] >= self.ratio * (sum(near) / len(near))

    def _frame(self, index: int) -> np.ndarray | None:
        back = len(self.scores) - 1 - index
        return self._frames[-1 - back] if 0 <= back < len(self._frames) else None

    def _same_shot(self, before: int, after: list[int]) -> bool:
        """Whether a frame after a flash shows the shot of the frame before it: their correlation,
        32 pixels wide and at the best of small shifts (up to 2 of those pixels, for what moved
        during the flash), reaches `same_shot`. Correlation ignores brightness and contrast, so
        what is left of the flash (a blend with white) and dark or washed-out footage do not
        count."""
        def small(index: int) -> np.ndarray | None:
            hsv = self._frame(index)
            if hsv is None:
                return None
            h, w = hsv.shape[:2]
            bgr = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
            return cv2.resize(bgr, (32, max(6, round(h * 32 / w))), interpolation=cv2.INTER_AREA).astype(np.float32)

        ref = small(before)
        if ref is None:
            return False
        core = ref[2:-2, 2:-2]
        if float(core.std()) < 1e-3:
            return False
        best = -1.0
        for index in after:
            frame = small(index)
            if frame is not None and frame.shape == ref.shape and float(frame.std()) > 1e-3:
                best = max(best, float(cv2.matchTemplate(frame, core, cv2.TM_CCOEFF_NORMED).max()))
        return best >= self.same_shot

    def _scan(self, upto: int) -> None:
        """Look for flash peaks before frame `upto`, whose fall has been pushed by now."""
        y, n = self.luma, len(self.luma)
        for c in range(self._scanned, min(upto, n - 1)):
            if (c <= self._flash_end or y[c] < self.flash_luma or self.saturation[c] > self.flash_saturation
                    or not (y[c] > y[c - 1] and y[c] >= y[c + 1])):
                continue  # not the peak of a white flash (a bright colour is no flash)
            a = c  # first frame of the rise: step back while the frame before is itself brightening
            while a - 2 > self._flash_end and c - a < self.max_rise and y[a - 1] > y[a - 2] + 2.0:
                a -= 1
            if y[c] - y[a - 1] < self.flash_rise:
                continue
            # Last frame of the flash: it may hold white a little, then it falls, at once or
            # gradually; a drop much steeper than the one before it is a cut to a darker shot.
            b, drop = c, 0.0
            while b + 1 < n and b + 1 - c <= self.max_fall:
                step = y[b] - y[b + 1]
                holding = (drop == 0.0 and b + 1 - c <= self.max_hold and y[b + 1] >= max(y[c] - 10.0, 230.0)
                           and self.saturation[b + 1] <= self.flash_saturation)
                if not (step > 1.0 or holding) or (drop > 0.0 and step > 2.0 * drop + 8.0):
                    break
                drop = max(step, 0.0) if step > 1.0 else drop
                b += 1
            if y[c] - y[b] < self.flash_rise:
                continue  # a cut to a bright shot that stays bright: not a flash
            self.events.append((a, b, self._same_shot(a - 1, [b, b + 1, b + 2])))
            self._flash_end = b
        self._scanned = max(self._scanned, min(upto, n - 1))

    def cuts(self) -> list[int]:
        """The first frame of every shot but the first, in order."""
        if self.flashes:
            self._scan(len(self.scores))
        candidates = {i for i in range(1, len(self.scores)) if self.stands_out(i)}
        for a, b, same in self.events:
            candidates -= set(range(a, b + 1))
            if not same:
                candidates.add(a)
        cuts: list[int] = []
        last = 0
        for i in sorted(candidates):
            if self._long_enough(last, i):
                cuts.append(i)
                last = i
        return cuts

    def _long_enough(self, last: int, i: int) -> bool:
        return i - last >= self.min_shot_frames and self.times[i] - self.times[last] >= self.min_shot_s - 1e-6

    @property
    def lag(self) -> int:
        """How many frames after a frame must be pushed before its boundary status is final."""
        return self.window + (self._lag + self.max_rise + 1 if self.flashes else 0)

    def settled(self) -> int:
        """Frames before this index have their final boundary status: a cut there can neither
        appear nor go away, whatever frames come next. A flash's start is decided once its peak
        and fall have been seen; a hard cut once the frames after it have."""
        upto = len(self.scores) - self.window
        if self.flashes:
            upto = min(upto, self._scanned - self.max_rise)
        return max(0, upto)

    def new_cuts(self, final: bool = False) -> list[int]:
        """The cuts decided since the last call, in order: the same as `cuts` gives for the
        frames up to `settled()`, or for all frames pushed when `final` (the end of the film)."""
        if final and self.flashes:
            self._scan(len(self.scores))
        upto = len(self.scores) if final else self.settled()
        events, found = self.events, []
        while self._decided < upto:
            i = self._decided
            self._decided += 1
            if i == 0:
                continue
            while self._events_from < len(events) and events[self._events_from][1] < i:
                self._events_from += 1
            # Flash events come in time order and never overlap: at most the first one left holds i.
            flash = events[self._events_from] if self._events_from < len(events) else None
            if flash is not None and flash[0] <= i <= flash[1]:
                cut = not flash[2] and flash[0] == i
            else:
                cut = self.stands_out(i)
            if cut and self._long_enough(self._last_cut, i):
                found.append(i)
                self._last_cut = i
        return found


class VideoSource(MovieSource):
    kind = "video"

    def __init__(
        self,
        path: Path,
        *,
        threshold: float | None = None,
        min_shot_frames: int = 0,
        detector: str = DEFAULT_SHOT_DETECTOR,
        min_shot_s: float = DEFAULT_MIN_SHOT_S,
    ) -> None:
        if detector not in SHOT_DETECTORS:
            raise BadInputError(f"unknown shot detector {detector!r}; choose from {', '.join(SHOT_DETECTORS)}.")
        super().__init__(path)
        self.threshold = scene_threshold(detector, threshold)
        self.min_shot_frames = min_shot_frames
        self.min_shot_s = min_shot_s
        self.detector = detector
        cap = cv2.VideoCapture(str(path))
        try:
            ok = cap.isOpened() and cap.grab()
            self.frame_count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            self.nominal_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        finally:
            cap.release()
        if not ok:
            raise BadInputError(
                f"{path.name}: not a video that can be read (damaged, truncated, or not a video at all)."
            )

    @property
    def estimated_duration_s(self) -> float:
        if self.duration_s:
            return self.duration_s
        return self.frame_count / self.nominal_fps if self.frame_count and self.nominal_fps > 0 else 0.0

    def stream(self, fps: float, progress: ProgressCallback, after_shot: int = 0,
               short_s: float = 0.0) -> Iterator[SampledFrame | Shot]:
        if self.detector != "editor":  # PySceneDetect's detectors: find the shots first
            yield from super().stream(fps, progress, after_shot, short_s)
            return
        from .onepass import one_pass

        yield from one_pass(self, fps, after_shot, short_s)

    def shots(self, progress: ProgressCallback) -> list[Shot]:
        if self.detector == "editor":
            shots, decoded = self._editor_shots(progress)
        else:
            shots, decoded = self._scenedetect_shots(progress)
        self.check_decoded(decoded)
        self.duration_s = shots[-1].end_s
        return shots

    def check_decoded(self, decoded: int) -> None:
        """Refuse a video that decoded to nothing, or to much less than its container promises."""
        if decoded == 0:
            raise BadInputError(f"{self.path.name}: no frame could be decoded.")
        if self.frame_count and decoded < _TRUNCATION_TOLERANCE * self.frame_count:
            raise BadInputError(
                f"{self.path.name}: the video is truncated or damaged: only {decoded} of its "
                f"{self.frame_count} frames could be decoded."
            )

    def _editor_shots(self, progress: ProgressCallback) -> tuple[list[Shot], int]:
        detector = EditorCutDetector(fps=self.nominal_fps, threshold=self.threshold,
                                     min_shot_s=self.min_shot_s, min_shot_frames=self.min_shot_frames)
        total = self.frame_count or None
        chunk = max(1, int(_PROGRESS_CHUNK_S * (self.nominal_fps or 25)))
        last_dt = 1.0 / (self.nominal_fps or 25)
        previous: np.ndarray | None = None
        for time_s, small in _decoded(self.path, detector.width):
            if small is None:  # keep frame numbers in step with sample(): repeat the last frame
                self._warnings.append(f"frame {len(detector)} could not be decoded; shots read past it")
                if previous is None:
                    continue
                small = previous
            if detector.times and time_s > detector.times[-1]:
                last_dt = time_s - detector.times[-1]
            detector.push(small, time_s)
            previous = small
            if len(detector) % chunk == 0:
                progress(Progress("shots", len(detector), total, "frame"))
        decoded = len(detector)
        progress(Progress("shots", decoded, total, "frame"))
        if decoded == 0:
            return [], 0
        times = detector.times
        starts = [0, *detector.cuts()]
        ends = [*starts[1:], decoded]
        shots = [
            Shot(id=k, number=k, scene=None, start_frame=a, end_frame=b - 1, start_s=times[a],
                 end_s=times[b] if b < decoded else times[-1] + last_dt)
            for k, (a, b) in enumerate(zip(starts, ends), start=1)
        ]
        return shots, decoded

    def _scenedetect_shots(self, progress: ProgressCallback) -> tuple[list[Shot], int]:
        from scenedetect import AdaptiveDetector, ContentDetector, SceneManager, open_video
        from scenedetect.video_stream import VideoOpenFailure

        try:
            video = open_video(str(self.path), backend="opencv")
        except (VideoOpenFailure, OSError, ValueError) as exc:
            raise BadInputError(f"{self.path.name}: not a video that can be read ({exc}).") from exc
        # The shortest shot: in seconds, or in frames when that is the longer of the two.
        fps = video.frame_rate or self.nominal_fps or 25
        min_len: int | float = float(self.min_shot_s)
        if self.min_shot_frames > self.min_shot_s * fps:
            min_len = int(self.min_shot_frames)
        manager = SceneManager()
        if self.detector == "adaptive":
            manager.add_detector(AdaptiveDetector(min_scene_len=min_len, min_content_val=self.threshold))
        else:
            manager.add_detector(ContentDetector(threshold=self.threshold, min_scene_len=min_len))
        manager.auto_downscale = True
        total = self.frame_count or None
        # detect_scenes continues from the stream's position, so chunks give progress for free.
        chunk = max(1, int(_PROGRESS_CHUNK_S * fps))
        while True:
            processed = manager.detect_scenes(video=video, duration=chunk)
            progress(Progress("shots", video.frame_number, total, "frame"))
            if processed < chunk:
                break
        decoded = video.frame_number
        end_tc = video.position
        if decoded == 0:
            return [], 0
        scenes = manager.get_scene_list(start_in_scene=True)
        shots: list[Shot] = []
        for i, (start, end) in enumerate(scenes, start=1):
            shots.append(
                Shot(
                    id=i,
                    number=i,
                    scene=None,
                    start_frame=start.frame_num,
                    end_frame=end.frame_num - 1,
                    start_s=float(start.seconds),
                    end_s=float(end.seconds),
                )
            )
        if not shots:  # a single shot; PySceneDetect returns nothing without cuts on some versions
            end_s = float(end_tc.seconds)
            shots = [Shot(1, 1, None, 0, decoded - 1, 0.0, end_s)]
        return shots, decoded

    def sample(self, shots: list[Shot], fps: float, progress: ProgressCallback,
               short_s: float = 0.0) -> Iterator[SampledFrame]:
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise BadInputError(f"{self.path.name}: the video could not be reopened.")
        try:
            last_frame = shots[-1].end_frame
            shot_iter = iter(shots)
            shot = next(shot_iter)
            targets = shot_targets(shot, fps, short_s)
            picked_in_shot = 0
            index = -1
            while index < last_frame:
                if not cap.grab():
                    break
                index += 1
                while index > shot.end_frame:
                    shot = next(shot_iter)
                    targets = shot_targets(shot, fps, short_s)
                    picked_in_shot = 0
                # Presentation time of this frame: correct for variable frame rate, unlike index/fps.
                time_s = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                due = bool(targets) and time_s + 1e-6 >= targets[0]
                # The shot's last frame stands in for the times after it (its last moment).
                last_chance = index == shot.end_frame and (picked_in_shot == 0 or bool(targets))
                if not (due or last_chance):
                    continue
                while targets and time_s + 1e-6 >= targets[0]:
                    targets.pop(0)
                ok, bgr = cap.retrieve()
                if not ok or bgr is None:
                    self._warnings.append(f"frame {index} could not be decoded; skipped")
                    continue
                picked_in_shot += 1
                progress(Progress("sampling", index + 1, last_frame + 1, "frame"))
                yield SampledFrame(shot.id, index, time_s, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        finally:
            cap.release()


class _Done:
    """The end of the items handed from a background thread."""


def in_background(items: Iterator[T], maxsize: int,
                  busy: Callable[[float], None] | None = None) -> Generator[T, None, None]:
    """`items`, produced in a thread beside the caller's work (decoding: OpenCV and PyAV release
    the GIL), at most `maxsize` ahead. An error in the thread is raised here; closing this
    generator stops the thread. `busy` is told the seconds the thread spent producing each item."""
    items = iter(items)
    done = _Done()
    buffer: queue.Queue[T | _Done] = queue.Queue(maxsize=maxsize)
    stop = threading.Event()
    failure: list[BaseException] = []

    def put(item: T | _Done) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            while True:
                start = time.perf_counter()
                item = next(items, done)
                if busy is not None:
                    busy(time.perf_counter() - start)
                if item is done or not put(item):
                    return
        except BaseException as exc:  # handed to the reader below
            failure.append(exc)
        finally:
            close = getattr(items, "close", None)
            if close is not None:  # a source's own cleanup (releasing its capture) runs now
                close()
            put(done)

    thread = threading.Thread(target=produce, name="castfinder-decode", daemon=True)
    thread.start()
    try:
        while not isinstance(item := buffer.get(), _Done):
            yield item
        if failure:
            raise failure[0]
    finally:
        stop.set()
        thread.join()


def _decoded(path: Path, width: int) -> Iterator[tuple[float, np.ndarray | None]]:
    """(presentation time, frame shrunk to `width`) for every frame of the video, in decode order;
    None for a frame that cannot be decoded. Decoding runs in a thread beside the caller's work,
    as PySceneDetect's SceneManager does."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise BadInputError(f"{path.name}: the video could not be reopened.")

    def frames() -> Iterator[tuple[float, np.ndarray | None]]:
        while cap.grab():
            # Presentation time, as sample() reads it: right for variable frame rate.
            time_s = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            ok, bgr = cap.retrieve()
            yield time_s, (shrink(bgr, width) if ok and bgr is not None else None)

    try:
        yield from in_background(frames(), maxsize=64)
    finally:
        cap.release()


@dataclass(frozen=True)
class _FrameFile:
    path: Path
    scene: int
    shot: int
    frame: int


class FramesFolderSource(MovieSource):
    kind = "frames"

    def __init__(self, path: Path, *, fps: float, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        super().__init__(path)
        self.fps = fps
        self.max_pixels = max_pixels
        self.limit_hint = f"frames are read up to {max_pixels / 1e6:g} megapixels (CASTFINDER_MAX_IMAGE_PIXELS)"
        files: list[_FrameFile] = []
        movies: set[str] = set()
        ignored = 0
        not_regular: list[str] = []  # named like frames, but pipes, devices, sockets or folders
        too_big: list[str] = []  # named like frames, with numbers the index cannot hold
        try:
            with os.scandir(path) as listing:
                entries = list(listing)
        except OSError as exc:
            raise path_error(path, exc) from None
        for entry in entries:
            match = FRAME_NAME.match(entry.name)
            try:
                regular = entry.is_file()  # through links; False for pipes, devices, sockets, folders
            except OSError:
                regular = False
            if not match:
                ignored += regular
            elif not regular:
                not_regular.append(entry.name)
            elif any(len(match[k].lstrip("0")) > MAX_NUMBER_DIGITS for k in ("scene", "shot", "frame")):
                too_big.append(entry.name)
            else:
                movies.add(match["movie"])
                files.append(_FrameFile(Path(entry.path), int(match["scene"]), int(match["shot"]),
                                        int(match["frame"])))
        skipped = []
        if not_regular:
            skipped.append(f"{len(not_regular)} file(s) named like frames are not regular files (named pipes, "
                           f"devices, sockets or folders), e.g. {min(not_regular)!r}")
        if too_big:
            skipped.append(f"{len(too_big)} frame file(s) have a scene, shot or frame number of more than "
                           f"{MAX_NUMBER_DIGITS} digits, e.g. {min(too_big)!r}")
        if not files:
            folder = "a folder, not a video file, and " if path.suffix.lower() in VIDEO_SUFFIXES else ""
            why = f" ({'; '.join(skipped)})" if skipped else ""
            raise BadInputError(
                f"{short(path)}: {folder}no frames found{why}. A frames folder holds files named "
                "<movie>-<scene>-shot_<k>-frame_<j>.jpg."
            )
        if len(movies) > 1:
            raise BadInputError(
                f"{path}: frames of several movies are mixed ({', '.join(sorted(movies))}); "
                "put each movie's frames in its own folder."
            )
        self._warnings.extend(f"{reason}: skipped" for reason in skipped)
        if ignored:
            self._warnings.append(f"{ignored} file(s) not named like frames were ignored")
        self.movie_prefix = movies.pop()
        files.sort(key=lambda f: (f.scene, f.shot, f.frame))
        self.files = files
        self.duration_s = len(files) / fps

    def shots(self, progress: ProgressCallback) -> list[Shot]:
        shots: list[Shot] = []
        start = 0
        for i, f in enumerate(self.files):
            last = i + 1 == len(self.files)
            if last or (self.files[i + 1].scene, self.files[i + 1].shot) != (f.scene, f.shot):
                shots.append(
                    Shot(
                        id=len(shots) + 1,
                        number=f.shot,
                        scene=f.scene,
                        start_frame=start,
                        end_frame=i,
                        start_s=start / self.fps,
                        end_s=(i + 1) / self.fps,
                    )
                )
                start = i + 1
        progress(Progress("shots", len(self.files), len(self.files), "frame"))
        return shots

    def sample(self, shots: list[Shot], fps: float, progress: ProgressCallback,
               short_s: float = 0.0) -> Iterator[SampledFrame]:
        """Every frame of the folder, whatever `fps` and `short_s`: a frames folder is a sample
        of its film already (a TRECVID dump keeps a few frames a shot), chosen by whoever made it."""
        total = len(self.files)
        fps = max(fps, self.fps)
        read = unreadable = 0
        first = ""  # the first unreadable frame's problem
        for shot in shots:
            targets = shot_targets(shot, fps)
            picked = 0
            for index in range(shot.start_frame, shot.end_frame + 1):
                time_s = index / self.fps
                due = bool(targets) and time_s + 0.5 / self.fps + 1e-6 >= targets[0]
                if not (due or (index == shot.end_frame and (picked == 0 or bool(targets)))):
                    continue
                while targets and time_s + 0.5 / self.fps + 1e-6 >= targets[0]:
                    targets.pop(0)
                f = self.files[index]
                try:
                    # The query images' decoder: regular files only, the same pixel bound, the
                    # same 8-bit RGB whatever the bit depth.
                    rgb = np.asarray(open_image(f.path, label=f.path.name, max_pixels=self.max_pixels,
                                                limit_hint=self.limit_hint))
                except BadInputError as exc:
                    unreadable += 1
                    first = first or str(exc).rstrip(".")
                    if unreadable <= _FRAME_WARNINGS:
                        self._warnings.append(f"{str(exc).rstrip('.')}; skipped")
                    continue
                picked += 1
                read += 1
                progress(Progress("sampling", index + 1, total, "frame"))
                yield SampledFrame(shot.id, index, time_s, rgb)
        if unreadable > _FRAME_WARNINGS:
            self._warnings.append(f"{unreadable - _FRAME_WARNINGS} more unreadable frame(s) skipped")
        if not read and shots and shots[0].start_frame == 0:  # the whole folder, and not one frame
            raise BadInputError(
                f"{short(self.path)}: not one of its frames could be read as an image ({unreadable} tried; "
                f"the first: {first}); nothing was indexed."
            )
