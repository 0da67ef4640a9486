"""The screen-time timeline: the whole film as a strip with the character's matched shots on it.

One picture per answer, made to be read on a phone (a Telegram photo is shown about 360 px wide
there, so the default 1280 × 360 keeps text at 20 px and more legible): a title, the summary line
(screen time, shots, share of the film, first and last appearance), the strip with confident
matches solid and weak ones hatched, a time axis and a legend. Colours are Okabe–Ito's blue and
orange (told apart by people with any common colour-vision deficiency) and the two kinds differ in
pattern too, so the picture also reads in greyscale.
"""

from __future__ import annotations

import functools
import io
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..types import Timeline

WIDTH, HEIGHT = 1280, 360
# The strip, in pixels of the default size: tests sample colours at film times through `x_of`.
STRIP_LEFT, STRIP_RIGHT = 48, WIDTH - 48
STRIP_TOP, STRIP_BOTTOM = 168, 238
# A shot shorter than a pixel (0.5 s of a two-hour film is 0.08 px) is still drawn this wide.
MIN_MARK_PX = 4

BACKGROUND = (255, 255, 255)
FILM = (228, 228, 228)  # the film where nothing matched
FILM_EDGE = (170, 170, 170)
CONFIDENT = (0, 114, 178)  # Okabe–Ito blue
WEAK_FILL = (248, 214, 150)  # a light Okabe–Ito orange ...
WEAK_HATCH = (230, 159, 0)  # ... hatched with the full one
INK = (34, 34, 34)
MUTED = (96, 96, 96)

# Candidate tick steps in seconds; the smallest giving at most MAX_TICKS intervals is used.
_TICK_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
MAX_TICKS = 10


# A Unicode font when the system has one (movie names in any script, "≈"); else Pillow's own
# (Latin only), with the few symbols it lacks written in ASCII.
_UNICODE_FONTS = {"regular": "DejaVuSans.ttf", "bold": "DejaVuSans-Bold.ttf"}
_ASCII = str.maketrans({"≈": "~", "—": "-", "–": "-", "…": "..."})
Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


@functools.lru_cache(maxsize=16)
def _font(size: int, weight: str = "regular") -> tuple[Font, bool]:
    """The font and whether it has more than Latin letters."""
    try:
        return ImageFont.truetype(_UNICODE_FONTS[weight], size), True
    except OSError:
        pass
    try:
        return ImageFont.load_default(size=size), False
    except (TypeError, OSError):  # Pillow < 10.1, or built without FreeType: the small bitmap font
        return ImageFont.load_default(), False


# -- words and numbers ---------------------------------------------------------------------
def format_duration(seconds: float) -> str:
    """`12 s`, `4 min 12 s`, `1 h 05 min`: a length of screen time, as people say it."""
    if seconds < 10:
        return f"{seconds:.1f} s".replace(".0 s", " s")
    total = round(seconds)
    if total < 60:
        return f"{total} s"
    if total < 3600:
        m, s = divmod(total, 60)
        return f"{m} min {s:02d} s" if s else f"{m} min"
    h, m = divmod(round(seconds / 60), 60)
    return f"{h} h {m:02d} min"


