"""Image embedders for person crops: DINOv2 (mean of the last hidden state's tokens) and CLIP
(the projected image embedding). Both return L2-normalised float32 rows.

Every body embedder is a channel (`Embedder.encode`: one vector per crop), so the re-id models
(reid.py) derive from `Embedder` too.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from PIL import Image

from ..errors import ModelNotFoundError
from .base import l2_normalise
from .channels import Channel, Encoded

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

class Embedder(Channel):
    """A body channel: one L2-normalised vector per person crop."""

    role = kind = "body"
    setting: str  # the setting that names its model, for error messages

    def __init__(self, model: str, *, batch: int) -> None:
        super().__init__()
        self.model_name = model
        self.batch = batch

    def embed(self, crops: Sequence[Image.Image]) -> np.ndarray:
        """m×dim float32 rows, L2-normalised, one per crop."""
        self.load()
        if not crops:
            return np.zeros((0, self._dim), dtype=np.float32)
        return self._embed(crops)

    def _embed(self, crops: Sequence[Image.Image]) -> np.ndarray:
        raise NotImplementedError

    def _predict(self, inputs: Sequence[Image.Image]) -> Encoded:
        return Encoded(self.embed(inputs), np.arange(len(inputs)))


class _HFEmbedder(Embedder):
    classes: tuple[str, str]  # transformers' image processor and model classes
    dim_key: str  # the model config's field that holds the embedding size

    def __init__(self, model: str, *, device: str, batch: int) -> None:
        super().__init__(model, batch=batch)
        self.device = device
        # Torch modules are safe to run concurrently in inference mode, but the image processor
        # and the thread pool of a CPU build contend badly; one batch at a time is faster.
        self._lock = threading.Lock()

    def _load(self) -> None:
        import torch
        import transformers

        processor_cls, model_cls = (getattr(transformers, name) for name in self.classes)
        source = self._source(self.model_name)
        try:
            self._processor = processor_cls.from_pretrained(source)
            self._model = model_cls.from_pretrained(source)
        except (OSError, ValueError) as exc:
            raise self._fail(self.model_name, exc) from exc
        self._model.to(self.device).eval()
        self._torch = torch
        self._dim = int(getattr(self._model.config, self.dim_key))

    def _fail(self, model: str, exc: Exception) -> ModelNotFoundError:
        looks_local = model.startswith((".", "/", "~"))
        missing = looks_local and not Path(model).expanduser().exists()
        reason = "no such folder" if missing else str(exc).splitlines()[0]
        return ModelNotFoundError(f"{self.name} model", model, self.setting, reason)

    def _source(self, model: str) -> str:
        local = Path(model).expanduser()
        return str(local) if local.exists() else model

    def _forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _embed(self, crops: Sequence[Image.Image]) -> np.ndarray:
        rows: list[np.ndarray] = []
        with self._lock, self._torch.inference_mode():
            for start in range(0, len(crops), self.batch):
                batch = [c.convert("RGB") for c in crops[start : start + self.batch]]
                inputs: Any = self._processor(images=batch, return_tensors="pt")
                pixel_values = inputs["pixel_values"].to(self.device)
                rows.append(self._forward(pixel_values).float().cpu().numpy())
        return l2_normalise(np.concatenate(rows))


class Dinov2Embedder(_HFEmbedder):
    name = "dinov2"
    setting = "CASTFINDER_DINOV2_MODEL"
    classes = ("AutoImageProcessor", "AutoModel")
    dim_key = "hidden_size"  # the width of the last hidden state, whose tokens are averaged

    def _forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # The design's embedding: the mean over all tokens of the last hidden state.
        return self._model(pixel_values=pixel_values).last_hidden_state.mean(dim=1)


class ClipEmbedder(_HFEmbedder):
    name = "clip"
    setting = "CASTFINDER_CLIP_MODEL"
    classes = ("CLIPImageProcessor", "CLIPVisionModelWithProjection")
    dim_key = "projection_dim"  # image_embeds are projected to this size

    def _forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self._model(pixel_values=pixel_values).image_embeds


HF_EMBEDDERS: dict[str, type[_HFEmbedder]] = {"dinov2": Dinov2Embedder, "clip": ClipEmbedder}


def make_embedder(kind: str, model: str, *, device: str, batch: int) -> Embedder:
    """A Hugging Face embedder, not loaded yet (see core.models.factory for every model)."""
    if kind not in HF_EMBEDDERS:
        raise ValueError(f"unknown embedder {kind!r}; CASTFINDER_EMBEDDER is dinov2 or clip")
    return HF_EMBEDDERS[kind](model, device=device, batch=batch)
