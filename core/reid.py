"""Person re-identification embeddings with OSNet (torchreid's model zoo, exported to ONNX).

Re-id models are trained to tell people apart across cameras by clothing, build and hair: the
body channel that works on this project's machines (DINOv2 and CLIP weights cannot be had here).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from .embedders import Embedder, l2_normalise
from .errors import ModelNotFoundError

_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


class OsnetEmbedder(Embedder):
    name = "osnet"
    setting = "CASTFINDER_OSNET_MODEL"

    def __init__(self, model: str, *, batch: int, threads: int = 0) -> None:
        path = Path(model).expanduser()
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
