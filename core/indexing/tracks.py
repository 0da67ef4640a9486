"""Linking a person's detections across a shot's sampled frames into tracks.

Greedy matching of each frame's boxes to the tracks seen in the previous frames, on box overlap
(IoU) plus appearance (cosine similarity of the body embedding), the usual recipe of
SORT-style trackers at a few frames per second.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from ..geometry import iou

# A track survives this many sampled frames without a detection (occlusion, a missed box).
_MAX_GAP = 2
# Appearance alone may link boxes that moved a lot between sampled frames ...
_APPEARANCE_ONLY = 0.85
# ... and overlapping boxes must still look alike, so two people crossing are not merged.
_APPEARANCE_MIN = 0.5


@dataclass
class _Track:
    id: int
    box: np.ndarray
    vector: np.ndarray | None
    last_frame: int  # ordinal of the sampled frame in the shot


@dataclass
class ShotTracker:
    """Tracks of one shot. Feed frames in time order; returns a track id per detection.
    `ids` hands out track ids; share one between shots so that ids are unique in a movie."""

    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    iou_min: float = 0.3
    frame_no: int = 0
    active: list[_Track] = field(default_factory=list)

    def update(self, boxes: np.ndarray, vectors: np.ndarray | None) -> list[int]:
        self.frame_no += 1
        self.active = [t for t in self.active if self.frame_no - t.last_frame <= _MAX_GAP + 1]
        ids = [-1] * len(boxes)
        if len(boxes) and self.active:
            overlap = iou(boxes, np.stack([t.box for t in self.active]))
            seen = [t.vector for t in self.active if t.vector is not None]
            if vectors is not None and len(seen) == len(self.active):
                look = vectors @ np.stack(seen).T
            else:
                look = np.ones_like(overlap)
            ok = ((overlap >= self.iou_min) & (look >= _APPEARANCE_MIN)) | (look >= _APPEARANCE_ONLY)
            score = np.where(ok, overlap + look, -np.inf)
            while np.isfinite(score).any():
                d, t = (int(i) for i in np.unravel_index(np.argmax(score), score.shape))
                ids[d] = self.active[t].id
                self.active[t].box = boxes[d]
                self.active[t].vector = None if vectors is None else vectors[d]
                self.active[t].last_frame = self.frame_no
                score[d, :] = -np.inf
                score[:, t] = -np.inf
        for d in range(len(boxes)):
            if ids[d] == -1:
                ids[d] = next(self.ids)
                self.active.append(_Track(ids[d], boxes[d], None if vectors is None else vectors[d], self.frame_no))
        return ids
