"""A whole frame's descriptor: what lets a screenshot find its frame across the catalogue.

No model: uniform borders (letterboxing, pillarboxing, the flat bars of a player's UI) are cut
away, the rest is shrunk to a tiny colour thumbnail (YCbCr, area-averaged) and normalised:
brightness and contrast taken out of the luma, the colours kept, then L2-normalised, so that the inner product of
two descriptors is their cosine. A tiny thumbnail is what survives JPEG at quality 40, a 50 %
resize and added borders almost unchanged (benchmarks/bench_identify.py measured it against a DCT
perceptual hash: docs/EVALUATION.md, "Which movie is this?").
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# Bump when the descriptor changes: the catalogue re-reads every movie whose descriptors were
# made by another version (and indexes keep the version they were built with).
DESCRIPTOR_VERSION = "thumb16-v4"
GRID = 16  # the thumbnail is GRID×GRID cells
DIM = GRID * GRID * 3
# Luma's spread under this is flat: not blown up into noise.
_FLAT_LUMA = 8.0
# Chroma's typical spread around grey, in YCbCr levels.
_CHROMA_SCALE = 32.0
# Chroma counts less than luma: colour grading and JPEG's chroma subsampling move it most.
_CHROMA_WEIGHT = 0.5
# A border row or column: every pixel within this many grey levels of the border's colour ...
_BORDER_TOLERANCE = 32
# ... for all but this fraction of its pixels (a logo or a subtitle in the bar is allowed) ...
_BORDER_OUTLIERS = 0.02
# ... and at most this fraction of the frame is cut from each side (a black night sky stays).
_MAX_BORDER = 0.4
# A border is dark (a letterbox: every pixel under _DARK_BAR) or perfectly flat (a player's or an
# app's bar of any colour); a picture's smooth edge (a sky, a wall) is neither, and stays.
_DARK_BAR = 40
_FLAT_BAR = 3.0
# Past a border, this fraction of the frame more is cut: the bar's edge, blurred by compression.
_GUARD = 0.005
# Frames are shrunk to at most this long side before the border search: it is fast at any size.
_WORK_SIDE = 256


def content_box(rgb: np.ndarray) -> tuple[int, int, int, int]:
    """(x1, y1, x2, y2) of the picture inside uniform borders of `rgb` (H×W×3 uint8)."""
    h, w = rgb.shape[:2]
    grey = rgb.astype(np.int16).mean(axis=2)

    def is_dark(line: np.ndarray) -> bool:
        return bool(np.mean(line > _DARK_BAR) <= _BORDER_OUTLIERS)

    def is_border(line: np.ndarray, colour: float | None) -> bool:
        if colour is None:  # dark bars: every line dark, whatever its exact shade
            return is_dark(line)
        return bool(np.mean(np.abs(line - colour) > _BORDER_TOLERANCE) <= _BORDER_OUTLIERS)

    def trim(lines: np.ndarray, limit: int) -> int:
        """How many of `lines` (first to last) are border, and a guard band past them (JPEG's
        ringing blurs the bar's edge into the picture's first rows). Dark lines are border by
        themselves, so that a letterboxed screenshot and its film frame lose the same dark rows of
        picture; a flat bar of another colour (an app's) is followed while lines keep its colour."""
        first = lines[0]
        colour: float | None
        if is_dark(first):
            colour = None
        elif float(first.std()) <= _FLAT_BAR:
            colour = float(np.median(first))
        else:
            return 0  # neither a dark bar nor a flat one: the picture itself
        count = 0
        while count < limit and is_border(lines[count], colour):
            count += 1
        return min(limit, count + max(1, round(_GUARD * len(lines)))) if count else 0

    top = trim(grey, int(h * _MAX_BORDER))
    bottom = trim(grey[::-1], int(h * _MAX_BORDER))
    left = trim(grey.T, int(w * _MAX_BORDER))
    right = trim(grey.T[::-1], int(w * _MAX_BORDER))
    if h - top - bottom < 8 or w - left - right < 8:  # a blank frame: all of it
        return 0, 0, w, h
    return left, top, w - right, h - bottom


def describe(image: Image.Image | np.ndarray) -> np.ndarray:
    """The frame's descriptor: DIM float32 values, L2-normalised (zeros for a blank frame)."""
    img = image if isinstance(image, Image.Image) else Image.fromarray(np.ascontiguousarray(image))
    img = img.convert("RGB")
    if max(img.size) > _WORK_SIDE:
        img = img.copy()
        img.thumbnail((_WORK_SIDE, _WORK_SIDE), Image.Resampling.BOX)
    x1, y1, x2, y2 = content_box(np.asarray(img))
    small = img.crop((x1, y1, x2, y2)).convert("YCbCr").resize((GRID, GRID), Image.Resampling.BOX)
    cells = np.asarray(small, dtype=np.float32).reshape(-1, 3)
    # Luma: the layout of light and dark, with brightness and contrast taken out. Chroma: the
    # colours themselves (around grey), which tell a red shot from a blue one of the same layout.
    luma = cells[:, 0] - cells[:, 0].mean()
    luma /= max(float(luma.std()), _FLAT_LUMA)
    chroma = (cells[:, 1:] - 128.0) / _CHROMA_SCALE * _CHROMA_WEIGHT
    cells = np.column_stack([luma, chroma])
    vec = cells.T.reshape(-1)
    norm = float(np.linalg.norm(vec))
    return (vec / norm if norm > 1e-6 else np.zeros(DIM)).astype(np.float32)


def describe_many(frames: list[np.ndarray]) -> np.ndarray:
    return np.stack([describe(f) for f in frames]).astype(np.float32) if frames else np.zeros((0, DIM), np.float32)
