"""People detection with ultralytics YOLO.

On the CPU a `.pt` detector runs through OpenVINO: ultralytics' own exporter turns it into an
OpenVINO IR with dynamic input shapes once, cached beside the weights (or in the user cache when
that folder is read-only) under the weights' checksum, so a changed file is exported again. Measured
on a 2-core EPYC (docs/PERFORMANCE.md) it is about 2x PyTorch. When the export fails the detector
stays on PyTorch and says so; on CUDA it stays on PyTorch.

The export runs through `OpenVinoYolo`, this module's own few lines of letterboxing, decoding and NMS
(the same as ultralytics' predictor, box for box), not through ultralytics' predictor: per frame that
saves the predictor's torch round trips (a sixth of the detection time at 384 px), and a cached
export loads without importing torch or ultralytics at all.

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
from typing import Any, Iterator, Sequence

import cv2
import numpy as np

from ..errors import ModelNotFoundError
from ..geometry import nms
from .base import InferenceModel
from .roles import check_role, mismatch, read_graph

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "openvino", "torch")
_STRIDE = 32  # YOLOv8's coarsest stride: its input sides are multiples of it
_LETTERBOX_GREY = 114  # ultralytics pads with this grey; the weights were trained on it


Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Detection:
    bbox: Box
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


def _export_name(weights: Path) -> str:
    from .registry import sha256_of

    return f"{weights.stem}-{sha256_of(weights)[:16]}_openvino_model"


def cached_export(weights: Path) -> Path | None:
    """The OpenVINO export of a `.pt` detector when one is cached already, else None."""
    name = _export_name(weights)
    return next((folder / name for folder in _export_dirs(weights) if _exported(folder / name)), None)


def openvino_export(weights: Path) -> Path:
    """The OpenVINO export of a `.pt` detector: found in the cache, or made now (once)."""
    if (found := cached_export(weights)) is not None:
        return found
    name = _export_name(weights)
    dirs = _export_dirs(weights)
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


def letterbox(image: np.ndarray, size: int, *,
              pad_value: int = _LETTERBOX_GREY) -> tuple[np.ndarray, float, float, int, int]:
    """ultralytics' LetterBox(size, auto=True): the image scaled to fit `size`, padded to the
    nearest multiple of the stride on each side, centred. Returns the padded image, the scale
    of x and of y, and the left and top padding."""
    h, w = image.shape[:2]
    r = min(size / h, size / w)
    new_w, new_h = max(round(w * r), 1), max(round(h * r), 1)
    dw, dh = (size - new_w) % _STRIDE / 2, (size - new_h) % _STRIDE / 2
    if (new_w, new_h) != (w, h):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    top, bottom, left, right = round(dh - 0.1), round(dh + 0.1), round(dw - 0.1), round(dw + 0.1)
    padded = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(pad_value,) * 3)
    return padded, new_w / w, new_h / h, left, top


class OpenVinoYolo:
    """A YOLOv8-style OpenVINO export (ultralytics' exporter: one output, N×(4 + classes) rows of
    centre-size boxes and class scores) run directly: letterbox, infer, decode and NMS exactly as
    ultralytics' DetectionPredictor does with agnostic NMS, in numpy."""

    iou = 0.7  # ultralytics' default NMS threshold
    max_det = 300  # and its default cap on boxes per image

    def __init__(self, folder: Path, *, threads: int = 0) -> None:
        import openvino as ov
        import yaml
        from openvino.preprocess import PrePostProcessor

        meta = yaml.safe_load((folder / "metadata.yaml").read_text()) or {}
        if meta.get("task", "detect") != "detect" or meta.get("end2end"):
            raise ValueError(f"{folder.name} is not a YOLO detection export ({meta.get('task')})")
        self.names = {int(k): str(v) for k, v in (meta.get("names") or {}).items()}
        xml = next(iter(sorted(folder.glob("*.xml"))))
        core = ov.Core()
        model = core.read_model(str(xml))
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise ValueError(f"{xml.name} has {len(model.inputs)} inputs and {len(model.outputs)} outputs, not 1 and 1")
        model.reshape({model.inputs[0]: ov.PartialShape([1, 3, -1, -1])})
        # uint8 RGB frames go in as they are: the conversion to 0-1 floats in CHW runs inside the
        # compiled model, fused with its first layer.
        ppp = PrePostProcessor(model)
        ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
        ppp.input().preprocess().convert_element_type(ov.Type.f32).scale(255.0)
        ppp.input().model().set_layout(ov.Layout("NCHW"))
        config: dict[str, str | int] = {"PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self._compiled = core.compile_model(ppp.build(), "CPU", config)
        self._request = self._compiled.create_infer_request()
        self._lock = threading.Lock()

    def __call__(self, rgb: np.ndarray, size: int, *, conf: float,
                 classes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Boxes (n×4, x1 y1 x2 y2 in the image's pixels) and scores of the people in one RGB
        image, letterboxed to `size`, best first."""
        h, w = rgb.shape[:2]
        padded, gx, gy, left, top = letterbox(rgb, size)
        with self._lock:
            out = self._request.infer({0: padded[None]})[0]
        pred = np.asarray(out[0]).T  # N × (4 + classes)
        scores = pred[:, 4:]
        best = scores.max(axis=1)
        cls = scores.argmax(axis=1)
        keep = (best > conf) & np.isin(cls, list(classes))
        if not keep.any():
            return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
        cx, cy, bw, bh = pred[keep, :4].T
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
        score = best[keep]
        order = nms(boxes, score, self.iou, self.max_det)
        boxes, score = boxes[order], score[order]
        boxes[:, [0, 2]] = np.clip((boxes[:, [0, 2]] - left) / gx, 0, w)
        boxes[:, [1, 3]] = np.clip((boxes[:, [1, 3]] - top) / gy, 0, h)
        return boxes, score


class PersonDetector(InferenceModel[Sequence[np.ndarray], list[list[Detection]]]):
    """Finds people; loaded once, safe to call from several threads."""

    role = "detector"

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
        threads: int = 0,
    ) -> None:
        super().__init__()
        self.name = self.model_name = model
        self.requested_runtime = runtime
        self.classes = list(classes)
        self.conf = conf
        self.imgsz = imgsz
        self.batch = batch
        self.min_px = min_px
        self.device = device
        self.threads = threads
        self.runtime = "torch"  # the one it runs on, once loaded
        self._model: Any = None  # ultralytics' YOLO, for PyTorch
        self._ov: OpenVinoYolo | None = None
        # ultralytics predictors keep per-call state; one call at a time per model instance.
        self._lock = threading.Lock()

    def _load(self) -> None:
        model, runtime, device = self.name, self.requested_runtime, self.device
        if runtime not in RUNTIMES:
            raise ModelNotFoundError("person detector", model, "CASTFINDER_DET_RUNTIME",
                                     f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
        openvino = runtime == "openvino" or (runtime == "auto" and device == "cpu")
        ready = self._ready_export(model) if openvino else None
        if ready is not None:
            self._use_export(ready, required=runtime == "openvino")
        if self._ov is None:
            self._model = self._load_ultralytics(model)
            if openvino:
                self._use_openvino(required=runtime == "openvino")
        names = self._ov.names if self._ov is not None else (getattr(self._model, "names", {}) or {})
        unknown = [c for c in self.classes if names and c not in names]
        if unknown:
            raise ModelNotFoundError(
                "person detector", model, "CASTFINDER_PERSON_CLASSES",
                f"it has no class {unknown}; its classes are {dict(names)}",
            )

    @staticmethod
    def _ready_export(model: str) -> Path | None:
        """An OpenVINO export that needs no exporting: the setting names one, or a `.pt` file's
        is cached. Then neither ultralytics nor torch is imported."""
        if not _looks_like_path(model):
            return None
        path = Path(model).expanduser()
        if path.is_dir() and _exported(path):
            return path
        if path.suffix == ".pt" and path.is_file():
            return cached_export(path)
        return None

    @staticmethod
    def _load_ultralytics(model: str) -> Any:
        from ultralytics import YOLO

        if _looks_like_path(model) and not model.endswith(".yaml") and not Path(model).expanduser().is_file():
            if not (Path(model).expanduser().is_dir() and _exported(Path(model).expanduser())):
                raise ModelNotFoundError("person detector", model, "CASTFINDER_DETECTOR", "no such file")
        if _looks_like_path(model) and Path(model).expanduser().is_file():
            _check_detector_file(Path(model).expanduser(), model)
        try:
            path = str(Path(model).expanduser()) if _looks_like_path(model) else model
            yolo = YOLO(path, task="detect")
            _ = yolo.names  # an ONNX or other export loads here, not in the constructor
        except Exception as exc:  # ultralytics raises many types (download, unpickling, yaml, format)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            if _looks_like_path(model) and Path(model).expanduser().is_file():  # there, but not a detector
                raise mismatch("detector", name=model, setting="CASTFINDER_DETECTOR",
                               reason=f"ultralytics cannot load it ({first})") from exc
            raise ModelNotFoundError("person detector", model, "CASTFINDER_DETECTOR", first) from exc
        # Detection, segmentation and pose models all give boxes; a classifier or a rotated-box
        # model does not.
        if getattr(yolo, "task", "detect") not in _BOX_TASKS:
            raise mismatch("detector", name=model, setting="CASTFINDER_DETECTOR",
                           reason=f"it is an ultralytics {yolo.task} model, which gives no person boxes")
        return yolo

    def _use_export(self, folder: Path, *, required: bool) -> None:
        try:
            self._ov = OpenVinoYolo(folder, threads=self.threads)
        except Exception as exc:  # noqa: BLE001 — OpenVINO and yaml raise many types
            if required:
                raise ModelNotFoundError("person detector", self.name, "CASTFINDER_DET_RUNTIME",
                                         f"the OpenVINO export {folder} cannot be loaded: {exc}") from exc
            log.warning("the person detector stays on PyTorch: its OpenVINO export %s cannot be loaded (%s)",
                        folder, exc)
            return
        self.runtime = "openvino"
        self._model = None

    def _use_openvino(self, *, required: bool) -> None:
        weights = Path(getattr(self._model, "ckpt_path", "") or "")
        if weights.suffix != ".pt" or not weights.is_file():
            # A config-built model has no weights to export; ONNX/OpenVINO files already are exports.
            if required and self.name.endswith(".yaml"):
                raise ModelNotFoundError("person detector", self.name, "CASTFINDER_DET_RUNTIME",
                                         "a model built from a .yaml config has no weights to export")
            return
        try:
            exported = openvino_export(weights)
        except Exception as exc:  # noqa: BLE001 — the exporter and OpenVINO raise many types
            if required:
                raise ModelNotFoundError("person detector", self.name, "CASTFINDER_DET_RUNTIME",
                                         f"the OpenVINO export failed: {exc}") from exc
            log.warning("the person detector stays on PyTorch: its OpenVINO export failed (%s)", exc)
            return
        self._use_export(exported, required=required)

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """People in each RGB image, most confident first."""
        return self.predict(images)

    def _predict(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        if self._ov is not None:
            return [self._people(*self._ov(img, inference_size(img.shape, self.imgsz), conf=self.conf,
                                            classes=self.classes)) for img in images]
        out: list[list[Detection]] = []
        batch_size = self.batch  # PyTorch gains from batches (OpenVINO, above, runs a frame at a time)
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
                out.append(self._people(xyxy, scores))
        return out

    def _people(self, xyxy: np.ndarray, scores: np.ndarray) -> list[Detection]:
        """Boxes big enough to identify someone, most confident first."""
        dets = [Detection(_box(box), float(s)) for box, s in zip(xyxy, scores)
                if min(box[2] - box[0], box[3] - box[1]) >= self.min_px]
        dets.sort(key=lambda d: d.score, reverse=True)
        return dets


# ultralytics tasks whose results hold boxes (`results.boxes`).
_BOX_TASKS = ("detect", "segment", "pose")
# Files ultralytics loads as a detector: checkpoints, configs and the exports it runs.
_DETECTOR_SUFFIXES = (".pt", ".yaml", ".yml", ".onnx", ".torchscript", ".engine")


def _check_detector_file(path: Path, model: str) -> None:
    """Refuse a file that cannot be a person detector before ultralytics reads it (its errors
    for a wrong file are a page long, or come only at the first frame): an ONNX or OpenVINO
    graph must have a detector's shape; any other file must be of a kind ultralytics loads."""
    graph = read_graph(path) if path.suffix.lower() in (".onnx", ".xml") else None
    if graph is not None:
        check_role(graph, "detector", name=model, setting="CASTFINDER_DETECTOR")
        if path.suffix.lower() == ".xml":
            raise mismatch("detector", name=model, setting="CASTFINDER_DETECTOR",
                           reason="ultralytics runs an OpenVINO export as its folder (…_openvino_model/, with "
                                  "metadata.yaml), not as a bare .xml")
        return
    if path.suffix.lower() not in _DETECTOR_SUFFIXES or path.suffix.lower() == ".onnx":
        raise mismatch("detector", name=model, setting="CASTFINDER_DETECTOR",
                       reason="it is not a model file that ultralytics or ONNX Runtime can read")


def _box(values: np.ndarray) -> Box:
    x1, y1, x2, y2 = (float(v) for v in values)
    return x1, y1, x2, y2
