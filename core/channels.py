"""Embedding channels: what an index stores per person crop.

Body channels (dinov2, clip, osnet) give every crop a vector; the face channel gives one only to
crops in which a face is found. Every channel's FAISS ids are crop ids, so channels line up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
from PIL import Image

from .embedders import Embedder, make_embedder
from .settings import BODY_CHANNELS, Settings


@dataclass(frozen=True)
class Encoded:
    vectors: np.ndarray  # m×dim, L2-normalised
    rows: np.ndarray  # which of the given crops each vector belongs to (m)
    boxes: list[tuple[float, float, float, float]] | None = None  # face boxes, in crop pixels


class Channel:
    name: str
    kind: Literal["body", "face"]
    model_name: str
    dim: int

    def encode(self, crops: Sequence[Image.Image]) -> Encoded:
        raise NotImplementedError


class BodyChannel(Channel):
    kind = "body"

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self.name = embedder.name
        self.model_name = embedder.model_name
        self.dim = embedder.dim

    def encode(self, crops: Sequence[Image.Image]) -> Encoded:
        return Encoded(self.embedder.embed(crops), np.arange(len(crops)))


class FaceChannel(Channel):
    kind = "face"
    name = "face"

    def __init__(self, detector: str, *, min_face_px: int) -> None:
        from .faces import FaceEncoder

        self.encoder = FaceEncoder(detector, min_face_px=min_face_px)
        self.model_name = detector
        self.dim = self.encoder.dim

    def encode(self, crops: Sequence[Image.Image]) -> Encoded:
        vectors, hits = self.encoder.encode(crops)
        return Encoded(vectors, np.array([h.crop_index for h in hits], dtype=np.int64), [h.box for h in hits])


def make_channel(name: str, model: str, settings: Settings, device: str) -> Channel:
    if name == "face":
        return FaceChannel(model, min_face_px=settings.min_face_px)
    if name == "osnet":
        from .reid import OsnetEmbedder

        return BodyChannel(OsnetEmbedder(model, batch=settings.embed_batch, threads=settings.torch_threads))
    if name in BODY_CHANNELS:
        return BodyChannel(make_embedder(name, model, device=device, batch=settings.embed_batch))
    raise ValueError(f"unknown channel {name!r}")
