"""Synthetic media for tests: small videos with known cuts, frames folders, broken files."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
from PIL import Image


def make_video(path: Path, segments: list[tuple[tuple[int, int, int], int]], *, fps: float = 24.0,
               size: tuple[int, int] = (160, 96), moving: bool = True) -> Path:
    """Write an mp4 whose shots are solid colours (with a moving square so frames differ, unless
    not `moving`). `segments` is [(BGR colour, number of frames)]; cuts fall between segments."""
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened(), "OpenCV cannot write mp4v here"
    n = 0
    for colour, frames in segments:
        for _ in range(frames):
            frame = np.full((h, w, 3), colour, np.uint8)
            x = (n * 3) % (w - 16) if moving else 10
            cv2.rectangle(frame, (x, 10), (x + 12, 22), (255 - colour[0], 255 - colour[1], 255 - colour[2]), -1)
            writer.write(frame)
            n += 1
    writer.release()
    return path


def make_frames_folder(folder: Path, movie: str, shots: dict[tuple[int, int], int], *,
                       size: tuple[int, int] = (96, 64)) -> Path:
    """TRECVID-style dump: {(scene, shot): number of frames}."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for (scene, shot), frames in shots.items():
        for j in range(frames):
            img = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
            cv2.imwrite(str(folder / f"{movie}-{scene}-shot_{shot}-frame_{j}.jpg"), img)
    return folder


def recompressed(image: Image.Image, quality: int) -> Image.Image:
    """`image` as a JPEG of `quality` would show it: what a user's screenshot went through."""
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return Image.open(io.BytesIO(out.getvalue())).convert("RGB")
