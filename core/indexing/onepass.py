"""One decode of a video for both its shots and its sampled frames.

Every frame is decoded once (PyAV, with the decoder's own frame threads) and converted straight
from YUV to a small BGR picture for the cut detector; the decoded frames wait in a short queue
until the cuts around them are final, and only the frames chosen as samples are ever converted to
full-size RGB. Before this, a video was decoded twice (once for its shots, once for its samples)
and every frame converted to full-size BGR and shrunk: a fifth of the indexing work on 720p
(docs/PERFORMANCE.md).

Sampling follows `sources.shot_targets`: a shot's first and last moments, evenly between no
further apart than 1/fps, its middle among them. A shot whose end is known by the time its first
frame leaves the queue (shots up to `_AHEAD_S` long, most of a film's) is sampled exactly so; a
longer one gets its first moment, then one frame every 1/fps, and once its end comes within
sight the rest evenly up to its last moment.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from ..errors import BadInputError
from ..types import Shot
from .sources import _EDGE_S, EditorCutDetector, SampledFrame, shot_targets

if TYPE_CHECKING:
    import av

    from .sources import VideoSource


# How far past the oldest undecided frame the queue looks for the end of its shot, on top of the
# cut detector's own lag; and the memory the queue may hold for it (decoded YUV frames).
_AHEAD_S = 2.5
_QUEUE_BYTES = 384 << 20


def small_bgr(frame: "av.VideoFrame", width: int, height: int) -> np.ndarray:
    """The frame at width×height, BGR, straight from its YUV planes by swscale's area averaging:
    what the cut detector looks at. Shot boundaries on the development clips and on their
    washed-out and flashing copies: F1 1.000 and 0.997 (fast bilinear: 1.000 and 0.983; OpenCV's
    area averaging of the planes: 1.000 and 0.987, for 2 ms less a 720p frame)."""
    return frame.to_ndarray(width=width, height=height, format="bgr24", interpolation="AREA")


def upright(frame: "av.VideoFrame", picture: np.ndarray) -> np.ndarray:
    """The frame's picture turned as its stream says to show it (a phone's portrait video is
    stored on its side, with a rotation in its display matrix): as OpenCV's reader turns it."""
    turns = round(getattr(frame, "rotation", 0) / 90) % 4
    return np.ascontiguousarray(np.rot90(picture, turns)) if turns else picture


def decoded_frames(path: Path, warnings: list[str]) -> Iterator[tuple[float, "av.VideoFrame"]]:
    """(presentation time in seconds from the stream's start, decoded frame) for every frame of
    the video's main video stream, in presentation order. Packets the decoder rejects are
    skipped with a warning (a damaged stretch of the file)."""
    import av

    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise BadInputError(f"{path.name}: not a video that can be read ({exc}).") from exc
    with container:
        # The film's stream, as OpenCV's reader picks it (av_find_best_stream): not a cover picture.
        stream = container.streams.best("video")
        if not isinstance(stream, av.VideoStream):  # None: there is none
            raise BadInputError(f"{path.name}: the file has no video stream.")
        # The decoder's own frame threads. Measured on the 720p reel (docs/PERFORMANCE.md): one
        # decoder thread, or the reading thread at a lower priority, indexed no faster.
        stream.thread_type = "AUTO"
        base = stream.start_time or 0
        time_base = stream.time_base
        step = 1.0 / float(stream.average_rate or 25)
        last: float | None = None
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets, None)
            except av.FFmpegError as exc:  # the container itself is damaged from here on
                warnings.append(f"the video could not be read past {last or 0:.1f} s ({exc})")
                return
            if packet is None:
                return
            try:
                frames = packet.decode()
            except av.FFmpegError as exc:
                warnings.append(f"a damaged packet near {last or 0:.1f} s was skipped ({exc})")
                continue
            for frame in frames:
                if frame.pts is not None and time_base is not None:
                    t = float((frame.pts - base) * time_base)
                else:  # no timestamp: the next one at the stream's average rate
                    t = 0.0 if last is None else last + step
                last = t
                yield t, frame


@dataclass
class _Held:
    index: int
    time_s: float
    frame: "av.VideoFrame"


