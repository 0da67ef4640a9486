"""Person re-identification embeddings: OSNet (torchreid's model zoo, exported to ONNX) and Intel
Open Model Zoo's person-reidentification-retail-0277 (an OpenVINO IR).

Re-id models are trained to tell people apart across cameras by clothing, build and hair: the
body channels that work on this project's machines (DINOv2 and CLIP weights cannot be had here).
Which runtime runs a model is known only once its setting is resolved to a file (an `.xml` is an
OpenVINO IR, anything else ONNX), so `ReidEmbedder` picks its runtime when it loads.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from ..errors import ModelNotFoundError
from .base import l2_normalise
from .embedders import Embedder
from .registry import SettingsOrDir, resolve_model
from .roles import Graph, check_role, unreadable

# torchreid trains OSNet on ImageNet-normalised RGB in 0–1.
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
# torchreid's input size (height, width), for an export that leaves it free.
OSNET_INPUT_HW = (256, 128)


class _OnnxReid:
    """An OSNet-style ONNX model: N×3×H×W ImageNet-normalised RGB crops to one N×D vector each."""

    def __init__(self, path: Path, model: str, setting: str, threads: int) -> None:
        what = "OSNet re-id model"
        if not path.is_file():
            raise ModelNotFoundError(what, model, setting, "no such file")
        try:
            import onnxruntime as ort

            options = ort.SessionOptions()
            if threads:
                options.intra_op_num_threads = threads
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except ImportError as exc:
            raise ModelNotFoundError(what, model, setting, "onnxruntime is not installed") from exc
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise unreadable("reid", path=path, name=model, setting=setting, error=exc) from exc
        # A re-id model takes tall N×3×H×W crops and gives one N×D vector each; a detector or a
        # face model given by mistake is refused here, not met at the first batch (or run as it is).
        check_role(Graph.of_onnx(self._session), "reid", name=model, setting=setting)
        inp = self._session.get_inputs()[0]
        outputs = self._session.get_outputs()
        dim = outputs[0].shape[-1]
        if not isinstance(dim, int):  # the size is declared, never learnt from a dummy forward pass
            raise ModelNotFoundError("re-id model", model, setting, "its output size is not fixed")
        self.dim = dim
        self._input = inp.name
        h, w = inp.shape[2:4]
        self.h = h if isinstance(h, int) else OSNET_INPUT_HW[0]
        self.w = w if isinstance(w, int) else OSNET_INPUT_HW[1]

    def prepare(self, crop: Image.Image) -> np.ndarray:
        arr = np.asarray(crop.convert("RGB").resize((self.w, self.h), Image.Resampling.BILINEAR), dtype=np.float32)
        return ((arr / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input: batch})[0]


class _OpenVinoReid:
    """An OpenVINO IR re-id model such as person-reidentification-retail-0277: 256×128 BGR input in
    raw 0–255 (the model normalises inside), one vector per crop."""

    def __init__(self, path: Path, model: str, setting: str, threads: int) -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise ModelNotFoundError("re-id model", model, setting, "openvino is not installed") from exc
        core = ov.Core()
        try:
            net = core.read_model(str(path))
        except Exception as exc:  # OpenVINO raises RuntimeError for unreadable files
            raise ModelNotFoundError("re-id model", model, setting, str(exc).splitlines()[0]) from exc
        check_role(Graph.of_openvino(net), "reid", name=model, setting=setting)
        try:
            inp = net.inputs[0]
            _, _, self.h, self.w = (int(d) for d in inp.get_partial_shape().get_min_shape())
            # A dynamic batch: one compiled model serves batches of any size.
            net.reshape({inp: ov.PartialShape([-1, 3, self.h, self.w])})
            config = {"INFERENCE_NUM_THREADS": threads} if threads else {}
            compiled = core.compile_model(net, "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError for unreadable or unsuitable files
            raise ModelNotFoundError("re-id model", model, setting, str(exc).splitlines()[0]) from exc
        self.dim = int(net.outputs[0].get_partial_shape().get_max_shape()[-1])
        self._request = compiled.create_infer_request()

    def prepare(self, crop: Image.Image) -> np.ndarray:
        arr = np.asarray(crop.convert("RGB").resize((self.w, self.h), Image.Resampling.BILINEAR), dtype=np.float32)
        return arr[:, :, ::-1].transpose(2, 0, 1)

    def run(self, batch: np.ndarray) -> np.ndarray:
        return np.array(self._request.infer({0: np.ascontiguousarray(batch)})[0])


class ReidEmbedder(Embedder):
    """A re-id body channel (`osnet` or `reid`): the model its setting names, on the runtime its
    file needs."""

    def __init__(self, name: str, model: str, settings: SettingsOrDir, *, batch: int,
                 threads: int = 0) -> None:
        super().__init__(model, batch=batch)
        self.name = name
        self.setting = f"CASTFINDER_{name.upper()}_MODEL"
        self._settings = settings  # where registered model files are looked for
        self.threads = threads
        self._lock = threading.Lock()  # one inference request (OpenVINO) or session run at a time

    def _load(self) -> None:
        path = resolve_model(self.model_name, setting=self.setting, settings_or_models_dir=self._settings)
        runtime: _OnnxReid | _OpenVinoReid
        if path.suffix.lower() == ".xml":
            runtime = _OpenVinoReid(path, self.model_name, self.setting, self.threads)
        else:  # its messages name the file: the one the setting resolved to
            runtime = _OnnxReid(path, str(path), self.setting, self.threads)
        self._runtime = runtime
        self._dim = runtime.dim

    def _embed(self, crops: Sequence[Image.Image]) -> np.ndarray:
        rows = []
        for start in range(0, len(crops), self.batch):
            batch = np.stack([self._runtime.prepare(c) for c in crops[start : start + self.batch]])
            with self._lock:
                rows.append(self._runtime.run(batch))
        return l2_normalise(np.concatenate(rows))
