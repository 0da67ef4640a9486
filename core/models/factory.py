"""The one place that turns settings into model objects: the person detector and every channel.

A factory call reads no file: it makes the model object, and `load()` (the engine's model cache
calls it) reads the weights, resolving registry names and downloading on first use. So a cache may
call a factory under its lock.
"""

from __future__ import annotations

from ..settings import BODY_CHANNELS, CHANNELS, Settings
from .base import InferenceModel
from .channels import Channel, FaceChannel
from .detector import PersonDetector
from .embedders import make_embedder
from .reid import ReidEmbedder

REID_CHANNELS = ("osnet", "reid")


def make_detector(settings: Settings, device: str) -> PersonDetector:
    s = settings
    return PersonDetector(s.detector, classes=s.person_classes, conf=s.det_conf, imgsz=s.det_imgsz,
                          batch=s.det_batch, min_px=s.min_person_px, device=device, runtime=s.det_runtime,
                          threads=s.torch_threads)


def make_channel(name: str, model: str, settings: Settings, device: str) -> Channel:
    """The channel `name` running `model` (the setting's value, or what an index recorded)."""
    if name == "face":
        return FaceChannel(model, settings)
    if name in REID_CHANNELS:
        return ReidEmbedder(name, model, settings, batch=settings.embed_batch, threads=settings.torch_threads)
    if name in BODY_CHANNELS:
        return make_embedder(name, model, device=device, batch=settings.embed_batch)
    raise ValueError(f"unknown channel {name!r}")


def make_model(role: str, settings: Settings, device: str, model: str | None = None) -> InferenceModel:
    """The model for a role: "detector", or a channel's name (`model` defaults to its setting)."""
    if role == "detector":
        return make_detector(settings, device)
    if role not in CHANNELS:
        raise ValueError(f"unknown model role {role!r}: detector or a channel ({', '.join(CHANNELS)})")
    return make_channel(role, model if model is not None else settings.model_for(role), settings, device)