def format_clock(seconds: float, film_s: float) -> str:
    """A time in the film: `MM:SS` in films under an hour, `H:MM:SS` in longer ones."""
    total = int(max(0.0, seconds))
    h, rem = divmod(total, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if film_s >= 3600 else f"{m + 60 * h:02d}:{s:02d}"


def format_share(share: float) -> str:
    pct = share * 100
    if 0 < pct < 0.1:
        return "< 0.1 %"
    return f"{pct:.1f} %" if pct < 10 else f"{pct:.0f} %"


def summary_line(timeline: Timeline) -> str:
    """One line: `≈ 4 min 12 s in 23 shots (3.5 % of the film) · first 12:03 · last 58:40`."""
    confident, weak = timeline.confident, timeline.weak
    weak_part = f"{len(weak)} weak match{'es' if len(weak) != 1 else ''} (≈ {format_duration(timeline.weak_time_s)})"
    if not confident:
        return f"No confident match; {weak_part}" if weak else "No matching shot"
    film = timeline.duration_s
    about = "at least" if timeline.capped else "≈"
    line = (f"{about} {format_duration(timeline.screen_time_s)} in {len(confident)} shot"
            f"{'s' if len(confident) != 1 else ''} ({format_share(timeline.share)} of the film)")
    first, last = timeline.first_s, timeline.last_s
    assert first is not None and last is not None  # there are confident shots
    if len(confident) == 1:
        return line + f" · at {format_clock(first, film)}"
    return line + f" · first {format_clock(first, film)} · last {format_clock(last, film)}"


def axis_ticks(duration_s: float) -> list[tuple[float, str]]:
    """(seconds, label) of the axis' ticks: round steps, at most MAX_TICKS intervals, labelled
    `MM:SS` under an hour and `H:MM` from an hour on."""
    if duration_s <= 0:
        return [(0.0, "00:00")]
    step = next((s for s in _TICK_STEPS if duration_s / s <= MAX_TICKS), _TICK_STEPS[-1])
    if duration_s > step * MAX_TICKS:  # longer than the steps foresee (over ten days): spread them
        step = math.ceil(duration_s / MAX_TICKS)
    ticks = []
    for k in range(int(duration_s // step) + 1):
        t = float(k * step)
        if duration_s >= 3600:
            h, m = divmod(int(t) // 60, 60)
            label = f"{h}:{m:02d}"
        else:
            label = f"{int(t) // 60:02d}:{int(t) % 60:02d}"
        ticks.append((t, label))
    return ticks


# -- the picture ---------------------------------------------------------------------------
def x_of(seconds: float, duration_s: float) -> float:
    """The x of a film time on the strip (default size)."""
    if duration_s <= 0:
        return float(STRIP_LEFT)
    return STRIP_LEFT + (STRIP_RIGHT - STRIP_LEFT) * min(max(seconds / duration_s, 0.0), 1.0)


def _span(start_s: float, end_s: float, duration_s: float) -> tuple[int, int]:
    """The pixel columns [x1, x2) of a shot: at least MIN_MARK_PX wide, inside the strip."""
    x1, x2 = x_of(start_s, duration_s), x_of(end_s, duration_s)
    if x2 - x1 < MIN_MARK_PX:
        mid = (x1 + x2) / 2
        x1, x2 = mid - MIN_MARK_PX / 2, mid + MIN_MARK_PX / 2
    left = min(max(round(x1), STRIP_LEFT), STRIP_RIGHT - MIN_MARK_PX)
    right = max(min(round(x2), STRIP_RIGHT), left + MIN_MARK_PX)
    return left, right


@functools.lru_cache(maxsize=1)
def _hatching() -> Image.Image:
    """The weak matches' pattern over the whole picture: light orange with diagonal stripes of the
    full orange. Marks are cut from it where they lie, so neighbouring marks' stripes line up."""
    period, stripe = 8, 3
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    on = ((x + y) % period) < stripe
    pixels = np.where(on[..., None], np.array(WEAK_HATCH, np.uint8), np.array(WEAK_FILL, np.uint8))
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


def _hatch(img: Image.Image, x1: int, x2: int, y1: int, y2: int) -> None:
    """A weak match: hatched, so it differs from a confident one in pattern, not only colour."""
    box = (x1, y1, x2, y2)
    img.paste(_hatching().crop(box), box)


class _Pen:
    """Text on the picture in one of three sizes, shortened to fit, in ASCII where the font needs it."""

    def __init__(self, img: Image.Image) -> None:
        self.draw = ImageDraw.Draw(img)
        self.fonts = {"title": _font(32, "bold"), "line": _font(26), "small": _font(21)}

    def _prepare(self, text: str, size: str) -> tuple[str, Font]:
        font, unicode_ok = self.fonts[size]
        return (text if unicode_ok else text.translate(_ASCII)), font

    def width(self, text: str, size: str) -> float:
        text, font = self._prepare(text, size)
        left, _, right, _ = self.draw.textbbox((0, 0), text, font=font)
        return right - left

    def fit(self, text: str, size: str, width: float) -> str:
        """`text` shortened with an ellipsis to fit `width` pixels (a long movie name)."""
        if self.width(text, size) <= width:
            return text
        while text and self.width(text + "…", size) > width:
            text = text[:-1]
        return text.rstrip() + "…"

    def text(self, xy: tuple[float, float], text: str, size: str, fill: tuple[int, int, int]) -> None:
        text, font = self._prepare(text, size)
        self.draw.text(xy, text, fill=fill, font=font)


def draw_timeline(timeline: Timeline, title: str) -> bytes:
    """The timeline as PNG bytes (WIDTH × HEIGHT)."""
    img = Image.new("RGB", (WIDTH, HEIGHT), BACKGROUND)
    pen = _Pen(img)
    draw = pen.draw
    film = timeline.duration_s
    room = STRIP_RIGHT - STRIP_LEFT

    pen.text((STRIP_LEFT, 16), pen.fit(title, "title", room), "title", INK)
    pen.text((STRIP_LEFT, 64), pen.fit(summary_line(timeline), "line", room), "line", INK)

    # The strip: the film, weak matches, then confident ones over them.
    draw.rectangle((STRIP_LEFT, STRIP_TOP, STRIP_RIGHT - 1, STRIP_BOTTOM - 1), fill=FILM)
    for s in timeline.weak:
        x1, x2 = _span(s.start_s, s.end_s, film)
        _hatch(img, x1, x2, STRIP_TOP, STRIP_BOTTOM)
    for s in timeline.confident:
        x1, x2 = _span(s.start_s, s.end_s, film)
        draw.rectangle((x1, STRIP_TOP, x2 - 1, STRIP_BOTTOM - 1), fill=CONFIDENT)
    draw.rectangle((STRIP_LEFT - 1, STRIP_TOP - 1, STRIP_RIGHT, STRIP_BOTTOM), outline=FILM_EDGE, width=1)

    _first_last(pen, timeline)

    # The axis: ticks under the strip, labels centred on them (the end ones kept inside the picture).
    for t, label in axis_ticks(film):
        x = round(x_of(t, film))
        draw.line((x, STRIP_BOTTOM, x, STRIP_BOTTOM + 8), fill=MUTED, width=2)
        w = pen.width(label, "small")
        pen.text((min(max(x - w / 2, 4), WIDTH - 4 - w), STRIP_BOTTOM + 12), label, "small", MUTED)

    _legend(img, pen, timeline)
    out = io.BytesIO()
    img.save(out, "PNG", compress_level=6)
    return out.getvalue()


def _first_last(pen: _Pen, timeline: Timeline) -> None:
    """Small triangles over the strip at the first and last appearance, labelled."""
    first, last, film = timeline.first_s, timeline.last_s, timeline.duration_s
    if first is None or last is None:
        return
    only = "only confident match" if timeline.weak else "only match"
    marks = [(first, only)] if len(timeline.confident) == 1 else [(first, "first"), (last, "last")]
    base = STRIP_TOP - 4
    placed: list[tuple[float, float]] = []
    for t, label in marks:
        x = x_of(t, film)
        pen.draw.polygon([(x - 7, base - 12), (x + 7, base - 12), (x, base)], fill=INK)
        w = pen.width(label, "small")
        # "first" reads to the right of its mark, "last" to the left, unless the edge is too near.
        lx = x - 10 - w if label == "last" else x + 10
        lx = min(max(lx, 4), WIDTH - 4 - w)
        if any(lx < right + 8 and lx + w + 8 > left for left, right in placed):
            continue  # too close to the other label: the triangle alone says it
        pen.text((lx, base - 36), label, "small", INK)
        placed.append((lx, lx + w))


def _legend(img: Image.Image, pen: _Pen, timeline: Timeline) -> None:
    y = HEIGHT - 50
    x = float(STRIP_LEFT)
    entries = [("confident", f"confident ({len(timeline.confident)})")]
    if timeline.weak:
        entries.append(("weak", f"weak, not counted ({len(timeline.weak)})"))
    for kind, label in entries:
        if kind == "confident":
            pen.draw.rectangle((round(x), y + 2, round(x) + 27, y + 23), fill=CONFIDENT)
        else:
            _hatch(img, round(x), round(x) + 28, y + 2, y + 24)
        pen.text((x + 38, y), label, "small", INK)
        x += 38 + pen.width(label, "small") + 32
    unit = "h:mm" if timeline.duration_s >= 3600 else "min:s"
    for note in (f"screen time = sum of the matched shots' lengths · axis {unit}",
                 f"screen time = sum of shot lengths · axis {unit}", f"axis {unit}"):
        w = pen.width(note, "small")
        if x + w <= STRIP_RIGHT:
            pen.text((STRIP_RIGHT - w, y), note, "small", MUTED)
            break
