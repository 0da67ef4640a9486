"""Box geometry shared by the detectors, the tracker, calibration and cropping: one rule each."""

from __future__ import annotations

import math

import numpy as np

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels


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


def crop_box(bbox: Box, width: int, height: int) -> tuple[int, int, int, int]:
    """The whole pixels a box covers (floor of its top-left, ceiling of its bottom-right), inside
    a `width`x`height` picture and at least one pixel wide and high. The index and the query
    crop people by this one rule, so the same box gives the same pixels to the embedders."""
    x1, y1 = max(0, math.floor(bbox[0])), max(0, math.floor(bbox[1]))
    x1, y1 = min(x1, width - 1), min(y1, height - 1)
    x2 = min(width, max(math.ceil(bbox[2]), x1 + 1))
    y2 = min(height, max(math.ceil(bbox[3]), y1 + 1))
    return x1, y1, x2, y2
