"""People detection with ultralytics YOLO."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import ModelNotFoundError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Detection:
    bbox: tuple[float, float, float, float]
    score: float


def _looks_like_path(name: str) -> bool:
    return "/" in name or "\\" in name or name.startswith(".") or Path(name).exists()


class PersonDetector:
    """Finds people; loaded once, safe to call from several threads."""

    def __init__(
        self,
        model: str,
        *,
        classes: Sequence[int],
        conf: float,
        imgsz: int,
        batch: int,
        min_px: int,
        device: str,
    ) -> None:
        self.name = model
        self.classes = list(classes)
        self.conf = conf
        self.imgsz = imgsz
        self.batch = batch
        self.min_px = min_px
        self.device = device
        self._model = self._load(model)
        # ultralytics predictors keep per-call state; one call at a time per model instance.
        self._lock = threading.Lock()
        names = getattr(self._model, "names", {}) or {}
        unknown = [c for c in self.classes if names and c not in names]
        if unknown:
            raise ModelNotFoundError(
                "person detector", model, "CASTFINDER_PERSON_CLASSES",
                f"it has no class {unknown}; its classes are {dict(names)}",
            )

    @staticmethod
    def _load(model: str):
        from ultralytics import YOLO

        if _looks_like_path(model) and not model.endswith(".yaml") and not Path(model).expanduser().is_file():
            raise ModelNotFoundError("person detector", model, "CASTFINDER_DETECTOR", "no such file")
        try:
            path = str(Path(model).expanduser()) if _looks_like_path(model) else model
            return YOLO(path, task="detect")
        except Exception as exc:  # ultralytics raises many types (download, unpickling, yaml)
            raise ModelNotFoundError("person detector", model, "CASTFINDER_DETECTOR", str(exc)) from exc

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """People in each RGB image, most confident first."""
        out: list[list[Detection]] = []
        for start in range(0, len(images), self.batch):
            # ultralytics treats numpy input as BGR (OpenCV's order).
            batch = [np.ascontiguousarray(img[:, :, ::-1]) for img in images[start : start + self.batch]]
            with self._lock:
                results = self._model.predict(
                    batch,
                    imgsz=self.imgsz,
                    conf=self.conf,
                    classes=self.classes,
                    device=self.device,
                    verbose=False,
                )
            for res in results:
                boxes = res.boxes
                xyxy = boxes.xyxy.cpu().numpy() if len(boxes) else np.zeros((0, 4))
                scores = boxes.conf.cpu().numpy() if len(boxes) else np.zeros((0,))
                dets = [
                    Detection(tuple(float(v) for v in box), float(s))
                    for box, s in zip(xyxy, scores)
                    if min(box[2] - box[0], box[3] - box[1]) >= self.min_px
                ]
                dets.sort(key=lambda d: d.score, reverse=True)
                out.append(dets)
        return out
