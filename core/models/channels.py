"""Embedding channels: what an index stores per person crop.

Body channels (dinov2, clip, osnet, reid: `embedders.Embedder`) give every crop a vector; the
face channel gives one only to crops in which a face is found. Every channel's FAISS ids are crop
ids, so channels line up. Channels are made by `core.models.factory.make_channel`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal, Sequence

import numpy as np
from PIL import Image

from ..errors import ModelNotFoundError
from ..settings import Settings, parse_face_spec
from .base import EmbeddingModel
from .registry import resolve_model

if TYPE_CHECKING:
    from .face_models import FaceHit, OnnxFaceEncoder
    from .faces import FaceEncoder


@dataclass(frozen=True)
class Encoded:
    vectors: np.ndarray  # m×dim, L2-normalised
    rows: np.ndarray  # which of the given crops each vector belongs to (m)
    boxes: list[tuple[float, float, float, float]] | None = None  # face boxes, in crop pixels


class Channel(EmbeddingModel[Sequence[Image.Image], Encoded]):
    """A model that turns person crops into the vectors one of an index's channels stores."""

    kind: ClassVar[Literal["body", "face"]]

    def encode(self, crops: Sequence[Image.Image]) -> Encoded:
        return self.predict(crops)

    @property
    def per_frame(self) -> bool:
        """Whether the channel looks at whole frames (then use `encode_frames`), not at crops."""
        return False

    def encode_frames(self, frames: Sequence[np.ndarray], people: Sequence[np.ndarray]) -> Encoded:
        """The vectors of the people (`people[i]`: n×4 boxes in `frames[i]`) of whole frames."""
        raise TypeError(f"the {self.name} channel encodes person crops, not whole frames")


def _encoded(vectors: np.ndarray, hits: Sequence[FaceHit]) -> Encoded:
    return Encoded(vectors, np.array([h.crop_index for h in hits], dtype=np.int64), [h.box for h in hits])


class FaceChannel(Channel):
    role = kind = "face"
    name = "face"

    def __init__(self, spec: str, settings: Settings) -> None:
        """`spec` is "<detector>+<recogniser>" as an index records it (see settings.face_spec)."""
        super().__init__()
        self.model_name = spec
        self.settings = settings
        self._encoder: FaceEncoder | OnnxFaceEncoder | None = None

    def _load(self) -> None:
        detector, recogniser = parse_face_spec(self.model_name)
        encoder: FaceEncoder | OnnxFaceEncoder
        if recogniser == "dlib":
            from .faces import FaceEncoder

            encoder = FaceEncoder(_local_if_registered(detector, "CASTFINDER_FACE_DETECTOR", self.settings),
                                  min_face_px=self.settings.min_face_px)
        else:
            encoder = _onnx_face_encoder(detector, recogniser, self.model_name, self.settings)
        self._encoder = encoder.load()
        self._dim = encoder.dim

    @property
    def encoder(self) -> FaceEncoder | OnnxFaceEncoder:
        """The face encoder behind the channel (loaded)."""
        self.load()
        assert self._encoder is not None  # set by _load
        return self._encoder

    def _predict(self, inputs: Sequence[Image.Image]) -> Encoded:
        return _encoded(*self.encoder.encode(inputs))

    @property
    def per_frame(self) -> bool:
        """Whether faces are found once per frame (then use `encode_frames`)."""
        from .face_models import OnnxFaceEncoder

        return isinstance(self.encoder, OnnxFaceEncoder)

    def encode_frames(self, frames: Sequence[np.ndarray], people: Sequence[np.ndarray]) -> Encoded:
        """Faces of the people in whole frames; `rows` number the people of all frames in order,
        `boxes` are in frame pixels."""
        from .face_models import OnnxFaceEncoder

        encoder = self.encoder
        if not isinstance(encoder, OnnxFaceEncoder):
            raise TypeError(f"the {self.model_name} face channel finds faces per crop, not per frame")
        return _encoded(*encoder.encode_frames(frames, people))


_DLIB_DETECTORS = ("hog", "cnn")


def _local_if_registered(value: str, setting: str, settings: Settings) -> str:
    """dlib's detectors are built in; anything else (yunet) is a model file to resolve."""
    if value in _DLIB_DETECTORS:
        return value
    return str(resolve_model(value, setting=setting, settings_or_models_dir=settings))


def _onnx_face_encoder(detector: str, recogniser: str, spec: str, settings: Settings) -> OnnxFaceEncoder:
    from .face_models import EdgeFaceEmbedder, OnnxFaceEncoder, ScrfdDetector, YunetDetector
    from .roles import ROLES, read_graph

    if detector in _DLIB_DETECTORS:
        raise ModelNotFoundError(
            "face detector", detector, "CASTFINDER_FACE_DETECTOR",
            f"{recogniser} needs a detector that finds the 5 face landmarks: scrfd_2.5g, scrfd_500m or yunet "
            "(or set CASTFINDER_FACE_MODEL=dlib to use dlib's detectors)",
        )
    threads = settings.torch_threads
    det_path = resolve_model(detector, setting="CASTFINDER_FACE_DETECTOR", settings_or_models_dir=settings)
    det: ScrfdDetector | YunetDetector
    # Each part loads as soon as it is found: a broken detector file is reported before the
    # recogniser is looked for.
    # YuNet or SCRFD by what the file is (12 outputs or 9), else by its name; each checks its file.
    graph = read_graph(det_path)
    if graph is not None and (ROLES["yunet"].fits(graph) or ROLES["scrfd"].fits(graph)):
        yunet = ROLES["yunet"].fits(graph)
    else:
        yunet = "yunet" in det_path.name.lower()
    if yunet:
        det = YunetDetector(det_path).load()
    else:
        det = ScrfdDetector(det_path, threads=threads).load()
    emb_path = resolve_model(recogniser, setting="CASTFINDER_FACE_MODEL", settings_or_models_dir=settings)
    embedder = EdgeFaceEmbedder(emb_path, batch=settings.embed_batch, threads=threads).load()
    return OnnxFaceEncoder(det, embedder, min_face_px=settings.min_face_px, model_name=spec,
                           frame_px=settings.face_frame_px)
