"""Movie sources: shots and the frames sampled inside them.

Two kinds: a video file (shots from PySceneDetect, timestamps from the container's presentation
times, so variable frame rate is handled) and a folder of frames named like the TRECVID dumps,
`<movie>-<scene>-shot_<k>-frame_<j>.jpg` (shots and scenes from the names).
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import BadInputError
from .types import Progress, ProgressCallback, Shot

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".mp4", ".mkv", ".avi", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".ts"}
FRAME_NAME = re.compile(
    r"^(?P<movie>.+)-(?P<scene>\d+)-shot_(?P<shot>\d+)-frame_(?P<frame>\d+)\.(?:jpe?g|png)$",
    re.IGNORECASE,
)
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
    kind: str
    path: Path

    def shots(self, progress: ProgressCallback) -> list[Shot]:
        raise NotImplementedError

    def sample(self, shots: list[Shot], fps: float, progress: ProgressCallback) -> Iterator[SampledFrame]:
        raise NotImplementedError

    @property
    def warnings(self) -> list[str]:
        return getattr(self, "_warnings", [])


def open_source(path: Path, *, frames_fps: float, scene_threshold: float, min_shot_frames: int) -> MovieSource:
    path = Path(path).expanduser()
    if not path.exists():
        raise BadInputError(f"{path}: no such file or folder.")
    if path.is_dir():
        return FramesFolderSource(path, fps=frames_fps)
    return VideoSource(path, threshold=scene_threshold, min_shot_frames=min_shot_frames)


def shot_targets(shot: Shot, fps: float) -> list[float]:
    """Sampling times inside a shot: mid-interval points, at least one per shot."""
    step = 1.0 / fps
    n = max(1, math.floor(shot.duration_s * fps + 0.5))
    targets = [shot.start_s + (i + 0.5) * step for i in range(n)]
    targets = [t for t in targets if t < shot.end_s]
    return targets or [shot.start_s + shot.duration_s / 2]


class VideoSource(MovieSource):
    kind = "video"

    def __init__(self, path: Path, *, threshold: float, min_shot_frames: int) -> None:
        self.path = path
        self.threshold = threshold
        self.min_shot_frames = min_shot_frames
        self._warnings: list[str] = []
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
        self.duration_s = 0.0

    def shots(self, progress: ProgressCallback) -> list[Shot]:
        from scenedetect import ContentDetector, SceneManager, open_video
        from scenedetect.video_stream import VideoOpenFailure

        try:
            video = open_video(str(self.path), backend="opencv")
        except (VideoOpenFailure, OSError, ValueError) as exc:
            raise BadInputError(f"{self.path.name}: not a video that can be read ({exc}).") from exc
        manager = SceneManager()
        manager.add_detector(ContentDetector(threshold=self.threshold, min_scene_len=self.min_shot_frames))
        manager.auto_downscale = True
        total = self.frame_count or None
        # detect_scenes continues from the stream's position, so chunks give progress for free.
        chunk = max(1, int(_PROGRESS_CHUNK_S * (video.frame_rate or 25)))
        while True:
            processed = manager.detect_scenes(video=video, duration=chunk)
            progress(Progress("shots", video.frame_number, total, "frame"))
            if processed < chunk:
                break
        decoded = video.frame_number
        end_tc = video.position
        if decoded == 0:
            raise BadInputError(f"{self.path.name}: no frame could be decoded.")
        if self.frame_count and decoded < _TRUNCATION_TOLERANCE * self.frame_count:
            raise BadInputError(
                f"{self.path.name}: the video is truncated or damaged: only {decoded} of its "
                f"{self.frame_count} frames could be decoded."
            )
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
        self.duration_s = shots[-1].end_s
        return shots

    def sample(self, shots: list[Shot], fps: float, progress: ProgressCallback) -> Iterator[SampledFrame]:
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise BadInputError(f"{self.path.name}: the video could not be reopened.")
        try:
            last_frame = shots[-1].end_frame
            shot_iter = iter(shots)
            shot = next(shot_iter)
            targets = shot_targets(shot, fps)
            picked_in_shot = 0
            index = -1
            while index < last_frame:
                if not cap.grab():
                    break
                index += 1
                while index > shot.end_frame:
                    shot = next(shot_iter)
                    targets = shot_targets(shot, fps)
                    picked_in_shot = 0
                # Presentation time of this frame: correct for variable frame rate, unlike index/fps.
                time_s = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                due = bool(targets) and time_s + 1e-6 >= targets[0]
                last_chance = index == shot.end_frame and picked_in_shot == 0
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


@dataclass(frozen=True)
class _FrameFile:
    path: Path
    scene: int
    shot: int
    frame: int


class FramesFolderSource(MovieSource):
    kind = "frames"

    def __init__(self, path: Path, *, fps: float) -> None:
        self.path = path
        self.fps = fps
        self._warnings: list[str] = []
        files: list[_FrameFile] = []
        movies: set[str] = set()
        ignored = 0
        for entry in path.iterdir():
            match = FRAME_NAME.match(entry.name)
            if not match or not entry.is_file():
                ignored += entry.is_file()
                continue
            movies.add(match["movie"])
            files.append(_FrameFile(entry, int(match["scene"]), int(match["shot"]), int(match["frame"])))
        if not files:
            raise BadInputError(
                f"{path}: no frames found. A frames folder holds files named "
                "<movie>-<scene>-shot_<k>-frame_<j>.jpg."
            )
        if len(movies) > 1:
            raise BadInputError(
                f"{path}: frames of several movies are mixed ({', '.join(sorted(movies))}); "
                "put each movie's frames in its own folder."
            )
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

    def sample(self, shots: list[Shot], fps: float, progress: ProgressCallback) -> Iterator[SampledFrame]:
        total = len(self.files)
        for shot in shots:
            targets = shot_targets(shot, fps)
            picked = 0
            for index in range(shot.start_frame, shot.end_frame + 1):
                time_s = index / self.fps
                due = bool(targets) and time_s + 0.5 / self.fps + 1e-6 >= targets[0]
                if not (due or (index == shot.end_frame and picked == 0)):
                    continue
                while targets and time_s + 0.5 / self.fps + 1e-6 >= targets[0]:
                    targets.pop(0)
                f = self.files[index]
                try:
                    with Image.open(f.path) as img:
                        rgb = np.asarray(img.convert("RGB"))
                except (UnidentifiedImageError, OSError, SyntaxError) as exc:
                    self._warnings.append(f"{f.path.name}: unreadable ({exc}); skipped")
                    continue
                picked += 1
                progress(Progress("sampling", index + 1, total, "frame"))
                yield SampledFrame(shot.id, index, time_s, rgb)
