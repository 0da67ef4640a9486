"""Preview clips: a result's shot as a short muted MP4 that Telegram plays inline.

A clip is at most `MAX_CLIP_S` seconds of the shot around the best-matching moment (a result's
`frame_s`; the shot's middle when none is given), clamped to the shot's start and end, scaled so
that its *longer* side is at most `MAX_SIDE` pixels (a bound on the long side, not the height:
a portrait phone video gets 270×480, a scope film 480×200), even dimensions, H.264 (libx264,
bundled with PyAV's FFmpeg) in yuv420p, no audio, the moov atom first (`+faststart`) so that it
streams.

It is cut with PyAV from the video the movie was indexed from (`manifest.source.path`): a seek to
the keyframe before the start, then decoding forward, frames kept by their presentation time (PTS,
the same clock as the indexer's shot times, so variable frame rates land right), each turned
upright as the indexer turns it (`onepass.upright`: a phone's display-matrix rotation).

Clips are cached in the movie's index folder (`<index>/clips/shot_00012_<start_ms>_<end_ms>.mp4`)
and written beside their name, then renamed into place: a crash leaves no half clip under a name
that is served. Re-indexing replaces the whole folder, and with it clips of the old shots.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from .errors import BadInputError, ClipError, NoVideoError, ShotNotFoundError, SourceMovedError
from .inputs import short
from .naming import format_ts
from .store.layout import CLIPS
from .types import Shot

if TYPE_CHECKING:
    import av

    from .store.reader import MovieIndex

log = logging.getLogger(__name__)

# Telegram plays short muted MP4s inline like GIFs; 10 s shows a moment without being a download.
MAX_CLIP_S = 10.0
# The longer side's bound: 480 px keeps a 10 s clip to a few hundred kB and is what a phone shows inline.
MAX_SIDE = 480
# H.264 encoders, best first: libx264 is in PyAV's own wheels; openh264 in some distributions' FFmpeg.
# MPEG-4 part 2 is the last resort: every FFmpeg has it, but Telegram shows it as a file, not inline.
ENCODERS = ("libx264", "h264", "libopenh264", "mpeg4")
# x264: fast, and quality that suits a 480 px preview (CRF 26 ≈ 40–80 kB a second here).
_X264_OPTIONS = {"preset": "veryfast", "crf": "26", "profile": "high"}
# Frame times are kept in milliseconds in the clip: enough for any frame rate, variable ones too.
_TIME_BASE = Fraction(1, 1000)
# A `.part` file this old is a killed cut's, never one being written (a cut takes seconds).
_STALE_PART_S = 3600.0
# Cuts of different clips that may run at once (more than the engine's worker threads).
_LOCK_STRIPES = 64
# Times within this of a bound count as on it (the indexer's times are floats of PTS).
_EPS = 1e-3


@dataclass(frozen=True)
class Clip:
    """A cut clip: the file and what a player is told about it."""

    path: Path  # the cached MP4 in the index folder; do not move or delete it
    shot: int  # Shot.number
    start_s: float  # film time of its first frame ...
    end_s: float  # ... and of its end (the shot's times: exclusive)
    width: int
    height: int
    size_bytes: int
    codec: str  # the format's name: "h264" (or "mpeg4" where FFmpeg has no H.264 encoder)
    cached: bool  # served from the cache, not cut now

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def caption(self) -> str:
        """`shot 12 · 00:01:02.3–00:01:09.8`."""
        return f"shot {self.shot} · {format_ts(self.start_s, decimals=1)}–{format_ts(self.end_s, decimals=1)}"


def clip_window(shot: Shot, around_s: float | None, max_s: float = MAX_CLIP_S) -> tuple[float, float]:
    """The (start, end) film times of the clip: `max_s` (or the whole shot, if shorter) centred on
    `around_s` (the shot's middle when None), moved inside the shot where it would stick out."""
    length = min(max_s, shot.duration_s)
    centre = (shot.start_s + shot.end_s) / 2 if around_s is None else around_s
    start = min(max(centre - length / 2, shot.start_s), shot.end_s - length)
    return start, start + length


def encoder_name() -> str:
    """The first encoder of `ENCODERS` that this PyAV's FFmpeg has."""
    import av

    for name in ENCODERS:
        try:
            av.codec.Codec(name, "w")
        except (av.FFmpegError, ValueError):  # UnknownCodecError is a ValueError
            continue
        return name
    raise ClipError("this PyAV has no video encoder for MP4 (neither H.264 nor MPEG-4); reinstall the av package.")


class ClipCutter:
    """Cuts and caches clips; one per engine, safe from several threads (one cut per clip at once)."""

    def __init__(self) -> None:
        # Striped: a clip's lock is one of a fixed few, so they never pile up with the clips cut.
        self._locks = [threading.Lock() for _ in range(_LOCK_STRIPES)]

    def _lock(self, path: Path) -> threading.Lock:
        return self._locks[hash(path) % len(self._locks)]

    def check(self, index: "MovieIndex", shot_id: int) -> tuple[Shot, Path]:
        """The shot and the video to cut it from, checked without decoding anything: raises
        `NoVideoError` (a frames-folder movie), `ShotNotFoundError`, or `SourceMovedError` (the
        video is gone, or another size than when it was indexed)."""
        manifest = index.manifest
        source = manifest.source
        name = manifest.name
        if source.kind == "frames" or (source.path and Path(source.path).is_dir()):
            raise NoVideoError(f"{name!r} was indexed from a frames folder: no video to cut a clip from; "
                               "the thumbnail still works.")
        shot = index.shots.get(shot_id)
        if shot is None:
            last = max(index.shots, default=0)
            raise ShotNotFoundError(f"{name!r} has no shot {shot_id}; its shots are 1 to {last}.")
        return shot, _check_source(name, source.path, source.size)

    def clip(self, index: "MovieIndex", shot_id: int, around_s: float | None = None) -> Clip:
        """The clip of shot `shot_id` of `index`, from the cache or cut now. Raises what `check`
        raises, and `ClipError` when the video cannot be cut or the clip not written."""
        if around_s is not None and not math.isfinite(around_s):
            raise BadInputError(f"the moment to centre a clip on must be a time in seconds, not {around_s}.")
        shot, video = self.check(index, shot_id)
        start, end = clip_window(shot, around_s)
        path = index.path / CLIPS / f"shot_{shot.number:05d}_{round(start * 1000)}_{round(end * 1000)}.mp4"
        with self._lock(path):  # two taps on one button: one cut, the second served from the cache
            found = _probe(path)
            if found is not None:
                width, height, codec = found
                return Clip(path, shot.number, start, end, width, height, path.stat().st_size, codec, True)
            width, height, codec = _cut(video, start, end, path)
        return Clip(path, shot.number, start, end, width, height, path.stat().st_size, codec, False)


def _check_source(name: str, recorded: str, size: int) -> Path:
    moved = SourceMovedError(
        f"the video {short(recorded or '?')} that {name!r} was indexed from was moved or changed since indexing; "
        "re-index or put it back."
    )
    if not recorded:
        raise moved
    video = Path(recorded)
    try:
        st = video.stat()
    except (OSError, ValueError):
        raise moved from None
    import stat

    # A size of 0 in a manifest is "not recorded" (older indexes): the path alone is checked.
    if not stat.S_ISREG(st.st_mode) or (size and st.st_size != size):
        raise moved
    return video


def _probe(path: Path) -> tuple[int, int, str] | None:
    """(width, height, codec) of a cached clip that opens and holds a video stream; None when
    there is none (or something else sits under its name: it is cut again)."""
    if not path.is_file():
        return None
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            return stream.codec_context.width, stream.codec_context.height, stream.codec_context.codec.canonical_name
    except (av.FFmpegError, OSError, IndexError, ValueError) as exc:
        log.warning("cached clip %s cannot be read (%s); cutting it again", path, exc)
        return None


def _even(value: float) -> int:
    return max(2, int(round(value / 2)) * 2)


def _frames(container: "av.container.InputContainer", stream: "av.VideoStream", start: float,
            end: float) -> Iterator[tuple[float, "av.VideoFrame"]]:
    """(film time, frame) of the stream's frames in [start, end), times from PTS on the indexer's
    clock (seconds from the stream's start)."""
    import av

    base = stream.start_time or 0
    time_base = stream.time_base or Fraction(1, 1000)
    # To the keyframe at or before the start; decoding forward from there reaches it exactly.
    container.seek(base + int(max(0.0, start) / time_base), stream=stream, backward=True, any_frame=False)
    step = 1.0 / float(stream.average_rate or 25)
    last: float | None = None
    try:
        for frame in container.decode(stream):
            t = float((frame.pts - base) * time_base) if frame.pts is not None else (last or start) + step
            last = t
            if t >= end - _EPS:
                return
            if t >= start - _EPS:
                yield t, frame
    except av.FFmpegError as exc:  # a damaged stretch: the clip ends where the video stopped decoding
        log.warning("decoding stopped at %.2f s while cutting a clip: %s", last or start, exc)


def _cut(video: Path, start: float, end: float, path: Path) -> tuple[int, int, str]:
    """Encode film times [start, end) of `video` into `path` (written beside it, then renamed).
    Returns (width, height, codec)."""
    import av

    codec = encoder_name()
    try:
        path.parent.mkdir(exist_ok=True)
    except OSError as exc:
        raise ClipError(f"cannot write clips into {short(path.parent)}: {exc.strerror or exc}.") from None
    _tidy(path.parent)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{threading.get_ident()}.part")
    try:
        with av.open(str(video)) as source:
            stream = source.streams.best("video")
            if not isinstance(stream, av.VideoStream):
                raise BadInputError(f"{video.name}: the file has no video stream.")
            stream.thread_type = "AUTO"
            size, written = _encode(source, stream, start, end, tmp, codec)
        if not written:
            raise ClipError(f"no frame of {video.name} could be decoded between {format_ts(start, decimals=1)} "
                            f"and {format_ts(end, decimals=1)}; the video may be damaged there.")
        os.replace(tmp, path)
    except av.FFmpegError as exc:
        raise ClipError(f"the clip could not be cut from {video.name} ({exc}).") from None
    except OSError as exc:
        raise ClipError(f"the clip could not be written into {short(path.parent)}: {exc.strerror or exc}.") from None
    finally:
        tmp.unlink(missing_ok=True)
    return size[0], size[1], av.codec.Codec(codec, "w").canonical_name


def _tidy(folder: Path) -> None:
    """Remove what a process killed while cutting left (its `.part` file), once it is clearly old."""
    import time

    for part in folder.glob(".*.part"):
        try:
            if part.stat().st_mtime < time.time() - _STALE_PART_S:
                part.unlink()
        except OSError:  # another process removed or renamed it meanwhile
            continue


def _output_stream(out: "av.container.OutputContainer", codec: str, rate: Fraction,
                   size: tuple[int, int]) -> "av.VideoStream":
    import av

    video = out.add_stream(codec, rate=rate.limit_denominator(1001))
    if not isinstance(video, av.VideoStream):
        raise ClipError(f"{codec} is not a video encoder.")
    video.width, video.height = size
    video.pix_fmt = "yuv420p"
    video.codec_context.time_base = _TIME_BASE
    if codec in ("libx264", "h264"):
        video.codec_context.options = dict(_X264_OPTIONS)
    return video


def _encode(source: "av.container.InputContainer", stream: "av.VideoStream", start: float, end: float,
            tmp: Path, codec: str) -> tuple[tuple[int, int], int]:
    """Encode the frames of [start, end) into `tmp`; returns ((width, height), frames written)."""
    import av

    from .indexing.onepass import upright  # the indexer's turn; imported here: it brings OpenCV

    written = 0
    last_pts = -1
    size: tuple[int, int] = (0, 0)
    out = av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"})
    try:
        video: av.VideoStream | None = None
        scaled = (0, 0)
        for t, frame in _frames(source, stream, start, end):
            if video is None:
                turns = round(getattr(frame, "rotation", 0) / 90) % 4
                shown_w, shown_h = (frame.height, frame.width) if turns % 2 else (frame.width, frame.height)
                scale = min(1.0, MAX_SIDE / max(shown_w, shown_h))
                size = (_even(shown_w * scale), _even(shown_h * scale))
                scaled = (size[1], size[0]) if turns % 2 else size  # before turning upright
                video = _output_stream(out, codec, Fraction(stream.average_rate or 25), size)
            if round(getattr(frame, "rotation", 0) / 90) % 4:  # stored on its side: turned as the indexer turns it
                picture = frame.to_ndarray(format="rgb24", width=scaled[0], height=scaled[1], interpolation="AREA")
                shown = av.VideoFrame.from_ndarray(upright(frame, picture), format="rgb24").reformat(format="yuv420p")
            else:  # straight from YUV to the small YUV picture: one swscale pass
                shown = frame.reformat(width=size[0], height=size[1], format="yuv420p", interpolation="AREA")
            # Presentation times from the source's PTS (variable frame rates stay right), never
            # two frames on one millisecond.
            pts = max(last_pts + 1, round((t - start) / _TIME_BASE))
            shown.pts, shown.time_base = pts, _TIME_BASE
            last_pts = pts
            out.mux(video.encode(shown))
            written += 1
        if video is not None:
            out.mux(video.encode(None))
    finally:
        out.close()
    return size, written

