"""Faces with ONNX models: SCRFD (or YuNet) finds faces and their 5 landmarks, each face is warped
to the ArcFace 5-point template and embedded by EdgeFace (512-d).

Faces are found once per *frame* and then given to the person boxes they sit in: one 640×640
detector pass per frame instead of one per person, and a face cut in half by a loose person box is
still found. Embeddings run in batches across all the faces of a batch of frames.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
from PIL import Image

from ..errors import ModelNotFoundError
from ..geometry import nms
from .base import EmbeddingModel, InferenceModel, l2_normalise
from .roles import Graph, RoleName, check_role, read_graph, unreadable

Box = tuple[float, float, float, float]

# InsightFace's ArcFace template for a 112×112 face (what EdgeFace was trained on).
ARCFACE_SIZE = 112
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)
# Where the box around degenerate landmarks goes in the aligned face (three corners, at 112 px):
# about where the template's eyes and mouth span.
_FALLBACK_CORNERS = np.array([[30, 40], [82, 40], [30, 92]], dtype=np.float32)
# EdgeFace (like ArcFace) was trained on pixels mapped to [-1, 1]: (x - 127.5) / 127.5.
_EDGEFACE_MEAN, _EDGEFACE_SCALE = 127.5, 127.5

# SCRFD: InsightFace's input normalisation, (x - 127.5) / 128, and its exports' square input.
_SCRFD_MEAN, _SCRFD_SCALE = 127.5, 128.0
_SCRFD_SIDE = 640
# 0.4 rather than InsightFace's 0.5: film faces (graded, lit from the side, turned) score lower
# than WIDER FACE's, and a face must also sit where a person's head is to be used.
SCRFD_SCORE = 0.4
SCRFD_NMS_IOU = 0.4  # InsightFace's own
# onnxruntime logs errors only (3): its warnings about unused initialisers are noise to a user.
_ORT_ERRORS_ONLY = 3

# YuNet (cv2.FaceDetectorYN): OpenCV Zoo's demo thresholds (score 0.6, NMS 0.3, at most 50
# faces, more than a film frame holds). The input size is set per image before each pass; the
# first one only has to be valid.
YUNET_SCORE = 0.6
YUNET_NMS_IOU = 0.3
YUNET_TOP_K = 50
YUNET_FIRST_SIZE = (320, 320)


@dataclass(frozen=True)
class FaceHit:
    """A face one face encoder found: one result type for every face encoder."""

    crop_index: int  # which of the given crops (or people, for per-frame encoders) the face belongs to
    box: Box  # in that crop's pixels, or the frame's for per-frame encoders


@dataclass(frozen=True)
class FaceBox:
    box: Box  # x1, y1, x2, y2 in the image's pixels
    score: float
    landmarks: np.ndarray | None = None  # 5×2: eyes, nose, mouth corners (the person's right eye first)

    @property
    def short_side(self) -> float:
        return min(self.box[2] - self.box[0], self.box[3] - self.box[1])


def _onnx_session(path: Path, role: RoleName, setting: str, threads: int, model: bytes | None = None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = _ORT_ERRORS_ONLY
    try:
        return ort.InferenceSession(model if model is not None else str(path), options,
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types for unreadable files
        raise unreadable(role, path=path, name=str(path), setting=setting, error=exc) from exc


def _free_input_size(path: Path) -> bytes | None:
    """The ONNX model with its input's height and width left free, or None when it cannot be read
    that way. SCRFD is fully convolutional: exports fix 640×640, but any multiple of 32 runs, and
    a 16:9 frame letterboxed to 640×384 costs 60% of the square pass."""
    try:
        import onnx

        model = onnx.load(str(path))
        dims = model.graph.input[0].type.tensor_type.shape.dim
        if len(dims) != 4:
            return None
        dims[2].dim_param, dims[3].dim_param = "height", "width"
        for output in model.graph.output:
            output.type.tensor_type.ClearField("shape")
        del model.graph.value_info[:]  # shapes inferred for 640×640 would contradict the free input
        return model.SerializeToString()
    except Exception:  # noqa: BLE001 — onnx missing or an unusual file: the fixed size still works
        return None


class ScrfdDetector(InferenceModel[np.ndarray, list[FaceBox]]):
    """InsightFace SCRFD (the `_kps` exports: boxes and 5 landmarks) on a letterboxed input: the
    frame's own shape (a multiple of 32, long side at most 640) when the model allows it, else
    the export's fixed square."""

    role = "face_detector"
    name = "SCRFD face detector"
    _STRIDES = (8, 16, 32)
    _ANCHORS = 2  # anchors per grid cell in InsightFace's SCRFD configs

    def __init__(self, path: Path, *, score: float = SCRFD_SCORE, nms_iou: float = SCRFD_NMS_IOU,
                 threads: int = 0) -> None:
        super().__init__()
        self.path = path
        self.model_name = str(path)
        self.score = score
        self.nms_iou = nms_iou
        self.threads = threads
        self._centres: dict[tuple[int, tuple[int, int]], np.ndarray] = {}
        self._lock = threading.Lock()

    def _load(self) -> None:
        path, threads = self.path, self.threads
        # SCRFD with landmarks: 9 outputs (scores, boxes, landmarks at 3 strides); anything else is
        # refused, judged on the file as it is (the free-size graph below has no output shapes).
        check_role(Graph.of_onnx(_onnx_session(path, "scrfd", "CASTFINDER_FACE_DETECTOR", threads)), "scrfd",
                   name=str(path), setting="CASTFINDER_FACE_DETECTOR")
        # The free-size graph when it loads; else the file as it is (its fixed square).
        free = _free_input_size(path)
        session = None
        if free is not None:
            try:
                session = _onnx_session(path, "scrfd", "CASTFINDER_FACE_DETECTOR", threads, free)
            except ModelNotFoundError:
                pass
        if session is None:
            session = _onnx_session(path, "scrfd", "CASTFINDER_FACE_DETECTOR", threads)
        self.session = session
        inp = session.get_inputs()[0]
        self._input = inp.name
        h, w = inp.shape[2:4]
        self.free_size = not (isinstance(w, int) and isinstance(h, int))
        self.size = (_SCRFD_SIDE, _SCRFD_SIDE) if self.free_size else (int(w), int(h))

    def _anchor_centres(self, stride: int, size: tuple[int, int]) -> np.ndarray:
        key = (stride, size)
        if key not in self._centres:
            w, h = size[0] // stride, size[1] // stride
            grid = np.stack(list(np.mgrid[:h, :w][::-1]), axis=-1).astype(np.float32).reshape(-1, 2) * stride
            self._centres[key] = np.repeat(grid, self._ANCHORS, axis=0)
        return self._centres[key]

    def frame_scale(self, w: int, h: int, upscale: bool = True, max_side: int | None = None) -> float:
        """The scale a w×h image is seen at: fitted into the model's input; without `upscale`
        never enlarged; `max_side` caps the scaled long side (a free-size model)."""
        self.load()
        scale = min(self.size[0] / w, self.size[1] / h)
        if not self.free_size:
            return scale
        scale = scale if upscale else min(scale, 1.0)
        if max_side:
            scale = min(scale, max_side / max(w, h))
        return scale

    def input_size(self, w: int, h: int, upscale: bool = True, max_side: int | None = None,
                   scale: float | None = None) -> tuple[tuple[int, int], float]:
        """(input width, height) for a w×h image and the scale that fits it in (see
        `frame_scale`), or at the `scale` given (a part of a frame, at the frame's scale)."""
        self.load()
        if not self.free_size:
            fit = min(self.size[0] / w, self.size[1] / h)
            return self.size, fit if scale is None else min(scale, fit)
        if scale is None:
            scale = self.frame_scale(w, h, upscale, max_side)
        stride = self._STRIDES[-1]
        cw, ch = (max(stride, -(-round(v * scale) // stride) * stride) for v in (w, h))
        return (cw, ch), scale

    def _predict(self, inputs: np.ndarray) -> list[FaceBox]:
        return self.detect(inputs)

    def detect(self, rgb: np.ndarray, upscale: bool = True, max_side: int | None = None,
               scale: float | None = None) -> list[FaceBox]:
        """Faces in an RGB image. Small images are enlarged to the model's size unless
        `upscale` is off (film frames: their faces are big enough, and the pass costs less);
        `max_side` shrinks the input further where only big faces are looked for; `scale`
        fixes the scale instead (a part of a frame seen as the whole frame would be)."""
        self.load()
        h, w = rgb.shape[:2]
        size, scale = self.input_size(w, h, upscale, max_side, scale)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        canvas = np.zeros((size[1], size[0], 3), np.uint8)  # padded bottom-right, as in training
        canvas[:nh, :nw] = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_LINEAR if scale < 1 else cv2.INTER_CUBIC)
        blob = ((canvas.astype(np.float32) - _SCRFD_MEAN) / _SCRFD_SCALE).transpose(2, 0, 1)[None]
        with self._lock:
            outs = [o.reshape(-1, o.shape[-1]) for o in self.session.run(None, {self._input: blob})]
        boxes, scores, points = [], [], []
        for i, stride in enumerate(self._STRIDES):
            s = outs[i][:, 0]
            keep = np.flatnonzero(s >= self.score)
            if not len(keep):
                continue
            centres = self._anchor_centres(stride, size)[keep]
            d = outs[i + 3][keep] * stride
            k = outs[i + 6][keep] * stride
            boxes.append(np.concatenate([centres - d[:, :2], centres + d[:, 2:]], axis=1))
            points.append((np.repeat(centres, 5, axis=0).reshape(-1, 10) + k).reshape(-1, 5, 2))
            scores.append(s[keep])
        if not boxes:
            return []
        b, sc, p = np.concatenate(boxes) / scale, np.concatenate(scores), np.concatenate(points) / scale
        return [FaceBox(_box(b[i]), float(sc[i]), p[i].astype(np.float32)) for i in nms(b, sc, self.nms_iou)]


def _box(values: Sequence[float] | np.ndarray) -> Box:
    x1, y1, x2, y2 = (float(v) for v in values)
    return x1, y1, x2, y2


class YunetDetector(InferenceModel[np.ndarray, list[FaceBox]]):
    """OpenCV Zoo's YuNet: boxes and the same 5 landmarks, at the image's own size."""

    role = "face_detector"
    name = "YuNet face detector"

    def __init__(self, path: Path, *, score: float = YUNET_SCORE) -> None:
        super().__init__()
        self.path = path
        self.model_name = str(path)
        self.score = score
        self._lock = threading.Lock()

    def _load(self) -> None:
        # OpenCV reads any ONNX file here and fails only at the first face: check the graph first.
        graph = read_graph(self.path)
        if graph is None:
            raise unreadable("yunet", path=self.path, name=str(self.path), setting="CASTFINDER_FACE_DETECTOR",
                             error="not an ONNX file")
        check_role(graph, "yunet", name=str(self.path), setting="CASTFINDER_FACE_DETECTOR")
        try:
            self._net = cv2.FaceDetectorYN.create(str(self.path), "", YUNET_FIRST_SIZE, self.score, YUNET_NMS_IOU,
                                                  YUNET_TOP_K)
        except cv2.error as exc:
            raise ModelNotFoundError(self.name, str(self.path), "CASTFINDER_FACE_DETECTOR", str(exc)) from exc

    def frame_scale(self, w: int, h: int, upscale: bool = True, max_side: int | None = None) -> float:
        return 1.0

    def _predict(self, inputs: np.ndarray) -> list[FaceBox]:
        return self.detect(inputs)

    def detect(self, rgb: np.ndarray, upscale: bool = True, max_side: int | None = None,
               scale: float | None = None) -> list[FaceBox]:
        self.load()
        h, w = rgb.shape[:2]  # YuNet always runs at the image's own size
        with self._lock:
            self._net.setInputSize((w, h))
            _, faces = self._net.detect(np.ascontiguousarray(rgb[:, :, ::-1]))
        if faces is None:
            return []
        return [FaceBox((float(f[0]), float(f[1]), float(f[0] + f[2]), float(f[1] + f[3])), float(f[14]),
                        np.asarray(f[4:14], np.float32).reshape(5, 2)) for f in faces]


def align(rgb: np.ndarray, landmarks: np.ndarray, size: int = ARCFACE_SIZE) -> np.ndarray:
    """The face warped (similarity transform) so that its landmarks sit on the ArcFace template."""
    zoom = size / float(ARCFACE_SIZE)
    matrix, _ = cv2.estimateAffinePartial2D(landmarks.astype(np.float32), ARCFACE_TEMPLATE * zoom, method=cv2.LMEDS)
    if matrix is None:  # degenerate landmarks (all on a line): fall back to the box around them
        x1, y1 = landmarks.min(axis=0)
        x2, y2 = landmarks.max(axis=0)
        matrix = cv2.getAffineTransform(np.float32([[x1, y1], [x2, y1], [x1, y2]]), _FALLBACK_CORNERS * zoom)
    return cv2.warpAffine(rgb, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


class EdgeFaceEmbedder(EmbeddingModel[Sequence[np.ndarray], np.ndarray]):
    """EdgeFace (or any ArcFace-style ONNX model): aligned 112×112 RGB faces → L2-normalised vectors."""

    role = "face_embedder"
    name = "face recognition model"

    def __init__(self, path: Path, *, batch: int = 32, threads: int = 0) -> None:
        super().__init__()
        self.path = path
        self.model_name = str(path)
        self.batch = batch
        self.threads = threads
        self._lock = threading.Lock()

    def _load(self) -> None:
        session = _onnx_session(self.path, "face_embedder", "CASTFINDER_FACE_MODEL", self.threads)
        # N×3×112×112 aligned faces to one vector each: a detector or a re-id model is refused.
        check_role(Graph.of_onnx(session), "face_embedder", name=str(self.path), setting="CASTFINDER_FACE_MODEL")
        self._input = session.get_inputs()[0].name
        dim = session.get_outputs()[0].shape[-1]
        if not isinstance(dim, int):
            raise ModelNotFoundError(self.name, str(self.path), "CASTFINDER_FACE_MODEL", "its output size is not fixed")
        self._dim = dim
        # A fixed batch dimension (some exports) means one face per run.
        fixed = session.get_inputs()[0].shape[0]
        if isinstance(fixed, int):
            self.batch = fixed
        self.session = session

    def embed(self, faces: Sequence[np.ndarray]) -> np.ndarray:
        return self.predict(faces)

    def _predict(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        if not len(inputs):
            return np.zeros((0, self._dim), np.float32)
        rows = []
        for start in range(0, len(inputs), self.batch):
            chunk = np.stack(inputs[start : start + self.batch]).astype(np.float32)
            blob = ((chunk - _EDGEFACE_MEAN) / _EDGEFACE_SCALE).transpose(0, 3, 1, 2)
            with self._lock:
                rows.append(self.session.run(None, {self._input: blob})[0])
        return l2_normalise(np.concatenate(rows))


# Where a person's face can be, in shares of the person's box: its centre from a little above the
# box's top (a raised head, a box cut at the forehead) down to 60% of its height (someone bending),
# and at most 1.2 times as wide as the box (a head-and-shoulders box is barely wider than the face).
_HEAD_ABOVE = 0.1
_HEAD_BELOW = 0.6
_FACE_MAX_WIDTH = 1.2
# A face's box is at most this much taller than wide (head_region reaches this far up and down).
_FACE_TALLNESS = 1.3


def assign_faces(faces: Sequence[FaceBox], people: np.ndarray) -> dict[int, FaceBox]:
    """Which face belongs to which person box (n×4): a face is a person's when its centre lies in
    the upper part of the box, where a head is; each person and each face is used once, the most
    confident faces first, and a face goes to the tightest box that holds it (the person in front)."""
    taken: dict[int, FaceBox] = {}
    if not len(people):
        return taken
    people = np.asarray(people, dtype=np.float64)
    heights = people[:, 3] - people[:, 1]
    widths = people[:, 2] - people[:, 0]
    for face in sorted(faces, key=lambda f: -f.score):
        cx, cy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
        fw = face.box[2] - face.box[0]
        inside = ((people[:, 0] <= cx) & (cx <= people[:, 2]) & (people[:, 1] - _HEAD_ABOVE * heights <= cy)
                  & (cy <= people[:, 1] + _HEAD_BELOW * heights) & (fw <= _FACE_MAX_WIDTH * widths))
        for p in np.flatnonzero(inside)[np.argsort((widths * heights)[inside])]:
            if int(p) not in taken:
                taken[int(p)] = face
                break
    return taken


def head_region(people: np.ndarray, w: int, h: int, margin_px: float = 0.0) -> tuple[int, int, int, int]:
    """The part of a w×h frame (x1, y1, x2, y2, whole pixels) that holds every face
    `assign_faces` could give to these person boxes: around each box's upper part, as wide as the
    widest face it accepts, plus `margin_px` of context for the detector."""
    people = np.asarray(people, dtype=np.float64).reshape(-1, 4)
    bw, bh = people[:, 2] - people[:, 0], people[:, 3] - people[:, 1]
    half = _FACE_MAX_WIDTH / 2 * bw + margin_px  # the widest face assign_faces accepts, halved
    x1 = np.min(people[:, 0] - half)
    x2 = np.max(people[:, 2] + half)
    y1 = np.min(people[:, 1] - _HEAD_ABOVE * bh - _FACE_TALLNESS * half)
    y2 = np.max(people[:, 1] + _HEAD_BELOW * bh + _FACE_TALLNESS * half)
    return (max(0, int(np.floor(x1))), max(0, int(np.floor(y1))),
            min(w, int(np.ceil(x2))), min(h, int(np.ceil(y2))))


# Context around the head region, in detector input pixels: beyond its receptive field's reach
# at the strides that find small faces.
_REGION_MARGIN = 32

# A person box at least this share of the frame's height is a close-up (see _assign_in_frame),
# searched again for a face at this input size: its face is big (a 720p close-up's is ≥ 150 px).
_CLOSE_UP = 0.5
_CLOSE_UP_SIDE = 320


# A part of a frame this large is searched as the whole frame: cutting it saves too little.
_WHOLE_FRAME_SHARE = 0.9
# Faces found both in a frame and in its close-up pass are one face when their boxes overlap this much.
_CLOSE_UP_NMS_IOU = 0.4

FaceVectors = tuple[np.ndarray, list[FaceHit]]  # L2-normalised rows and, for each, where its face is


class OnnxFaceEncoder(EmbeddingModel[Sequence[Image.Image], FaceVectors]):
    """A landmark face detector plus an aligned-face embedder; thread-safe."""

    role = "face"
    name = "face"

    def __init__(self, detector: ScrfdDetector | YunetDetector, embedder: EdgeFaceEmbedder, *,
                 min_face_px: int, model_name: str, frame_px: int | None = None) -> None:
        super().__init__()
        self.detector = detector
        self.frame_px = frame_px  # the largest input side for a film frame's faces
        self.embedder = embedder
        self.min_face_px = min_face_px
        self.model_name = model_name

    def _load(self) -> None:
        self.detector.load()
        self._dim = self.embedder.load().dim

    def _faces(self, rgb: np.ndarray, upscale: bool = True, max_side: int | None = None,
               scale: float | None = None) -> list[FaceBox]:
        return [f for f in self.detector.detect(rgb, upscale, max_side, scale)
                if f.landmarks is not None and f.short_side >= self.min_face_px]

    def _frame_faces(self, rgb: np.ndarray, boxes: np.ndarray) -> list[FaceBox]:
        """The faces of a film frame where its people's heads can be: the detector sees only
        the part of the frame around them (`head_region`), at the whole frame's scale, so that
        it finds the faces a whole-frame pass finds there, for less (a wide shot's sky, floor
        and black bars are not searched)."""
        h, w = rgb.shape[:2]
        scale = self.detector.frame_scale(w, h, upscale=False, max_side=self.frame_px)
        x1, y1, x2, y2 = head_region(boxes, w, h, margin_px=_REGION_MARGIN / max(scale, 1e-6))
        if (x2 - x1) * (y2 - y1) >= _WHOLE_FRAME_SHARE * w * h or not getattr(self.detector, "free_size", True):
            return self._faces(rgb, upscale=False, max_side=self.frame_px)
        # The part starts on the whole pass's grid (its coarsest stride, in frame pixels): the
        # detector's anchors and the resampling then fall where they fall for the whole frame.
        grid = max(1, round(ScrfdDetector._STRIDES[-1] / max(scale, 1e-6)))
        x1, y1 = x1 // grid * grid, y1 // grid * grid
        part = np.ascontiguousarray(rgb[y1:y2, x1:x2])
        return [_moved(f, x1, y1) for f in self._faces(part, upscale=False, scale=scale)]

    def _assign_in_frame(self, rgb: np.ndarray, boxes: np.ndarray) -> dict[int, FaceBox]:
        """Faces of a frame's people. Detectors score faces that fill much of their input low (a
        close-up's face is half the frame): where a large person is left without a face, that
        person is searched once more, cut out inside a black border, which makes the face
        smaller; at a small input, since only a big face is looked for there."""
        faces = self._frame_faces(rgb, boxes)
        taken = assign_faces(faces, boxes)
        h, w = rgb.shape[:2]
        large = [i for i, b in enumerate(boxes) if i not in taken and b[3] - b[1] >= _CLOSE_UP * h]
        if not large:
            return taken
        more = []
        for i in large:
            x1, y1 = max(0, int(boxes[i][0])), max(0, int(boxes[i][1]))
            x2, y2 = min(w, int(np.ceil(boxes[i][2]))), min(h, int(np.ceil(boxes[i][3])))
            if x2 - x1 < 2 or y2 - y1 < 2:
                continue
            pad = max(x2 - x1, y2 - y1) // 2
            padded = cv2.copyMakeBorder(np.ascontiguousarray(rgb[y1:y2, x1:x2]), pad, pad, pad, pad,
                                        cv2.BORDER_CONSTANT, value=0)
            found = self._faces(padded, upscale=False, max_side=_CLOSE_UP_SIDE)
            more += [_moved(f, x1 - pad, y1 - pad) for f in found]
        both = faces + more
        keep = (nms(np.array([f.box for f in both]), np.array([f.score for f in both]), _CLOSE_UP_NMS_IOU)
                if both else [])
        return assign_faces([both[i] for i in keep], boxes)

    def encode(self, crops: Sequence[Image.Image]) -> FaceVectors:
        """The face of each person crop (a query's people): the face in the upper part of the crop.
        A crop that is all face (a close-up) is padded first: detectors miss faces that fill
        the whole input."""
        return self.predict(crops)

    def _predict(self, inputs: Sequence[Image.Image]) -> FaceVectors:
        aligned, hits = [], []
        for i, crop in enumerate(inputs):
            rgb = np.ascontiguousarray(np.asarray(crop.convert("RGB")))
            h, w = rgb.shape[:2]
            for pad in (0, max(h, w) // 2):
                image = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0) if pad else rgb
                face = assign_faces(self._faces(image), np.array([[pad, pad, pad + w, pad + h]])).get(0)
                if face is not None and face.landmarks is not None:  # _faces keeps only faces with landmarks
                    aligned.append(align(image, face.landmarks))
                    hits.append(FaceHit(i, _box([v - pad for v in face.box])))
                    break
        return self.embedder.embed(aligned), hits

    def encode_frames(self, frames: Sequence[np.ndarray], people: Sequence[np.ndarray]) -> FaceVectors:
        """Faces found once per frame and given to that frame's person boxes (`people[i]`: n×4).
        `crop_index` numbers the people of all frames in order; boxes are in frame pixels."""
        self.load()
        aligned, hits = [], []
        offset = 0
        for rgb, boxes in zip(frames, people):
            if len(boxes):
                for p, face in sorted(self._assign_in_frame(rgb, boxes).items()):
                    if face.landmarks is not None:  # always: _faces keeps only faces with landmarks
                        aligned.append(align(rgb, face.landmarks))
                        hits.append(FaceHit(offset + p, face.box))
            offset += len(boxes)
        return self.embedder.embed(aligned), hits


def _moved(face: FaceBox, dx: float, dy: float) -> FaceBox:
    """The face found in a part of a frame, in the frame's pixels (the part starts at dx, dy)."""
    box = (face.box[0] + dx, face.box[1] + dy, face.box[2] + dx, face.box[3] + dy)
    landmarks = None if face.landmarks is None else face.landmarks + np.array([dx, dy], np.float32)
    return FaceBox(box, face.score, landmarks)
