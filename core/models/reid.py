"""Person re-identification embeddings: OSNet (torchreid's model zoo, exported to ONNX) and Intel
Open Model Zoo's person-reidentification-retail-0277 (an OpenVINO IR).

Re-id models are trained to tell people apart across cameras by clothing, build and hair: the
body channels that work on this project's machines (DINOv2 and CLIP weights cannot be had here).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from .embedders import Embedder, l2_normalise
from ..errors import ModelNotFoundError

_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


class OsnetEmbedder(Embedder):
    name = "osnet"
    setting = "CASTFINDER_OSNET_MODEL"

    def __init__(self, model: str, *, batch: int, threads: int = 0, setting: str | None = None) -> None:
        path = Path(model).expanduser()
        self.setting = setting or self.setting
        self.model_name = model
        self.batch = batch
        if not path.is_file():
            raise ModelNotFoundError("OSNet re-id model", model, self.setting, "no such file")
        try:
            import onnxruntime as ort

            options = ort.SessionOptions()
            if threads:
                options.intra_op_num_threads = threads
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except ImportError as exc:
            raise ModelNotFoundError("OSNet re-id model", model, self.setting, "onnxruntime is not installed") from exc
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise ModelNotFoundError("OSNet re-id model", model, self.setting, str(exc).splitlines()[0]) from exc
        inp = self._session.get_inputs()[0]
        outputs = self._session.get_outputs()
        # A re-id model takes N×3×H×W crops and gives one N×D vector each; a detector or another
        # model given by mistake is refused here, not with onnxruntime's error at the first batch.
        if len(inp.shape) != 4 or inp.shape[1] != 3 or len(outputs) != 1 or len(outputs[0].shape) != 2:
            raise ModelNotFoundError(
                "re-id model", model, self.setting,
                f"not a re-id model: it takes {inp.shape} and gives {len(outputs)} output(s) "
                f"{[o.shape for o in outputs][:3]}, not N×3×H×W crops to one N×D vector",
            )
        self._input = inp.name
        _, _, self._h, self._w = (d if isinstance(d, int) else None for d in inp.shape)
        self._h, self._w = self._h or 256, self._w or 128
        self._lock = threading.Lock()
        self.dim = int(self._session.get_outputs()[0].shape[-1] or self.embed([Image.new("RGB", (8, 16))]).shape[1])

    def _prepare(self, crop: Image.Image) -> np.ndarray:
        arr = np.asarray(crop.convert("RGB").resize((self._w, self._h), Image.Resampling.BILINEAR), dtype=np.float32)
        return ((arr / 255.0 - _MEAN) / _STD).transpose(2, 0, 1)

    def embed(self, crops: Sequence[Image.Image]) -> np.ndarray:
        if not crops:
            return np.zeros((0, getattr(self, "dim", 512)), dtype=np.float32)
        rows = []
        for start in range(0, len(crops), self.batch):
            batch = np.stack([self._prepare(c) for c in crops[start : start + self.batch]])
            with self._lock:
                rows.append(self._session.run(None, {self._input: batch})[0])
        return l2_normalise(np.concatenate(rows))


class OpenVinoReidEmbedder(Embedder):
    """An OpenVINO IR re-id model such as person-reidentification-retail-0277: 256×128 BGR input in
    raw 0–255 (the model normalises inside), one vector per crop."""

    name = "reid"
    setting = "CASTFINDER_REID_MODEL"

    def __init__(self, model: str, path: Path, *, batch: int, threads: int = 0) -> None:
        self.model_name = model
        self.batch = batch
        try:
            import openvino as ov
        except ImportError as exc:
            raise ModelNotFoundError("re-id model", model, self.setting, "openvino is not installed") from exc
        core = ov.Core()
        try:
            net = core.read_model(str(path))
            inp = net.inputs[0]
            _, _, self._h, self._w = (int(d) for d in inp.get_partial_shape().get_min_shape())
            # A dynamic batch: one compiled model serves batches of any size.
            net.reshape({inp: ov.PartialShape([-1, 3, self._h, self._w])})
            config = {"INFERENCE_NUM_THREADS": threads} if threads else {}
            self._compiled = core.compile_model(net, "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError for unreadable or unsuitable files
            raise ModelNotFoundError("re-id model", model, self.setting, str(exc).splitlines()[0]) from exc
        self.dim = int(net.outputs[0].get_partial_shape().get_max_shape()[-1])
        self._lock = threading.Lock()
        self._request = self._compiled.create_infer_request()

    def _prepare(self, crop: Image.Image) -> np.ndarray:
        arr = np.asarray(crop.convert("RGB").resize((self._w, self._h), Image.Resampling.BILINEAR), dtype=np.float32)
        return arr[:, :, ::-1].transpose(2, 0, 1)

    def embed(self, crops: Sequence[Image.Image]) -> np.ndarray:
        if not crops:
            return np.zeros((0, self.dim), dtype=np.float32)
        rows = []
        for start in range(0, len(crops), self.batch):
            batch = np.ascontiguousarray(np.stack([self._prepare(c) for c in crops[start : start + self.batch]]))
            with self._lock:
                rows.append(np.array(self._request.infer({0: batch})[0]))
        return l2_normalise(np.concatenate(rows))


def make_reid(model: str, path: Path, *, batch: int, threads: int = 0, name: str = "reid",
              setting: str = "CASTFINDER_REID_MODEL") -> Embedder:
    """The re-id embedder for a model file: an OpenVINO IR (.xml) or an OSNet-style ONNX file."""
    if path.suffix.lower() == ".xml":
        embedder: Embedder = OpenVinoReidEmbedder(model, path, batch=batch, threads=threads)
    else:
        embedder = OsnetEmbedder(str(path), batch=batch, threads=threads, setting=setting)
    embedder.name, embedder.model_name, embedder.setting = name, model, setting
    return embedder
