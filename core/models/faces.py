"""Face identity embeddings inside person crops: a face detector, then dlib's 128-d ResNet.

Optional: needs the `face` extra (`pip install castfinder[face]`: dlib-bin and
face-recognition-models). A person with no detectable face simply has no face vector.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from ..errors import ModelNotFoundError
from .base import EmbeddingModel, l2_normalise
from .face_models import YUNET_FIRST_SIZE, YUNET_NMS_IOU, YUNET_SCORE, YUNET_TOP_K, FaceHit, FaceVectors

FACE_DIM = 128  # dlib_face_recognition_resnet_model_v1's descriptor
# Person crops smaller than this (short side) are upscaled before face detection: both detectors
# miss faces under ~20 px, and movie frames are often small.
_DETECT_MIN_SIDE = 320
# dlib's HOG detector: the image upsampled once (its 80 px window then finds faces down to ~40 px),
# at dlib's own threshold (no adjustment); the CNN detector without upsampling (it is slow enough).
_HOG_UPSAMPLE, _HOG_THRESHOLD = 1, 0.0
_CNN_UPSAMPLE = 0

Scored = tuple[float, float, float, float, float]  # x1, y1, x2, y2, score


def _models_dir() -> Path:
    # Located without importing the package: its __init__ imports pkg_resources (setuptools<81).
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "face recognition model", "face-recognition-models", "CASTFINDER_CHANNELS",
            "install the face extra: pip install 'castfinder[face]', or drop 'face' from the channels",
        )
    return Path(list(spec.submodule_search_locations)[0]) / "models"


class FaceEncoder(EmbeddingModel[Sequence[Image.Image], FaceVectors]):
    """Finds the main face in each person crop and embeds it. Thread-safe (one call at a time)."""

    role = "face"
    name = "face"
    _dim = FACE_DIM  # known before loading: dlib's network has one output size

    def __init__(self, detector: str = "hog", *, min_face_px: int = 20, score: float = YUNET_SCORE) -> None:
        super().__init__()
        self.detector = detector
        self.model_name = f"dlib_face_recognition_resnet_model_v1+{Path(detector).name}"
        self.min_face_px = min_face_px
        self.score = score
        self._yunet: Any = None
        self._lock = threading.Lock()

    def _load(self) -> None:
        detector = self.detector
        try:
            import dlib
        except ImportError as exc:
            raise ModelNotFoundError(
                "face recognition model", "dlib", "CASTFINDER_CHANNELS",
                "install the face extra: pip install 'castfinder[face]', or drop 'face' from the channels",
            ) from exc
        models = _models_dir()
        self._dlib = dlib
        self._shape = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self._net = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))
        if detector == "hog":
            self._hog = dlib.get_frontal_face_detector()
        elif detector == "cnn":
            self._cnn = dlib.cnn_face_detection_model_v1(str(models / "mmod_human_face_detector.dat"))
        else:
            path = Path(detector).expanduser()
            if not path.is_file():
                raise ModelNotFoundError("face detector", detector, "CASTFINDER_FACE_DETECTOR",
                                         "use hog, cnn, or the path of a YuNet .onnx file")
            import cv2

            try:
                self._yunet = cv2.FaceDetectorYN.create(str(path), "", YUNET_FIRST_SIZE, self.score, YUNET_NMS_IOU,
                                                        YUNET_TOP_K)
            except cv2.error as exc:
                raise ModelNotFoundError("face detector", detector, "CASTFINDER_FACE_DETECTOR", str(exc)) from exc

    def _detect(self, rgb: np.ndarray) -> list[Scored]:
        """Faces as (x1, y1, x2, y2, score) in `rgb`'s pixels."""
        h, w = rgb.shape[:2]
        if self._yunet is not None:
            self._yunet.setInputSize((w, h))
            _, faces = self._yunet.detect(np.ascontiguousarray(rgb[:, :, ::-1]))
            if faces is None:
                return []
            return [(f[0], f[1], f[0] + f[2], f[1] + f[3], float(f[14])) for f in faces]
        if self.detector == "cnn":
            return [(d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom(), float(d.confidence))
                    for d in self._cnn(rgb, _CNN_UPSAMPLE)]
        rects, scores, _ = self._hog.run(rgb, _HOG_UPSAMPLE, _HOG_THRESHOLD)
        return [(r.left(), r.top(), r.right(), r.bottom(), float(s)) for r, s in zip(rects, scores)]

    def encode(self, crops: Sequence[Image.Image]) -> FaceVectors:
        """Face vectors (L2-normalised) for the crops in which a face was found, and where."""
        return self.predict(crops)

    def _predict(self, crops: Sequence[Image.Image]) -> FaceVectors:
        vectors: list[np.ndarray] = []
        hits: list[FaceHit] = []
        dlib = self._dlib
        with self._lock:
            for i, crop in enumerate(crops):
                scale = max(1.0, _DETECT_MIN_SIDE / max(1, min(crop.size)))
                img = crop.convert("RGB")
                if scale > 1.0:
                    img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.BICUBIC)
                rgb = np.ascontiguousarray(np.asarray(img))
                faces = [f for f in self._detect(rgb) if min(f[2] - f[0], f[3] - f[1]) / scale >= self.min_face_px]
                if not faces:
                    continue
                # The person's own face is the largest one inside their box.
                x1, y1, x2, y2, _ = max(faces, key=lambda f: (f[2] - f[0]) * (f[3] - f[1]))
                rect = dlib.rectangle(int(x1), int(y1), int(x2), int(y2))
                shape = self._shape(rgb, rect)
                vectors.append(np.asarray(self._net.compute_face_descriptor(rgb, shape), dtype=np.float32))
                hits.append(FaceHit(i, (x1 / scale, y1 / scale, x2 / scale, y2 / scale)))
        if not vectors:
            return np.zeros((0, FACE_DIM), np.float32), []
        return l2_normalise(np.stack(vectors)), hits
