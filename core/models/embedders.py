"""Image embedders for person crops: DINOv2 (mean of the last hidden state's tokens) and CLIP
(the projected image embedding). Both return L2-normalised float32 rows."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from ..errors import ModelNotFoundError

log = logging.getLogger(__name__)


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


class Embedder:
    name: str  # channel name stored in the manifest
    model_name: str
    dim: int

    def embed(self, crops: Sequence[Image.Image]) -> np.ndarray:
        raise NotImplementedError


class _HFEmbedder(Embedder):
    setting: str

    def __init__(self, model: str, *, device: str, batch: int) -> None:
        import torch

        self.model_name = model
        self.device = device
        self.batch = batch
        self._torch = torch
        self._processor, self._model = self._load(model)
        self._model.to(device).eval()
        # Torch modules are safe to run concurrently in inference mode, but the image processor
        # and the thread pool of a CPU build contend badly; one batch at a time is faster.
        self._lock = threading.Lock()
        self.dim = int(self.embed([Image.new("RGB", (32, 64))]).shape[1])

    classes: tuple[str, str]  # transformers' image processor and model classes

    def _load(self, model: str):
        import transformers

        processor_cls, model_cls = (getattr(transformers, name) for name in self.classes)
        source = self._source(model)
        try:
            return processor_cls.from_pretrained(source), model_cls.from_pretrained(source)
        except (OSError, ValueError) as exc:
            raise self._fail(model, exc) from exc

    def _fail(self, model: str, exc: Exception) -> ModelNotFoundError:
        looks_local = model.startswith((".", "/", "~"))
        missing = looks_local and not Path(model).expanduser().exists()
        reason = "no such folder" if missing else str(exc).splitlines()[0]
        return ModelNotFoundError(f"{self.name} model", model, self.setting, reason)

    def _source(self, model: str) -> str:
        local = Path(model).expanduser()
        return str(local) if local.exists() else model

    def _forward(self, pixel_values):
        raise NotImplementedError

    def embed(self, crops: Sequence[Image.Image]) -> np.ndarray:
        if not crops:
            return np.zeros((0, getattr(self, "dim", 0)), dtype=np.float32)
        rows: list[np.ndarray] = []
        torch = self._torch
        with self._lock, torch.inference_mode():
            for start in range(0, len(crops), self.batch):
                batch = [c.convert("RGB") for c in crops[start : start + self.batch]]
                inputs = self._processor(images=batch, return_tensors="pt")
                pixel_values = inputs["pixel_values"].to(self.device)
                rows.append(self._forward(pixel_values).float().cpu().numpy())
        return l2_normalise(np.concatenate(rows))


class Dinov2Embedder(_HFEmbedder):
    name = "dinov2"
    setting = "CASTFINDER_DINOV2_MODEL"
    classes = ("AutoImageProcessor", "AutoModel")

    def _forward(self, pixel_values):
        # The design's embedding: the mean over all tokens of the last hidden state.
        return self._model(pixel_values=pixel_values).last_hidden_state.mean(dim=1)


class ClipEmbedder(_HFEmbedder):
    name = "clip"
    setting = "CASTFINDER_CLIP_MODEL"
    classes = ("CLIPImageProcessor", "CLIPVisionModelWithProjection")

    def _forward(self, pixel_values):
        return self._model(pixel_values=pixel_values).image_embeds


def make_embedder(kind: str, model: str, *, device: str, batch: int) -> Embedder:
    if kind == "dinov2":
        return Dinov2Embedder(model, device=device, batch=batch)
    if kind == "clip":
        return ClipEmbedder(model, device=device, batch=batch)
    raise ValueError(f"unknown embedder {kind!r}; CASTFINDER_EMBEDDER is dinov2 or clip")
