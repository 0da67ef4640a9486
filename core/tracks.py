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

# A track survives this many sampled frames without a detection (occlusion, a missed box).
_MAX_GAP = 2
# Appearance alone may link boxes that moved a lot between sampled frames ...
_APPEARANCE_ONLY = 0.85
# ... and overlapping boxes must still look alike, so two people crossing are not merged.
_APPEARANCE_MIN = 0.5


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes a (n×4) and b (m×4)."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_max: float, limit: int | None = None) -> list[int]:
    """Indices kept by greedy non-maximum suppression (as torchvision's nms), best first; at
    most `limit` of them."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    keep: list[int] = []
    while order.size and (limit is None or len(keep) < limit):
        i, rest = int(order[0]), order[1:]
        keep.append(i)
        order = rest[iou(boxes[i : i + 1], boxes[rest])[0] <= iou_max]
    return keep


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
            if vectors is not None and all(t.vector is not None for t in self.active):
                look = vectors @ np.stack([t.vector for t in self.active]).T
            else:
                look = np.ones_like(overlap)
            ok = ((overlap >= self.iou_min) & (look >= _APPEARANCE_MIN)) | (look >= _APPEARANCE_ONLY)
            score = np.where(ok, overlap + look, -np.inf)
            while np.isfinite(score).any():
                d, t = np.unravel_index(np.argmax(score), score.shape)
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
