"""The one shape of every model castfinder runs, after immich's machine-learning `InferenceModel`.

A model object is made from its settings without touching a file (cheap, safe under a cache's
lock); `load()` reads the weights once, under the model's own lock; the inference call
(`predict`, and each family's own name for it: `detect`, `embed`, `encode`) loads first if need
be. Models that give one vector per input declare its size (`dim`) from their config, their
ONNX/OpenVINO output shape or a table, never from a dummy forward pass.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from typing import ClassVar, Generic, Literal, TypeVar

import numpy as np

Role = Literal["detector", "face_detector", "face_embedder", "face", "body"]

In = TypeVar("In")
Out = TypeVar("Out")
M = TypeVar("M", bound="InferenceModel")

# Below this norm a row is taken as zero: dividing by it would blow float32 noise up to a unit vector.
_MIN_NORM = 1e-12


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as float32: what every embedding model returns."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, _MIN_NORM)


class InferenceModel(ABC, Generic[In, Out]):
    """A model: its role, the name it is known by, `load()` once, and `predict`."""

    role: ClassVar[Role]
    name: str  # in messages; a channel's name as an index's manifest records it
    model_name: str  # the setting's value it was made from (a registry name, a path, a hub id)

    def __init__(self) -> None:
        self._load_lock = threading.Lock()
        self._loaded = False

    @property
    def loaded(self) -> bool:
        return self._loaded

    def load(self: M) -> M:
        """Reads the weights; idempotent and thread-safe: threads asking at once wait for the one
        that loads, and loading this model never waits for another's. A failed load raises
        (ModelNotFoundError with the setting to change) and is tried again on the next call."""
        if not self._loaded:
            with self._load_lock:
                if not self._loaded:
                    self._load()
                    self._loaded = True
        return self

    @abstractmethod
    def _load(self) -> None:
        """Read the weights; called once, under the model's lock."""

    def predict(self, inputs: In) -> Out:
        self.load()
        return self._predict(inputs)

    @abstractmethod
    def _predict(self, inputs: In) -> Out:
        """The inference call on a loaded model."""


class EmbeddingModel(InferenceModel[In, Out]):
    """A model that gives one vector of a declared size per input (a face, a person crop)."""

    _dim: int

    @property
    def dim(self) -> int:
        """The size of each vector, as the model declares it; loads the model if need be."""
        self.load()
        return self._dim
