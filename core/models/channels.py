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
from ..errors import ModelNotFoundError
from .registry import resolve_model
from ..settings import BODY_CHANNELS, Settings, parse_face_spec


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

    def __init__(self, spec: str, settings: Settings) -> None:
        """`spec` is "<detector>+<recogniser>" as an index records it (see settings.face_spec)."""
        detector, recogniser = parse_face_spec(spec)
        self.model_name = spec
        if recogniser == "dlib":
            from .faces import FaceEncoder

            self.encoder = FaceEncoder(_local_if_registered(detector, "CASTFINDER_FACE_DETECTOR", settings),
                                       min_face_px=settings.min_face_px)
        else:
            self.encoder = _onnx_face_encoder(detector, recogniser, spec, settings)
        self.dim = self.encoder.dim

    def encode(self, crops: Sequence[Image.Image]) -> Encoded:
        vectors, hits = self.encoder.encode(crops)
        return Encoded(vectors, np.array([h.crop_index for h in hits], dtype=np.int64), [h.box for h in hits])

    @property
    def per_frame(self) -> bool:
        """Whether faces are found once per frame (then use `encode_frames`)."""
        return hasattr(self.encoder, "encode_frames")

    def encode_frames(self, frames: Sequence[np.ndarray], people: Sequence[np.ndarray]) -> Encoded:
        """Faces of the people in whole frames; `rows` number the people of all frames in order,
        `boxes` are in frame pixels."""
        vectors, hits = self.encoder.encode_frames(frames, people)
        return Encoded(vectors, np.array([h.crop_index for h in hits], dtype=np.int64), [h.box for h in hits])


_DLIB_DETECTORS = ("hog", "cnn")


def _local_if_registered(value: str, setting: str, settings: Settings) -> str:
    """dlib's detectors are built in; anything else (yunet) is a model file to resolve."""
    if value in _DLIB_DETECTORS:
        return value
    return str(resolve_model(value, setting=setting, settings_or_models_dir=settings))


def _onnx_face_encoder(detector: str, recogniser: str, spec: str, settings: Settings):
    from .face_models import EdgeFaceEmbedder, OnnxFaceEncoder, ScrfdDetector, YunetDetector

    if detector in _DLIB_DETECTORS:
        raise ModelNotFoundError(
            "face detector", detector, "CASTFINDER_FACE_DETECTOR",
            f"{recogniser} needs a detector that finds the 5 face landmarks: scrfd_2.5g, scrfd_500m or yunet "
            "(or set CASTFINDER_FACE_MODEL=dlib to use dlib's detectors)",
        )
    threads = settings.torch_threads
    det_path = resolve_model(detector, setting="CASTFINDER_FACE_DETECTOR", settings_or_models_dir=settings)
    if "yunet" in det_path.name.lower():
        det = YunetDetector(det_path)
    else:
        det = ScrfdDetector(det_path, threads=threads)
    emb_path = resolve_model(recogniser, setting="CASTFINDER_FACE_MODEL", settings_or_models_dir=settings)
    embedder = EdgeFaceEmbedder(emb_path, batch=settings.embed_batch, threads=threads)
    return OnnxFaceEncoder(det, embedder, min_face_px=settings.min_face_px, model_name=spec,
                           frame_px=settings.face_frame_px)


def make_channel(name: str, model: str, settings: Settings, device: str) -> Channel:
    if name == "face":
        return FaceChannel(model, settings)
    if name in ("osnet", "reid"):
        from .reid import make_reid

        setting = f"CASTFINDER_{name.upper()}_MODEL"
        path = resolve_model(model, setting=setting, settings_or_models_dir=settings)
        return BodyChannel(make_reid(model, path, batch=settings.embed_batch, threads=settings.torch_threads,
                                     name=name, setting=setting))
    if name in BODY_CHANNELS:
        return BodyChannel(make_embedder(name, model, device=device, batch=settings.embed_batch))
    raise ValueError(f"unknown channel {name!r}")
