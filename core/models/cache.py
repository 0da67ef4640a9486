"""The models an engine has made, each made once and loaded once (immich's model cache).

The cache's own lock is held only to find or make a model object, which touches no file; the
loading runs under that model's lock. So a channel that takes a minute to load never stalls the
detector, and threads asking for one model at once load it once.
"""

from __future__ import annotations

import threading
from typing import Callable, Hashable, TypeVar, cast

from .base import InferenceModel

M = TypeVar("M", bound=InferenceModel)


class ModelCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[Hashable, InferenceModel] = {}

    def get(self, key: Hashable, make: Callable[[], M]) -> M:
        """The loaded model under `key`; `make` (a factory call: no I/O) makes it the first time."""
        with self._lock:
            model = self._models.get(key)
            if model is None:
                model = self._models[key] = make()
        # One key is always made by the same factory call, so the stored model is an M.
        return cast(M, model).load()

