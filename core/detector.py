"""People detection with ultralytics YOLO.

On the CPU a `.pt` detector runs through OpenVINO: ultralytics' own exporter turns it into an
OpenVINO IR with dynamic input shapes once, cached beside the weights (or in the user cache when
that folder is read-only) under the weights' checksum, so a changed file is exported again. Measured
on a 2-core EPYC (docs/PERFORMANCE.md) it is about 2x PyTorch. When the export fails the detector
stays on PyTorch and says so; on CUDA it stays on PyTorch.

Every frame is letterboxed to the smallest multiple of 32 that holds its long side, capped by
CASTFINDER_DET_IMGSZ, with rectangular padding: a 426x240 frame costs a 448x256 pass, not 640x640.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .errors import ModelNotFoundError

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "openvino", "torch")
_STRIDE = 32


@dataclass(frozen=True)
class Detection:
    bbox: tuple[float, float, float, float]
    score: float


def _looks_like_path(name: str) -> bool:
    return "/" in name or "\\" in name or name.startswith(".") or Path(name).exists()


def inference_size(shape: tuple[int, ...], cap: int) -> int:
    """The letterbox size for a frame of `shape` (H, W, ...): its long side rounded up to the
    stride, at most `cap` (itself rounded down to the stride). Upscaling finds nobody new."""
    cap = max(_STRIDE, cap // _STRIDE * _STRIDE)
    return min(cap, math.ceil(max(shape[0], shape[1]) / _STRIDE) * _STRIDE)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    # Two processes indexing at once export the model once; the second waits for the first.
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _export_dirs(weights: Path) -> list[Path]:
    from .registry import user_cache_models_dir

    return [weights.parent, user_cache_models_dir() / "exports"]


def _writable(folder: Path) -> bool:
    from .registry import writable

    with contextlib.suppress(OSError):
        folder.mkdir(parents=True, exist_ok=True)
    return writable(folder)


def _exported(folder: Path) -> bool:
    return (folder / "metadata.yaml").is_file() and any(folder.glob("*.xml"))


def openvino_export(weights: Path) -> Path:
    """The OpenVINO export of a `.pt` detector: found in the cache, or made now (once)."""
    from .registry import sha256_of

    name = f"{weights.stem}-{sha256_of(weights)[:16]}_openvino_model"
    dirs = _export_dirs(weights)
    for folder in dirs:
        if _exported(folder / name):
            return folder / name
    for folder in dirs:
        if _writable(folder):
            break
    else:
        raise OSError(f"no writable folder for the export among {', '.join(map(str, dirs))}")
    target = folder / name
    with _file_lock(folder / f".{name}.lock"):
        if _exported(target):
            return target
        from ultralytics import YOLO

        log.info("exporting %s to OpenVINO (once; cached in %s)", weights.name, folder)
        work = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=folder))
        try:
            # The exporter writes beside its input: work on a copy, publish with one rename.
            copy = work / weights.name
            shutil.copy2(weights, copy)
            out = Path(YOLO(str(copy), task="detect").export(format="openvino", dynamic=True, half=False,
                                                             verbose=False))
            os.rename(out, target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target


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
        runtime: str = "auto",
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
        self.runtime = "torch"
        if runtime not in RUNTIMES:
            raise ModelNotFoundError("person detector", model, "CASTFINDER_DET_RUNTIME",
                                     f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
        if runtime == "openvino" or (runtime == "auto" and device == "cpu"):
            self._use_openvino(required=runtime == "openvino")

    @staticmethod
    def _load(model: str):
        from ultralytics import YOLO

        if _looks_like_path(model) and not model.endswith(".yaml") and not Path(model).expanduser().is_file():
            if not (Path(model).expanduser().is_dir() and _exported(Path(model).expanduser())):
                raise ModelNotFoundError("person detector", model, "CASTFINDER_DETECTOR", "no such file")
        try:
            path = str(Path(model).expanduser()) if _looks_like_path(model) else model
            return YOLO(path, task="detect")
        except Exception as exc:  # ultralytics raises many types (download, unpickling, yaml)
            raise ModelNotFoundError("person detector", model, "CASTFINDER_DETECTOR", str(exc)) from exc

    def _use_openvino(self, *, required: bool) -> None:
        weights = Path(getattr(self._model, "ckpt_path", "") or "")
        if weights.suffix != ".pt" or not weights.is_file():
            # A config-built model has no weights to export; ONNX/OpenVINO files already are exports.
            if required and self.name.endswith(".yaml"):
                raise ModelNotFoundError("person detector", self.name, "CASTFINDER_DET_RUNTIME",
                                         "a model built from a .yaml config has no weights to export")
            return
        try:
            from ultralytics import YOLO

            exported = YOLO(str(openvino_export(weights)), task="detect")
        except Exception as exc:  # noqa: BLE001 — the exporter and OpenVINO raise many types
            if required:
                raise ModelNotFoundError("person detector", self.name, "CASTFINDER_DET_RUNTIME",
                                         f"the OpenVINO export failed: {exc}") from exc
            log.warning("the person detector stays on PyTorch: its OpenVINO export failed (%s)", exc)
            return
        self._model, self.runtime = exported, "openvino"
        # ultralytics compiles the model on its first call, announcing it: do it now, quietly,
        # while loading (beside the shot pass), not in the middle of the progress bars.
        from ultralytics.utils import LOGGER

        level = LOGGER.level
        LOGGER.setLevel(logging.WARNING)
        try:
            self.detect([np.zeros((64, 64, 3), np.uint8)])
        finally:
            LOGGER.setLevel(level)

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """People in each RGB image, most confident first."""
        out: list[list[Detection]] = []
        # OpenVINO with dynamic shapes runs one frame at a time 1.5-3x faster than in batches
        # (measured, docs/PERFORMANCE.md); PyTorch gains from batches.
        batch_size = 1 if self.runtime == "openvino" else self.batch
        start = 0
        while start < len(images):
            # One call per run of same-sized frames (all of a video's), each at its own size.
            size = images[start].shape[:2]
            stop = start + 1
            while stop < len(images) and stop - start < batch_size and images[stop].shape[:2] == size:
                stop += 1
            # ultralytics treats numpy input as BGR (OpenCV's order).
            batch = [np.ascontiguousarray(img[:, :, ::-1]) for img in images[start:stop]]
            start = stop
            with self._lock:
                results = self._model.predict(
                    batch,
                    imgsz=inference_size(size, self.imgsz),
                    conf=self.conf,
                    classes=self.classes,
                    # Several classes can be "person" (CASTFINDER_PERSON_CLASSES): one box per
                    # person, whichever class won, not one per class around the same person.
                    agnostic_nms=True,
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
