"""Drawing numbered boxes on a query image, so a user can say whom to search for."""

from __future__ import annotations

import io
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

from ..types import Person

# The picker's picture is looked at once, on a phone: a little above the usual 75 keeps the
# numbers' edges clean without making the upload slow.
JPEG_QUALITY = 88

_COLOURS = ["#ff3b30", "#34c759", "#007aff", "#ff9500", "#af52de", "#5ac8fa", "#ffcc00", "#ff2d55"]


def draw_people(image: Image.Image, people: Sequence[Person]) -> bytes:
    img = image.convert("RGB").copy()
    draw = ImageDraw.Draw(img)
    line = max(2, round(min(img.size) / 200))
    size = max(14, round(min(img.size) / 14))
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        font = ImageFont.load_default()
    for person in people:
        colour = _COLOURS[(person.index - 1) % len(_COLOURS)]
        x1, y1, x2, y2 = person.bbox
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=line)
        label = str(person.index)
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        pad = line * 2
        w, h = right - left + 2 * pad, bottom - top + 2 * pad
        bx, by = x1, max(0.0, y1 - h) if y1 - h >= 0 else y1
        draw.rectangle((bx, by, bx + w, by + h), fill=colour)
        draw.text((bx + pad - left, by + pad - top), label, fill="white", font=font)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=JPEG_QUALITY)
    return out.getvalue()
