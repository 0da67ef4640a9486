"""The cast of a movie, found without being asked: its face tracks clustered into identities at
index time, and the contact sheet that shows them.

A face track is one person's detections through a shot (core/indexing/tracks.py) that showed a
face at least once. Each track's face vectors are averaged (one vote per track, however long it
is: a long close-up does not outweigh ten short shots), and the tracks are clustered by
average-linkage agglomerative clustering on cosine distance, cut at `CASTFINDER_CAST_THRESHOLD`
(chosen on the development clips: docs/EVALUATION.md, "The cast"). Average linkage, because
single linkage chains two people together through one blurred track, and complete linkage splits
one person by lighting.

Screen time is the summed duration of the shots an identity appears in (any of its tracks, back
views included, since a track carries the face it showed once to its other frames). It counts a
shot shared with others in full for each of them: it is "how long is this person on screen",
not a share of the film that sums to 100 %.

Bodies alone are not clustered: a body vector is mostly clothes, so one person splits by outfit
and similarly dressed extras merge; an index without a face channel says its cast is unavailable.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Portraits: the face box widened by this much on each side (hair and chin make a face
# recognisable to people; the embedder's tight crop does not), then a square of this many pixels.
PORTRAIT_MARGIN = 0.35
PORTRAIT_PX = 192
PORTRAIT_JPEG_QUALITY = 88


@dataclass(frozen=True)
class Identity:
    """One cluster, as the writer stores it."""

    tracks: list[int]  # track ids
    face_crops: np.ndarray  # crop ids with a face vector, in the identity's tracks
    centroid: np.ndarray  # mean face vector, L2-normalised


def track_means(vectors: np.ndarray, crop_ids: np.ndarray, crop_track: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per face track: its id and its mean face vector (L2-normalised). `vectors` are the face
    channel's vectors of crops `crop_ids`; `crop_track` maps every crop id to its track."""
    tracks = crop_track[crop_ids]
    ids, inverse = np.unique(tracks, return_inverse=True)
    sums = np.zeros((len(ids), vectors.shape[1]), dtype=np.float64)
    np.add.at(sums, inverse, vectors.astype(np.float64))
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return ids, (sums / np.maximum(norms, 1e-12)).astype(np.float32)


def cluster_labels(means: np.ndarray, threshold: float) -> np.ndarray:
    """A cluster label per row: average linkage on cosine distance, cut at `threshold`."""
    if len(means) == 0:
        return np.zeros(0, dtype=np.int64)
    if len(means) == 1:
        return np.zeros(1, dtype=np.int64)
    from scipy.cluster.hierarchy import fcluster, linkage

    tree = linkage(means.astype(np.float64), method="average", metric="cosine")
    return fcluster(tree, t=threshold, criterion="distance").astype(np.int64) - 1


def find_identities(vectors: np.ndarray, crop_ids: np.ndarray, crop_track: np.ndarray,
                    threshold: float) -> list[Identity]:
    """The identities among the face tracks (unordered)."""
    if len(crop_ids) == 0:
        return []
    track_ids, means = track_means(vectors, crop_ids, crop_track)
    labels = cluster_labels(means, threshold)
    crop_tracks = crop_track[crop_ids]
    out = []
    for label in np.unique(labels):
        members = track_ids[labels == label]
        centroid = means[labels == label].sum(axis=0)
        centroid /= max(float(np.linalg.norm(centroid)), 1e-12)
        out.append(Identity(tracks=[int(t) for t in members],
                            face_crops=np.sort(crop_ids[np.isin(crop_tracks, members)]),
                            centroid=centroid.astype(np.float32)))
    return out


def portrait(frame: np.ndarray, face: tuple[float, float, float, float]) -> bytes:
    """A square JPEG around a face box (frame pixels) of an RGB frame."""
    x1, y1, x2, y2 = face
    side = max(x2 - x1, y2 - y1) * (1 + 2 * PORTRAIT_MARGIN)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    h, w = frame.shape[:2]
    box = (int(max(0, cx - side / 2)), int(max(0, cy - side / 2)),
           int(min(w, cx + side / 2)), int(min(h, cy + side / 2)))
    image = Image.fromarray(frame).crop(box)
    image = _square(image).resize((PORTRAIT_PX, PORTRAIT_PX), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=PORTRAIT_JPEG_QUALITY)
    return out.getvalue()


def _square(image: Image.Image) -> Image.Image:
    """Padded (not stretched) to a square: a face at the frame's edge stays a face."""
    side = max(image.size)
    if image.width == image.height:
        return image
    canvas = Image.new("RGB", (side, side), (24, 24, 24))
    canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return canvas


# --- the contact sheet -------------------------------------------------------------------------

SHEET_JPEG_QUALITY = 85
_TILE = 300  # a tile's portrait, pixels: 3 across is ~900 px, what a phone shows full width
_LABEL = 64  # the strip under a portrait
_GAP = 12
_HEADER = 70
_BG = (20, 20, 24)
_BADGE = (255, 204, 0)


@dataclass(frozen=True)
class SheetTile:
    number: int
    portrait: bytes | None  # JPEG, or None (drawn as a blank face)
    caption: str  # e.g. "2:31 · 24%"


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def draw_sheet(title: str, tiles: Sequence[SheetTile]) -> bytes:
    """A JPEG grid of numbered portraits with their captions: one tile per member, 3 across
    (4 from 10 members on), big numbers so that a phone shows them without zooming."""
    cols = 3 if len(tiles) <= 9 else 4
    rows = max(1, -(-len(tiles) // cols))
    width = cols * _TILE + (cols + 1) * _GAP
    height = _HEADER + rows * (_TILE + _LABEL) + (rows + 1) * _GAP
    sheet = Image.new("RGB", (width, height), _BG)
    draw = ImageDraw.Draw(sheet)
    draw.text((_GAP, _HEADER // 2), _fit(draw, title, _font(36), width - 2 * _GAP), fill="white",
              font=_font(36), anchor="lm")
    number_font, caption_font = _font(48), _font(34)
    for i, tile in enumerate(tiles):
        x = _GAP + (i % cols) * (_TILE + _GAP)
        y = _HEADER + _GAP + (i // cols) * (_TILE + _LABEL + _GAP)
        face = _open(tile.portrait)
        if face is not None:
            sheet.paste(face.resize((_TILE, _TILE), Image.Resampling.LANCZOS), (x, y))
        else:
            draw.rectangle((x, y, x + _TILE - 1, y + _TILE - 1), fill=(60, 60, 66))
        label = str(tile.number)
        left, top, right, bottom = draw.textbbox((0, 0), label, font=number_font)
        pad = 10
        draw.rectangle((x, y, x + right - left + 2 * pad, y + bottom - top + 2 * pad), fill=_BADGE)
        draw.text((x + pad - left, y + pad - top), label, fill="black", font=number_font)
        draw.text((x + _TILE // 2, y + _TILE + _LABEL // 2), _fit(draw, tile.caption, caption_font, _TILE),
                  fill="white", font=caption_font, anchor="mm")
    out = io.BytesIO()
    sheet.save(out, "JPEG", quality=SHEET_JPEG_QUALITY)
    return out.getvalue()


def _open(jpeg: bytes | None) -> Image.Image | None:
    if not jpeg:
        return None
    try:
        with Image.open(io.BytesIO(jpeg)) as img:
            return img.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None  # a damaged portrait costs its picture, not the sheet


def _fit(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
         width: int) -> str:
    """`text`, cut with an ellipsis until it fits `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"