class _ShotSampler:
    """Which of one shot's frames to sample, decided frame by frame, oldest first."""

    def __init__(self, shot_id: int, start_frame: int, start_s: float, fps: float, short_s: float) -> None:
        self.id, self.start_frame, self.start_s, self.fps, self.short_s = shot_id, start_frame, start_s, fps, short_s
        self.end_frame: int | None = None  # inclusive; known once the next cut is
        self.end_s: float | None = None
        self.targets: list[float] | None = None  # the plan, once the end is known
        self.picked = 0
        self.last_s: float | None = None

    def ends(self, end_frame: int, end_s: float) -> None:
        """The shot's end is known: plan the rest of it."""
        self.end_frame, self.end_s = end_frame, end_s
        shot = self.shot()
        if self.last_s is None:
            self.targets = shot_targets(shot, self.fps, self.short_s)  # whole: exactly the sources' rule
            return
        # A long shot, sampled every 1/fps so far: the rest evenly up to its last moment.
        last = shot.end_s - _EDGE_S
        span = last - self.last_s
        n = math.ceil(span * self.fps - 1e-9) if span > 1e-6 else 0
        self.targets = [self.last_s + span * j / n for j in range(1, n + 1)]

    def shot(self) -> Shot:
        assert self.end_frame is not None and self.end_s is not None
        return Shot(self.id, self.id, None, self.start_frame, self.end_frame, self.start_s, self.end_s)

    def wants(self, index: int, time_s: float) -> bool:
        """Whether the frame at `index` (the shot's next one) is a sample; moves the plan on."""
        if self.targets is None:  # the end is not in sight yet: a long shot
            due_at = self.start_s + _EDGE_S if self.last_s is None else self.last_s + 1.0 / self.fps
            take = time_s + 1e-6 >= due_at
        else:
            take = bool(self.targets) and time_s + 1e-6 >= self.targets[0]
            # The shot's last frame stands in for the times after it (its last moment).
            take |= index == self.end_frame and (self.picked == 0 or bool(self.targets))
            while self.targets and time_s + 1e-6 >= self.targets[0]:
                self.targets.pop(0)
        if take:
            self.picked += 1
            self.last_s = time_s
        return take


def one_pass(source: "VideoSource", fps: float, after_shot: int = 0,
             short_s: float = 0.0) -> Iterator[SampledFrame | Shot]:
    """The video's sampled frames and its shots, in film order, from one decode: each shot's
    samples, then the shot itself (its end is known only then). Shots up to `after_shot` (done
    before a resumed run) are reported but not sampled; shots no longer than `short_s`, once.
    Raises BadInputError at the end for a
    video that decoded to much less than its container promises (truncated or damaged)."""
    det = EditorCutDetector(fps=source.nominal_fps, threshold=source.threshold, min_shot_s=source.min_shot_s,
                            min_shot_frames=source.min_shot_frames)
    vfps = source.nominal_fps if source.nominal_fps > 0 else 25.0
    queue: deque[_Held] = deque()
    cuts: deque[int] = deque()
    hold: int | None = None
    sampler = _ShotSampler(1, 0, 0.0, fps, short_s)  # its start time is the first frame's, set below
    last_dt = 1.0 / vfps
    film_end: tuple[int, float] | None = None  # the last frame and the film's end, once decoded

    def release(held: _Held) -> Iterator[SampledFrame | Shot]:
        nonlocal sampler
        if cuts and held.index == cuts[0]:  # the first frame of the next shot
            cuts.popleft()
            yield sampler.shot()
            sampler = _ShotSampler(sampler.id + 1, held.index, held.time_s, fps, short_s)
        if sampler.end_frame is None:  # its end in sight: the next cut is decided, or the film ended
            if cuts:
                sampler.ends(cuts[0] - 1, det.times[cuts[0]])
            elif film_end is not None:
                sampler.ends(*film_end)
        if not sampler.wants(held.index, held.time_s) or sampler.id <= after_shot:
            return
        try:
            rgb = upright(held.frame, held.frame.to_ndarray(format="rgb24"))
        except Exception as exc:  # noqa: BLE001 — PyAV/swscale raise several types for a broken frame
            source.warnings.append(f"frame {held.index} could not be converted ({exc}); skipped")
            return
        yield SampledFrame(sampler.id, held.index, held.time_s, rgb)

    for time_s, frame in decoded_frames(source.path, source.warnings):
        if hold is None:
            sampler.start_s = time_s
            # The queue holds the detector's lag plus _AHEAD_S of film, within _QUEUE_BYTES (but
            # never less than the lag and a shot's last moment: 4K frames are big).
            frame_bytes = max(1, frame.width * frame.height * 3 // 2)
            least = det.lag + math.ceil((_EDGE_S + 0.2) * vfps)
            hold = max(least, min(det.lag + math.ceil(_AHEAD_S * vfps), _QUEUE_BYTES // frame_bytes))
            small_w = min(det.width, frame.width)
            small_h = max(1, round(frame.height * small_w / frame.width))
        if det.times and time_s > det.times[-1]:
            last_dt = time_s - det.times[-1]
        det.push(upright(frame, small_bgr(frame, small_w, small_h)), time_s)
        queue.append(_Held(len(det) - 1, time_s, frame))
        cuts.extend(det.new_cuts())
        settled = det.settled()
        while len(queue) > hold and queue[0].index < settled:
            yield from release(queue.popleft())
    decoded = len(det)
    source.check_decoded(decoded)
    cuts.extend(det.new_cuts(final=True))
    film_end = (decoded - 1, det.times[-1] + last_dt)
    while queue:
        yield from release(queue.popleft())
    source.duration_s = film_end[1]
    yield sampler.shot()
